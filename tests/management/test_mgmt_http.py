"""The h11 server on its own: keep-alive, request bodies, limits, errors, and the upgrade
hook a WebSocket front will use. Each test serves one connection over real loopback TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import trio

from gateway.server.http import MAX_HEAD, SECURITY_HEADERS, HTTPServer, Request, Response

DEADLINE = 10


async def echo(request: Request) -> Response:
    body = f"{request.method} {request.path} {request.query} {len(request.body)}".encode()
    return Response(200, body, "text/plain")


@asynccontextmanager
async def serving(server: HTTPServer) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def handler(stream: trio.SocketStream) -> None:
            await server.serve(stream, ("127.0.0.1", 0))

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        yield port
        nursery.cancel_scope.cancel()


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk


async def read_responses(stream: trio.SocketStream, n: int) -> list[tuple[int, bytes]]:
    """Read `n` whole responses with an h11 client state machine: (status, body) each."""
    client = _expecting_response(b"")
    out: list[tuple[int, bytes]] = []
    status, body = 0, b""
    while len(out) < n:
        event = client.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(65536)
            assert chunk, out
            client.receive_data(chunk)
        elif isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, body))
            if len(out) < n:
                client = _expecting_response(bytes(client.trailing_data[0]))
    return out


def _expecting_response(leftover: bytes) -> h11.Connection:
    """An h11 client that has "sent" a request (h11 reads a response only after one),
    fed the bytes already received past the previous response."""
    fresh = h11.Connection(h11.CLIENT)
    fresh.send(h11.Request(method="GET", target="/", headers=[("host", "t")]))
    fresh.send(h11.EndOfMessage())
    if leftover:  # (receive_data(b"") would mean the peer closed)
        fresh.receive_data(leftover)
    return fresh


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                  b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            responses = await read_responses(stream, 2)
            assert responses == [(200, b"GET /a {'x': '1'} 0"), (200, b"POST /b {} 3")]
            await stream.aclose()


async def test_connection_close_is_honoured() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 200 ")
            assert data.endswith(b"GET / {} 0")


async def test_body_over_the_limit_is_refused_with_413() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo, max_body=10)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n"
                                  + b"x" * 11)
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 413 ")


async def test_malformed_request_gets_400_and_close() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 400 ")


async def test_handler_exception_is_a_500_and_the_server_goes_on() -> None:
    async def broken(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("bug")
        return await echo(request)

    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(broken)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n"
                                  b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 500 ")
            assert b"HTTP/1.1 200 " in data and data.endswith(b"GET /ok {} 0")


async def test_head_has_no_body() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"HEAD /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 200 ")
            assert data.endswith(b"\r\n\r\n")


async def test_upgrade_hook_gets_the_request_the_stream_and_the_bytes_after_the_head() -> None:
    seen: list[tuple[str, str | None, bytes]] = []

    async def upgrade(request: Request, stream: trio.abc.Stream, trailing: bytes) -> None:
        seen.append((request.path, request.header("upgrade"), trailing))
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\nswitched:" + trailing)

    server = HTTPServer(echo)
    server.add_upgrade("/ws", upgrade)
    with trio.fail_after(DEADLINE):
        async with serving(server) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\n\r\nEARLY")
            data = await read_until_closed(stream)
            assert data == b"HTTP/1.1 101 Switching Protocols\r\n\r\nswitched:EARLY"
            assert seen == [("/ws", "websocket", b"EARLY")]
            head = Request("GET", "/ws", [("upgrade", "websocket")]).head_bytes()
            assert head == b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\n\r\n"


async def test_upgrade_on_a_path_without_a_hook_is_served_as_plain_http() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /other HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\n\r\n")
            assert await read_responses(stream, 1) == [(200, b"GET /other {} 0")]
            await stream.aclose()


async def test_connections_over_the_cap_get_503() -> None:
    with trio.fail_after(DEADLINE):
        server = HTTPServer(echo, max_connections=1)
        async with serving(server) as port:
            first = await trio.open_tcp_stream("127.0.0.1", port)
            await first.send_all(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert await read_responses(first, 1) == [(200, b"GET /1 {} 0")]
            second = await trio.open_tcp_stream("127.0.0.1", port)
            refused = await read_until_closed(second)
            assert refused.startswith(b"HTTP/1.1 503 ")
            assert b"too many HTTP connections" in refused
            await first.aclose()
            while server.open:  # the first one's handler notices the close
                await trio.sleep(0.01)
            third = await trio.open_tcp_stream("127.0.0.1", port)
            await third.send_all(b"GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert (await read_until_closed(third)).endswith(b"GET /3 {} 0")


# -- the head: its exact limit, its check before the body, the headers every answer has ----


def head_of(size: int, target: str = "/") -> bytes:
    """A GET whose head (request line, headers, blank line) is exactly `size` bytes."""
    start = f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ".encode()
    pad = size - len(start) - 4
    assert pad > 0
    return start + b"p" * pad + b"\r\n\r\n"


async def test_a_head_of_64_kib_is_served_and_one_byte_more_is_431() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            for size, status in ((MAX_HEAD, 200), (MAX_HEAD + 1, 431),
                                 (2 * MAX_HEAD, 431)):  # once let through: ~128 KiB
                assert len(head_of(size)) == size
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(head_of(size))
                data = await read_until_closed(stream)
                assert data.startswith(f"HTTP/1.1 {status} ".encode()), (size, data[:80])


async def test_a_refused_head_is_answered_without_reading_the_body_announced() -> None:
    """The head check refuses: the answer comes while the 16 MiB body announced is
    still unsent, no 100 Continue is offered, and the connection ends after it."""
    bodies: list[int] = []

    async def check(request: Request) -> Response | None:
        if request.header("authorization") is None:
            return Response(401, b"no")
        return None

    async def handle(request: Request) -> Response:
        bodies.append(len(request.body))
        return Response(200, b"yes")

    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(handle, check_head=check)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                                  b"Content-Length: 16777216\r\n\r\n")
            data = await read_until_closed(stream)  # ends: the server closed
            assert data.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in data
            assert data.endswith(b"no")
            # let through: 100 Continue, then the body is read and handled
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"POST /x HTTP/1.1\r\nHost: t\r\nAuthorization: y\r\n"
                                  b"Expect: 100-continue\r\nContent-Length: 3\r\n"
                                  b"Connection: close\r\n\r\n")
            first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"abc")
            data = await read_until_closed(stream)
            assert b"HTTP/1.1 200 " in first + data
            assert bodies == [3]


async def test_a_refused_head_without_a_body_keeps_the_connection() -> None:
    async def check(request: Request) -> Response | None:
        return Response(403, b"not here") if request.path == "/no" else None

    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo, check_head=check)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /no HTTP/1.1\r\nHost: t\r\n\r\n"
                                  b"GET /yes HTTP/1.1\r\nHost: t\r\n\r\n")
            answers = await read_responses(stream, 2)
            assert answers == [(403, b"not here"), (200, b"GET /yes {} 0")]


async def test_a_body_announced_over_the_limit_is_413_before_it_is_sent() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo, max_body=1024)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 413 ")


async def test_every_answer_carries_the_security_headers() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(HTTPServer(echo)) as port:
            for wire in (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                         head_of(MAX_HEAD + 1), b"NOT HTTP\r\n\r\n"):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(wire)
                head = (await read_until_closed(stream)).split(b"\r\n\r\n")[0].lower()
                for name, value in SECURITY_HEADERS:
                    assert f"{name}: {value}".lower().encode() in head, (name, head[:60])
