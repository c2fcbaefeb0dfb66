"""WAMP authentication against broker users: ticket (the password), WAMP-CRA, anonymous."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ab_client import JoinFailed, join, leave
from ws_harness import Gateway, in_asyncio, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    async with running_gateway(tmp_path) as gateway:
        gateway.server.auth.add_user("alice", password="s3cret", tags=["monitoring"])
        gateway.server.auth.add_vhost("realm1")
        gateway.server.auth.set_permissions("alice", "realm1", ".*", ".*", ".*")
        yield gateway


async def _try_join(gw: Gateway, **kwargs: Any) -> Any:
    async def main() -> Any:
        try:
            s = await join(gw.ws_url, **kwargs)
        except JoinFailed as exc:
            return exc.reason
        details = (s.details.authid, s.details.authrole, s.details.authmethod,
                   s.details.realm)
        await leave(s)
        return details

    return await in_asyncio(main)


async def test_ticket_login_with_the_broker_password(gw: Gateway) -> None:
    ok = await _try_join(gw, realm="realm1", authmethods=["ticket"], authid="alice",
                         secret="s3cret")
    assert ok == ("alice", "user", "ticket", "realm1")


async def test_ticket_with_a_wrong_password_is_refused(gw: Gateway) -> None:
    assert await _try_join(gw, realm="realm1", authmethods=["ticket"], authid="alice",
                           secret="wrong") == "wamp.error.authentication_failed"
    assert await _try_join(gw, realm="realm1", authmethods=["ticket"], authid="nobody",
                           secret="x") == "wamp.error.authentication_failed"


async def test_user_without_permission_on_the_realm_is_not_authorized(gw: Gateway) -> None:
    assert await _try_join(gw, realm="/", authmethods=["ticket"], authid="alice",
                           secret="s3cret") == "wamp.error.not_authorized"


async def test_unknown_realm_is_aborted(gw: Gateway) -> None:
    assert await _try_join(gw, realm="nope") == "wamp.error.no_such_realm"


@pytest.mark.parametrize("salted", [False, True])
async def test_wampcra_with_the_users_secret(gw: Gateway, salted: bool) -> None:
    secrets = {"alice": ("s3cret", "salt123" if salted else None, 100, 32)}
    gw.server.auth.wampcra_secret = secrets.get  # type: ignore[attr-defined]
    ok = await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                         secret="s3cret")
    assert ok == ("alice", "user", "wampcra", "realm1")
    bad = await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                          secret="nope")
    assert bad == "wamp.error.authentication_failed"


async def test_wampcra_is_not_offered_without_a_secret_source(gw: Gateway) -> None:
    # a password hash cannot check a WAMP-CRA signature: no secrets, no WAMP-CRA
    assert await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                           secret="s3cret") == "wamp.error.no_matching_auth_method"
