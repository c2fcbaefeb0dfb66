"""Anonymous WAMP (`[wamp] allow_anonymous`, `anonymous_user`) with autobahn-python: refused
by default with ABORT, as a secure MQTT/STOMP setup refuses anonymous clients; when allowed,
the session is the anonymous user's, with that user's vhost permissions and the loopback
rule; and `gateway serve` reads the keys from its config file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
from ab_client import JoinFailed, join, leave
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from ws_harness import Gateway, in_asyncio, running_gateway

REFUSED = ("wamp.error.not_authorized", "wamp.error.authentication_failed")


async def _join_anonymously(gw: Gateway, realm: str = "/") -> Any:
    async def main() -> Any:
        try:
            s = await join(gw.ws_url, realm=realm, anonymous=True)
        except JoinFailed as exc:
            return exc.reason
        details = (s.details.authid, s.details.authrole, s.details.authmethod)
        await leave(s)
        return details

    return await in_asyncio(main)


async def test_anonymous_hello_is_aborted_by_default(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        assert await _join_anonymously(gw) == "wamp.error.not_authorized"
        # and credentials still work on the same broker
        async def main() -> str:
            s = await join(gw.ws_url, authmethods=["ticket"], authid="guest", secret="guest")
            authid = str(s.details.authid)
            await leave(s)
            return authid

        assert await in_asyncio(main) == "guest"


async def test_allowed_anonymous_joins_as_the_anonymous_user(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, wamp_anonymous=True) as gw:
        assert await _join_anonymously(gw) == ("guest", "anonymous", "anonymous")

        async def main() -> list[Any]:
            s = await join(gw.ws_url, anonymous=True)
            got: list[Any] = []
            await s.subscribe(got.append, "com.anon.t")
            await s.publish("com.anon.t", "hi", options=PublishOptions(acknowledge=True,
                                                                      exclude_me=False))
            for _ in range(500):
                if got:
                    break
                await asyncio.sleep(0.01)
            await leave(s)
            return got

        assert await in_asyncio(main) == ["hi"]


async def test_anonymous_user_keeps_its_own_permissions(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, wamp_anonymous=True, anonymous_user="visitor") as gw:
        auth = gw.server.auth
        auth.add_user("visitor", password="v1sitor")
        auth.add_vhost("public")
        # read-only on "public"; nothing at all on "/"
        auth.set_permissions("visitor", "public", "^$", "^$", ".*")
        assert await _join_anonymously(gw, "/") in REFUSED
        assert await _join_anonymously(gw, "public") == ("visitor", "anonymous", "anonymous")

        async def main() -> str:
            s = await join(gw.ws_url, realm="public", anonymous=True)
            try:
                await s.register(lambda: None, "com.anon.proc")
            except ApplicationError as exc:
                return str(exc.error)
            finally:
                await leave(s)
            return "registered"

        assert await in_asyncio(main) == "wamp.error.not_authorized"


async def test_anonymous_user_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, wamp_anonymous=True, anonymous_user="ghost") as gw:
        assert await _join_anonymously(gw) in REFUSED


def _hello(url: str, origin: str) -> list[Any]:
    """A raw anonymous HELLO (the `websockets` library, as the issue's page sent it)."""
    async def session() -> list[Any]:
        async with websockets.connect(url, subprotocols=["wamp.2.json"],  # type: ignore[list-item]
                                      origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps([1, "/", {"roles": {"subscriber": {}, "callee": {}}}]))
            return list(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    return asyncio.run(asyncio.wait_for(session(), 20))


def test_gateway_serve_refuses_anonymous_wamp_by_default(broker: Any) -> None:
    """Even the broker's own page (same origin) gets no administrator for free."""
    port = broker.ports["http"]
    code, _details, reason = _hello(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
    assert (code, reason) == (3, "wamp.error.not_authorized")


def test_gateway_serve_reads_the_wamp_section(configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker('[wamp]\nallow_anonymous = true\nanonymous_user = "guest"\n')
    port = broker.ports["http"]
    code, _sid, details = _hello(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
    assert code == 2
    assert (details["authid"], details["authrole"], details["authmethod"]) == (
        "guest", "anonymous", "anonymous")
