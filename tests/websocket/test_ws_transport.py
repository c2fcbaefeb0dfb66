"""The WebSocket layer with a wsproto client over a real socket: handshake refusals (HTTP
400 with a reason), subprotocol choice, bytes past the request head, ping/pong,
fragmented messages, the size limit, bad UTF-8, permessage-deflate and close codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from ws_harness import Gateway, running_gateway
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from gateway.server.websocket import WebSocketOptions, choose_subprotocol

# These tests are about WebSocket framing around one WAMP login: an anonymous HELLO, answered
# by WELCOME at once, so their brokers allow anonymous WAMP ([wamp] allow_anonymous = true).
HELLO = json.dumps([1, "/", {"roles": {"subscriber": {}}}])
DEADLINE = 10


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path, WebSocketOptions(max_message_size=4096),
                               wamp_anonymous=True) as g:
        yield g


class Client:
    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.pending: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise EOFError
        return self.pending.pop(0)

    async def message(self) -> Any:
        parts: list[Any] = []
        while True:
            event = await self.next()
            if isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    joined = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
                    return joined
            elif isinstance(event, CloseConnection):
                return event


async def connect(gw: Gateway, subprotocols: list[str], *, target: str = "/ws",
                  extensions: list[Any] | None = None, extra: bytes = b"") -> Any:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["ws"])
    ws = WSConnection(ConnectionType.CLIENT)
    head = ws.send(Request(host="127.0.0.1", target=target, subprotocols=subprotocols,
                           extensions=extensions or []))
    await stream.send_all(head + extra)
    client = Client(stream, ws)
    event = await client.next()
    if isinstance(event, RejectConnection):
        body = b""
        while True:
            more = await client.next()
            assert isinstance(more, RejectData)
            body += more.data
            if more.body_finished:
                return event.status_code, body.decode()
    assert isinstance(event, AcceptConnection)
    client.accepted = event  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize(("offered", "chosen"), [
    (["wamp.2.cbor.batched", "wamp.2.cbor", "wamp.2.msgpack.batched", "wamp.2.msgpack",
      "wamp.2.json.batched", "wamp.2.json"], "wamp.2.msgpack"),
    (["wamp.2.json", "wamp.2.msgpack"], "wamp.2.json"),
    (["v10.stomp", "v11.stomp", "v12.stomp"], "v10.stomp"),
    (["mqttv3.1", "mqtt"], "mqtt"),
    (["wamp.2.cbor"], None),
])
def test_subprotocol_choice(offered: list[str], chosen: str | None) -> None:
    supported = {"wamp.2.json", "wamp.2.msgpack", "mqtt", "v10.stomp", "v11.stomp",
                 "v12.stomp"}
    assert choose_subprotocol(offered, supported) == chosen


async def test_no_supported_subprotocol_is_a_400_with_the_reason(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        status, reason = await connect(gw, ["wamp.2.cbor", "graphql-ws"])
    assert status == 400
    assert "no supported subprotocol" in reason and "wamp.2.cbor" in reason


async def test_wrong_path_is_a_400(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        status, reason = await connect(gw, ["wamp.2.json"], target="/other")
    assert (status, reason) == (400, "no WebSocket endpoint at /other")


async def test_malformed_handshake_is_a_400_not_a_hang(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["ws"])
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.endswith(b"\r\n\r\nMissing header, 'Sec-WebSocket-Version'")


async def test_hello_sent_with_the_handshake_and_in_fragments(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"])
        assert client.accepted.subprotocol == "wamp.2.json"
        third = len(HELLO) // 3
        await client.send(TextMessage(data=HELLO[:third], message_finished=False))
        await client.send(TextMessage(data=HELLO[third:2 * third], message_finished=False))
        await client.send(TextMessage(data=HELLO[2 * third:], message_finished=True))
        welcome = json.loads(await client.message())
    assert welcome[0] == 2


async def test_ping_is_answered_with_its_payload(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"])
        await client.send(Ping(payload=b"abc"))
        event = await client.next()
    assert isinstance(event, Pong) and event.payload == b"abc"


async def test_message_over_the_limit_closes_1009(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"])
        await client.send(TextMessage(data="x" * 3000, message_finished=False))
        await client.send(TextMessage(data="y" * 3000, message_finished=True))
        close = await client.message()
    assert isinstance(close, CloseConnection) and close.code == 1009


async def test_invalid_utf8_text_closes_1007(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"])
        # a text frame (opcode 1) carrying invalid UTF-8, masked with a zero key
        await client.stream.send_all(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
        close = await client.message()
    assert isinstance(close, CloseConnection) and close.code == 1007


async def test_permessage_deflate_when_offered(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"], extensions=[PerMessageDeflate()])
        assert [e.name for e in client.accepted.extensions] == ["permessage-deflate"]
        await client.send(TextMessage(data=HELLO))
        welcome = json.loads(await client.message())
    assert welcome[0] == 2


async def test_wamp_abort_then_close_1000(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.msgpack"])
        await client.send(BytesMessage(data=b"\x91\x01"))  # msgpack [1]: a bad HELLO
        abort = await client.message()
        close = await client.message()
    import msgpack

    assert msgpack.unpackb(abort)[:1] == [3]
    assert msgpack.unpackb(abort)[2] == "wamp.error.protocol_violation"
    assert isinstance(close, CloseConnection) and close.code == 1000


async def test_client_close_is_answered(gw: Gateway) -> None:
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"])
        await client.send(CloseConnection(code=1000, reason="bye"))
        close = await client.message()
    assert isinstance(close, CloseConnection) and close.code == 1000


async def test_handshake_and_frames_arriving_one_byte_at_a_time(gw: Gateway) -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    wire = ws.send(Request(host="127.0.0.1", target="/ws", subprotocols=["wamp.2.json"]))
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["ws"])
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        for i in range(len(wire)):
            await stream.send_all(wire[i:i + 1])
        client = Client(stream, ws)
        assert isinstance(await client.next(), AcceptConnection)
        frame = ws.send(TextMessage(data=HELLO))
        for i in range(len(frame)):
            await stream.send_all(frame[i:i + 1])
            await trio.sleep(0)
        welcome = json.loads(await client.message())
    assert welcome[0] == 2


async def test_frame_sent_together_with_the_handshake_is_not_lost(gw: Gateway) -> None:
    payload = HELLO.encode()
    assert len(payload) < 126
    frame = bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload  # zero mask key
    with trio.fail_after(DEADLINE):
        client = await connect(gw, ["wamp.2.json"], extra=frame)
        welcome = json.loads(await client.message())
    assert welcome[0] == 2


async def test_silent_client_is_pinged_then_dropped(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, WebSocketOptions(ping_interval=0.6),
                               wamp_anonymous=True) as gw:
        with trio.fail_after(DEADLINE):
            client = await connect(gw, ["wamp.2.json"])
            await client.send(TextMessage(data=HELLO))
            assert json.loads(await client.message())[0] == 2
            ping = await client.next()  # not answered: this client stays silent
            close = await client.message()
            assert isinstance(ping, Ping)
            assert isinstance(close, CloseConnection) and close.code == 1001
            await client.send(close.response())
            while gw.server.sessions:  # the session goes with its transport
                await trio.sleep(0.01)
        assert not gw.server.sessions


async def test_connection_limit_refuses_with_a_reason(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, max_connections=1, wamp_anonymous=True) as gw:
        with trio.fail_after(DEADLINE):
            first = await connect(gw, ["wamp.2.json"])
            await first.send(TextMessage(data=HELLO))
            assert json.loads(await first.message())[0] == 2
            status, reason = await connect(gw, ["wamp.2.json"])
    assert (status, reason) == (503, "connection limit reached (max_connections 1)")
