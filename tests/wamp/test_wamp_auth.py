"""WAMP authentication against broker users: ticket (the password), WAMP-CRA, anonymous."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ab_client import JoinFailed, join, leave
from ws_harness import Gateway, in_asyncio, running_gateway

from gateway.auth import hash_password_sha256


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


async def test_wampcra_with_the_broker_password(gw: Gateway) -> None:
    # autobahn derives the key from the challenge's salt, iterations and keylen
    ok = await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                         secret="s3cret")
    assert ok == ("alice", "user", "wampcra", "realm1")
    bad = await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                          secret="nope")
    assert bad == "wamp.error.authentication_failed"
    unknown = await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="ghost",
                              secret="s3cret")
    assert unknown == "wamp.error.authentication_failed"


async def test_wampcra_key_follows_a_password_change(gw: Gateway) -> None:
    gw.server.auth.change_password("alice", "n3w")
    assert await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                           secret="s3cret") == "wamp.error.authentication_failed"
    assert await _try_join(gw, realm="realm1", authmethods=["wampcra"], authid="alice",
                           secret="n3w") == ("alice", "user", "wampcra", "realm1")


async def test_wampcra_refused_clearly_for_a_user_with_only_a_hash(gw: Gateway) -> None:
    # an imported RabbitMQ hash (of "s3cret") cannot check a WAMP-CRA signature
    auth = gw.server.auth
    auth.add_user("bob", password_hash=hash_password_sha256("s3cret"))
    auth.set_permissions("bob", "realm1", ".*", ".*", ".*")

    async def main() -> tuple[str, str | None]:
        try:
            await join(gw.ws_url, realm="realm1", authmethods=["wampcra"], authid="bob",
                       secret="s3cret")
        except JoinFailed as exc:
            return exc.reason, exc.message
        raise AssertionError("joined with WAMP-CRA without a key")

    reason, message = await in_asyncio(main)
    assert reason == "wamp.error.authentication_failed"
    assert message is not None and "no WAMP-CRA key" in message and "ticket" in message
    # ticket still works for that user
    assert await _try_join(gw, realm="realm1", authmethods=["ticket"], authid="bob",
                           secret="s3cret") == ("bob", "user", "ticket", "realm1")
