"""autobahn-python (asyncio) clients joined to the gateway, for tests run in a thread."""

from __future__ import annotations

import asyncio
from typing import Any

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer}


class JoinFailed(Exception):
    def __init__(self, reason: str, message: str | None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


async def join(url: str, realm: str = "/", *, serializer: str | None = "json",
               authmethods: list[str] | None = None, authid: str | None = None,
               secret: str | None = None, anonymous: bool = False,
               headers: dict[str, str] | None = None,
               challenges: list[dict[str, Any]] | None = None) -> ApplicationSession:
    """Open a WebSocket to `url`, join `realm`, return the joined session.
    `serializer=None` offers autobahn's full default list (cbor, msgpack, json, batched).
    Without `authmethods` the session logs in as guest with ticket (the broker refuses
    anonymous WAMP unless `[wamp] allow_anonymous`); `anonymous=True` sends a HELLO with no
    credentials. `headers`: extra upgrade request headers (an `Origin`); `challenges`
    collects the extra of every CHALLENGE received."""
    if authmethods is None and not anonymous:
        authmethods, authid, secret = ["ticket"], authid or "guest", secret or "guest"
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[ApplicationSession] = loop.create_future()

    class Session(ApplicationSession):  # type: ignore[misc]
        def onConnect(self) -> None:
            self.join(realm, authmethods=authmethods, authid=authid)

        def onChallenge(self, challenge: Any) -> str:
            assert secret is not None
            if challenges is not None:
                challenges.append(dict(challenge.extra))
            if challenge.method == "ticket":
                return secret
            if challenge.method == "wampcra":
                key = secret
                if "salt" in challenge.extra:
                    key = auth.derive_key(secret, challenge.extra["salt"],
                                          challenge.extra["iterations"],
                                          challenge.extra["keylen"]).decode()
                return auth.compute_wcs(key, challenge.extra["challenge"]).decode()
            raise ValueError(challenge.method)

        def onJoin(self, details: Any) -> None:
            self.details = details
            if not joined.done():
                joined.set_result(self)

        def onLeave(self, details: Any) -> None:
            if not joined.done():
                joined.set_exception(JoinFailed(details.reason, details.message))
            self.disconnect()

        def onDisconnect(self) -> None:
            if not joined.done():
                joined.set_exception(JoinFailed("disconnected", None))

    serializers = None if serializer is None else [SERIALIZERS[serializer]()]
    factory = WampWebSocketClientFactory(lambda: Session(ComponentConfig(realm)), url=url,
                                         serializers=serializers, headers=headers)
    port = int(url.split(":")[2].split("/")[0])
    await loop.create_connection(factory, "127.0.0.1", port)
    return await joined


async def leave(session: ApplicationSession) -> None:
    done = asyncio.get_running_loop().create_future()
    original = session.onDisconnect

    def on_disconnect() -> None:
        original()
        if not done.done():
            done.set_result(None)

    session.onDisconnect = on_disconnect
    session.leave()
    await asyncio.wait_for(done, 5)
