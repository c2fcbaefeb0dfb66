"""STOMP over WebSocket with the `websockets` library sending real STOMP frames (as
@stomp/stompjs does: `v12.stomp` and friends, text messages), meeting pika on the core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pika
import pytest
import trio
import websockets
from ws_harness import Gateway, in_asyncio, in_thread, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path) as g:
        yield g


def frame(command: str, headers: dict[str, str], body: str = "") -> str:
    lines = [command, *(f"{k}:{v}" for k, v in headers.items()), "", body]
    return "\n".join(lines) + "\x00"


def parse(text: str) -> tuple[str, dict[str, str], str]:
    head, _, body = text.partition("\n\n")
    command, *lines = head.lstrip("\n").split("\n")
    headers = dict(line.split(":", 1) for line in lines)
    return command, headers, body.rstrip("\x00")


@pytest.mark.parametrize("version", ["v12.stomp", "v11.stomp", "v10.stomp"])
async def test_stomp_over_websocket_connect_subscribe_send(gw: Gateway, version: str
                                                           ) -> None:
    async def main() -> list[Any]:
        async with websockets.connect(gw.ws_url, subprotocols=[version]) as ws:
            assert ws.subprotocol == version
            accept = version[1] + "." + version[2]
            await ws.send(frame("CONNECT", {"accept-version": accept, "host": "/",
                                            "login": "guest", "passcode": "guest"}))
            connected = parse(await ws.recv())
            await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/queue/wsq",
                                              "receipt": "r1"}))
            receipt = parse(await ws.recv())
            await ws.send(frame("SEND", {"destination": "/queue/wsq",
                                         "content-type": "text/plain"}, "hello"))
            message = parse(await ws.recv())
            await ws.send(frame("DISCONNECT", {"receipt": "bye"}))
            last = parse(await ws.recv())
            return [connected[0], connected[1]["version"], receipt, message[0],
                    message[1]["destination"], message[2], last[1]]

    out = await in_asyncio(main)
    assert out[:2] == ["CONNECTED", version[1] + "." + version[2]]
    assert out[2] == ("RECEIPT", {"receipt-id": "r1"}, "")
    assert out[3:6] == ["MESSAGE", "/queue/wsq", "hello"]
    assert out[6] == {"receipt-id": "bye"}


async def test_stomp_over_websocket_meets_pika(gw: Gateway) -> None:
    def amqp() -> bytes:
        conn = pika.BlockingConnection(pika.URLParameters(gw.amqp_url))
        ch = conn.channel()
        ch.queue_declare("from-ws", durable=True)  # as STOMP declares /queue/ ones
        got = b""
        for _ in range(500):
            method, _, body = ch.basic_get("from-ws", auto_ack=True)
            if method is not None:
                got = body
                break
            conn.sleep(0.01)
        ch.basic_publish("", "to-ws", b"from pika")
        conn.close()
        return got

    async def stomp_side() -> str:
        async with websockets.connect(gw.ws_url, subprotocols=["v12.stomp"]) as ws:
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "/",
                                            "login": "guest", "passcode": "guest"}))
            await ws.recv()
            await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/queue/to-ws",
                                              "receipt": "r"}))
            await ws.recv()
            await ws.send(frame("SEND", {"destination": "/queue/from-ws"}, "from stomp"))
            return parse(await ws.recv())[2]

    results: dict[str, Any] = {}

    async def run(name: str, fn: Any, *args: Any) -> None:
        results[name] = await fn(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "stomp", in_asyncio, stomp_side)
        nursery.start_soon(run, "amqp", in_thread, amqp)
    assert results == {"stomp": "from pika", "amqp": b"from stomp"}


async def test_web_stomp_endpoint_takes_clients_without_a_subprotocol(tmp_path: Path) -> None:
    from gateway.server.websocket import WEB_STOMP

    async with running_gateway(tmp_path, WEB_STOMP) as gw:
        async def main() -> list[Any]:
            async with websockets.connect(gw.ws_url) as ws:  # offers no subprotocol
                assert ws.subprotocol is None
                await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "/",
                                                "login": "guest", "passcode": "guest"}))
                connected = parse(await ws.recv())
            refused = None
            try:
                async with websockets.connect(gw.ws_url, subprotocols=["wamp.2.json"]):
                    pass
            except websockets.InvalidStatus as exc:
                refused = exc.response.status_code
            return [connected[0], connected[1]["version"], refused]

        assert await in_asyncio(main) == ["CONNECTED", "1.2", 400]
