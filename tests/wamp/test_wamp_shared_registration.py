"""Joining a shared registration (`invoke: roundrobin`) takes the same permission check as
creating one: REGISTER declares the procedure's queue (configure) and consumes it (read), so
a user without either is refused with `wamp.error.not_authorized`, whether it comes first
or joins, and gets no calls. autobahn-python callees and caller against broker users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ab_client import join, leave
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions
from ws_harness import Gateway, in_asyncio, running_gateway

REALM = "shared"
PROC = "com.shared.work"
ROUNDROBIN = RegisterOptions(invoke="roundrobin")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path) as gateway:
        auth = gateway.server.auth
        auth.add_vhost(REALM)
        for name, configure, read in (
                ("alice", ".*", ".*"),                       # owns the procedure
                ("bob", "^$", ".*"),                         # may read, not configure
                ("carol", ".*", "^$"),                       # may configure, not read
                ("dave", r"^com\.shared\.", r"^com\.shared\.")):  # both, for com.shared.*
            auth.add_user(name, password=f"{name}-pw")
            auth.set_permissions(name, REALM, configure, ".*", read)
        yield gateway


async def _session(gw: Gateway, user: str) -> Any:
    return await join(gw.ws_url, realm=REALM, authmethods=["ticket"], authid=user,
                      secret=f"{user}-pw")


async def _register(session: Any, who: str, served: list[str], procedure: str = PROC) -> str:
    try:
        await session.register(lambda: served.append(who) or who, procedure,
                               options=ROUNDROBIN)
    except ApplicationError as exc:
        return str(exc.error)
    return "registered"


async def test_joining_a_shared_registration_needs_configure_and_read(gw: Gateway) -> None:
    async def main() -> tuple[list[str], list[str], list[Any]]:
        served: list[str] = []
        alice, bob, carol, dave = [await _session(gw, u)
                                   for u in ("alice", "bob", "carol", "dave")]
        outcomes = [await _register(alice, "alice", served),
                    await _register(bob, "bob", served),      # joins alice's: refused
                    await _register(carol, "carol", served),  # likewise
                    await _register(dave, "dave", served)]    # allowed: joins
        answers = [await alice.call(PROC) for _ in range(6)]
        for s in (alice, bob, carol, dave):
            await leave(s)
        return outcomes, served, answers

    outcomes, served, answers = await in_asyncio(main)
    assert outcomes == ["registered", "wamp.error.not_authorized",
                        "wamp.error.not_authorized", "registered"]
    assert sorted(set(served)) == ["alice", "dave"] and answers.count("alice") == 3
    assert "bob" not in answers and "carol" not in answers


async def test_first_registrant_gets_the_same_check(gw: Gateway) -> None:
    async def main() -> list[str]:
        served: list[str] = []
        out = []
        for user in ("bob", "carol"):
            s = await _session(gw, user)
            out.append(await _register(s, user, served, f"com.shared.{user}"))
            await leave(s)
        dave = await _session(gw, "dave")
        out.append(await _register(dave, "dave", served, "com.other.x"))  # outside its pattern
        await leave(dave)
        return out

    assert await in_asyncio(main) == ["wamp.error.not_authorized"] * 3
