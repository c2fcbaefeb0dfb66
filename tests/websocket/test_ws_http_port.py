"""The WebSocket front on the broker's shared HTTP port (`gateway serve`, `/ws`)."""

from __future__ import annotations

import asyncio
from typing import Any

import trio
from ab_client import join, leave
from autobahn.wamp.types import PublishOptions
from ws_harness import in_asyncio


async def test_wamp_on_the_http_port_of_gateway_serve(broker: Any) -> None:
    url = f"ws://127.0.0.1:{broker.ports['http']}/ws"

    async def main() -> tuple[str, Any]:
        s = await join(url, serializer=None)
        got: list[Any] = []
        await s.subscribe(lambda x: got.append(x), "com.http.port")
        await s.publish("com.http.port", "x", options=PublishOptions(acknowledge=True,
                                                                     exclude_me=False))
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
        proto = s._transport.websocket_protocol_in_use
        await leave(s)
        return proto, got

    assert await in_asyncio(main) == ("wamp.2.msgpack", ["x"])


async def test_bad_upgrade_on_the_http_port_is_a_400(broker: Any) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.ports["http"])
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              b"Sec-WebSocket-Protocol: wamp.2.cbor\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"no supported subprotocol offered (offered: wamp.2.cbor;" in data
