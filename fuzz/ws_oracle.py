"""Fuzz oracle for the WebSocket handshake path: any bytes as the start of a connection to
the HTTP port (h11, then the `/ws` upgrade to wsproto and a session) or to a WebSocket-only
port (`WebSocketFront.serve`, as Web-STOMP/Web-MQTT listeners call it with the head read).

Each input runs the real server code over a trio memory stream pair (in-memory transport,
no socket) under trio's `MockClock`, so idle timeouts pass at once: the client sends the
bytes and closes its side, and the server must finish by itself. The property:

- nothing but a clean end leaves the server code (an exception here would reach the
  listener's nursery);
- what the server wrote starts with one well-formed HTTP response (h11 reads it):
  `101 Switching Protocols` with the `Sec-WebSocket-Accept` the key calls for, or a 4xx /
  503 refusal; never a 500, never garbage; an empty answer only when the client sent no
  complete request head;
- it all ends within a bounded virtual time (a hang would show as `TooSlowError`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

import h11
import trio
import trio.testing
from oracles import check_no_errors_logged, forget_logged_errors

from gateway.config import load_config, with_overrides
from gateway.server.app import Server
from gateway.server.http import MAX_HEAD, HTTPServer, Request, Response
from gateway.server.websocket import SUBPROTOCOLS, WebSocketFront, WebSocketOptions

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PEER = ("127.0.0.1", 40000)
DEADLINE = 600.0  # virtual seconds: well past every idle timeout on the path

_server: Server | None = None
_tmp: tempfile.TemporaryDirectory[str] | None = None


def make_server(data_dir: Path) -> Server:
    """A real `Server` (core, auth, store) with its state recovered as `serve` does,
    without listeners: the fuzzed code is driven directly."""
    config = with_overrides(load_config(), host="127.0.0.1", data_dir=data_dir)
    server = Server(config)
    # the exchanges run on trio's MockClock, which jumps past every deadline while a worker
    # thread computes a login's scrypt: here the (same) check is made in the event loop
    server.auth.inline_checks = True
    server.recover()
    return server


def shared_server() -> Server:
    global _server, _tmp
    if _server is None:
        _tmp = tempfile.TemporaryDirectory(prefix="gateway-fuzz-")
        _server = make_server(Path(_tmp.name))
    return _server


async def _not_found(request: Request) -> Response:
    return Response(404, b'{"error":"not_found"}')


async def _exchange(server: Server, data: bytes, via_http: bool, options: WebSocketOptions
                    ) -> bytes:
    ours, theirs = trio.testing.memory_stream_pair()
    front = WebSocketFront(server, options)
    received = bytearray()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            if via_http:
                http = HTTPServer(_not_found, idle_timeout=30)
                http.add_upgrade(options.path, front.handle)
                nursery.start_soon(http.serve, theirs, PEER)
            else:
                nursery.start_soon(_serve_head, front, theirs)
            try:
                await ours.send_all(data)
                await ours.send_stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server closed before reading it all
            while True:
                try:
                    chunk = await ours.receive_some(65536)
                except trio.ClosedResourceError:
                    break
                if not chunk:
                    break
                received += chunk
    return bytes(received)


async def _serve_head(front: WebSocketFront, stream: Any) -> None:
    """`serve_stream` without the socket (whose peer address it asks for): read the head,
    then `serve` with it and what came along."""
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) <= MAX_HEAD:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        await front.serve(stream, data, PEER)
    finally:
        await stream.aclose()


def _request_keys(data: bytes) -> list[bytes]:
    head = re.split(rb"\n\r?\n", data, maxsplit=1)[0]
    return [line.split(b":", 1)[1].strip(b" \t\r") for line in head.split(b"\n")[1:]
            if line.lower().startswith(b"sec-websocket-key:")]


def check_response(data: bytes, received: bytes, via_http: bool) -> None:
    if not received:
        # only a client that sent nothing (HTTP port) or no complete head (WebSocket port)
        # gets no answer
        assert not data if via_http else b"\r\n\r\n" not in data, "no answer"
        return
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[
        ("host", "x"), ("connection", "upgrade"), ("upgrade", "websocket")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse | h11.Response), event
    status = event.status_code
    assert status == 101 or 400 <= status < 500 or status == 503, status
    if status == 101:
        headers = dict(event.headers)
        # wsproto takes the last of repeated keys (RFC 6455 11.3.1 allows one)
        assert headers[b"sec-websocket-accept"] in [
            base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            for key in _request_keys(data)]
        assert headers.get(b"sec-websocket-protocol", SUBPROTOCOLS[0].encode()).decode() \
            in SUBPROTOCOLS


OPTIONS = (WebSocketOptions(max_message_size=4096, ping_interval=5),
           WebSocketOptions(max_message_size=4096, ping_interval=5,
                            subprotocols=("v12.stomp", "v11.stomp", "v10.stomp"),
                            default_subprotocol="v12.stomp"))


def run_websocket(data: bytes, *, via_http: bool, web_stomp: bool = False,
                  server: Server | None = None) -> bytes:
    forget_logged_errors()
    server = server or shared_server()
    options = OPTIONS[web_stomp]
    received = trio.run(_exchange, server, data, via_http, options,
                        clock=trio.testing.MockClock(autojump_threshold=0))
    check_response(data, received, via_http)
    check_no_errors_logged()
    assert not server.sessions, "a session outlived its connection"
    return received


def handshake(data: bytes, *, via_http: bool, web_stomp: bool = False) -> bytes:
    """The same path without trio (for atheris' speed): h11 reads the request as
    `HTTPServer` does and, for an upgrade to the endpoint's path, `WebSocketFront.handshake`
    answers it from the re-serialised head; any frames after the head go to wsproto.
    Returns the answer (empty where the server would send none from this code)."""
    forget_logged_errors()
    options = OPTIONS[web_stomp]
    front = WebSocketFront(shared_server(), options)
    if via_http:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(data)
        conn.receive_data(b"")
        try:
            event = conn.next_event()
            if not isinstance(event, h11.Request):
                return b""
            request = Request.from_h11(event, PEER)
            while not isinstance(event, h11.EndOfMessage) and event is not h11.PAUSED:
                event = conn.next_event()
                if not isinstance(event, h11.Data | h11.EndOfMessage) \
                        and event is not h11.PAUSED:
                    return b""
        except h11.RemoteProtocolError:
            return b""  # HTTPServer answers 400 (the trio path checks that answer)
        path = request.path
        if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL or path != options.path:
            return b""
        data = request.head_bytes() + bytes(conn.trailing_data[0])
    elif b"\r\n\r\n" not in data:
        return b""
    ws, wire, chosen, rest = front.handshake(data)
    check_response(data, wire, via_http=False)
    if chosen is not None and rest:
        ws.receive_data(rest)
        for _ in ws.events():
            pass
    check_no_errors_logged()
    return wire


def check_websocket(data: bytes) -> None:
    """Atheris entry: bit 0 of the first byte picks the HTTP port or a WebSocket-only port,
    bit 1 the Web-STOMP endpoint options; the rest is what the client sends."""
    if not data:
        return
    handshake(data[1:], via_http=not data[0] & 1, web_stomp=bool(data[0] & 2))


def upgrade_request(subprotocols: tuple[str, ...] = ("wamp.2.json",), *, target: str = "/ws",
                    deflate: bool = False, key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
             "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN set, masked with a zero key, payload under 126 bytes)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


def seeds() -> list[bytes]:
    hello = b'[1,"/",{"roles":{"subscriber":{}}}]'
    out = []
    for mode in (0, 1, 2, 3):
        out += [
            bytes([mode]) + upgrade_request(),
            bytes([mode]) + upgrade_request(("wamp.2.msgpack", "mqtt"), deflate=True),
            bytes([mode]) + upgrade_request(("v12.stomp",)) + masked_frame(
                1, b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\x00"),
            bytes([mode]) + upgrade_request(("wamp.2.json",)) + masked_frame(1, hello)
            + masked_frame(9, b"ping") + masked_frame(8, b"\x03\xe8"),
            bytes([mode]) + upgrade_request(("mqtt",)) + masked_frame(
                2, b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04fuzz"),
            bytes([mode]) + upgrade_request((), target="/other?x=1"),
            bytes([mode]) + b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        ]
    return out
