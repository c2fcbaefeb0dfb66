"""HTTP/1.1 on trio with h11: the transport under the management API, the web UI, /metrics,
and (later) WebSocket upgrades on `/ws`.

Theory of operation
-------------------
One `HTTPServer.serve(stream, peer)` call per TCP connection. It reads one request at a
time, in two steps. With the head read, the application's `check_head` coroutine decides
what can be decided from the method, target and headers alone (the Host, the Origin, the
credentials, whether the user may call that path at all): it either answers at once, and
the body is never read (the connection is closed after that answer when a body was
announced, since its bytes are still on the way), or lets the request through, and may note
on `Request.auth` what it found out (the user), for the handler. Only then is the body read
(up to `max_body` bytes; a `100 Continue` is sent only at this point) and the complete
`Request` handed to the application's `handle` coroutine, whose `Response` is written; with
keep-alive it loops, otherwise it closes. So a client without credentials costs a head's
worth of memory, not a body's. The application knows nothing of h11 or sockets.

An upgrade request (`Connection: upgrade`) whose path has a registered `UpgradeHandler` is
not answered here: the handler gets the parsed request, the stream and the bytes already
read past the request head, and owns the connection from then on (it sends the 101 itself,
so a WebSocket library can do its own handshake from `Request.head_bytes()`). A path with
no upgrade handler is served as a plain request, which declines the upgrade.

Every response carries `SECURITY_HEADERS` (a Content-Security-Policy for the web UI, no
framing, no MIME sniffing, no Referer), unless the application set that header itself.

Bounds: the request head (request line, headers and the blank line) is limited to
`MAX_HEAD` bytes, exactly: while a head is incomplete no more is read than fills the buffer
to `MAX_HEAD`, so a head one byte longer is refused with 431 whatever the reads return.
The body is limited by `max_body` (413 beyond it; at once, unread, when its
Content-Length says so), and a connection idle between requests longer than
`idle_timeout` seconds is closed. The first request's head must be complete within
`head_timeout` seconds of the accept (`limits.handshake_timeout`), so a client that sends
nothing, or its headers a byte at a time, is closed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import h11
import trio

from gateway.web import Request, Response

__all__ = ["MAX_HEAD", "SECURITY_HEADERS", "HTTPServer", "Request", "Response"]

log = logging.getLogger("gateway.http")

READ_SIZE = 65536  # at most MAX_HEAD: what a body read leaves of the next head fits
MAX_HEAD = 64 * 1024  # bytes of a request head, the final CRLF CRLF included
SERVER_NAME = "gateway"
LINGER_SECONDS = 2.0  # reading (and dropping) an unread body after an early answer
# The web UI is one page of our own script and style sheet, talking to /api on its own
# origin: nothing inline, nothing from elsewhere, never inside another site's frame. (The
# UI sets a few element styles from script, hence style-src-attr.)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


Handler = Callable[[Request], Awaitable[Response]]
# called with a request whose body is not read yet: a Response answers it there and then
HeadCheck = Callable[[Request], Awaitable["Response | None"]]
UpgradeHandler = Callable[[Request, trio.abc.Stream, bytes], Awaitable[None]]


class _Closed(Exception):
    """The peer went away or broke the protocol: stop serving this connection."""


class HTTPServer:
    def __init__(self, handle: Handler, *, check_head: HeadCheck | None = None,
                 max_body: int = 16 * 1024 * 1024,
                 idle_timeout: float = 60.0, max_connections: int = 256,
                 head_timeout: float = 10.0) -> None:
        self.handle = handle
        self.check_head = check_head
        self.head_timeout = head_timeout
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open = 0  # connections being served as HTTP (upgraded ones not counted)
        self.upgrades: dict[str, UpgradeHandler] = {}

    def add_upgrade(self, path: str, handler: UpgradeHandler) -> None:
        """Let `handler` take over connections that ask to upgrade on `path` (`/ws`)."""
        self.upgrades[path] = handler

    async def serve(self, stream: trio.abc.Stream, peer: tuple[str, int]) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        if self.open >= self.max_connections:
            log.warning("HTTP connection from %s refused: %d open", peer[0], self.open)
            await self._send_error(conn, stream, 503, "too many HTTP connections")
            await _close(stream)
            return
        self.open += 1
        counted = True
        head_timeout = self.head_timeout  # the first request's; later ones: idle_timeout
        tls = isinstance(stream, trio.SSLStream)
        try:
            while True:
                read: tuple[Request, Response | None] | None = None
                with trio.move_on_after(self.idle_timeout):
                    read = await self._read_request(conn, stream, peer, head_timeout, tls)
                head_timeout = self.idle_timeout
                if read is None:
                    return  # closed by the peer, or idle too long between requests
                request, early = read
                if early is not None:
                    await self._send(conn, stream, request, early)
                    if conn.their_state is not h11.DONE:  # the body is left unread
                        await _linger(stream)
                        return
                elif conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
                    upgrade = self.upgrades.get(request.path)
                    if upgrade is not None:
                        trailing, _ = conn.trailing_data
                        self.open -= 1  # no longer HTTP: the protocol's limits apply
                        counted = False
                        await upgrade(request, stream, bytes(trailing))
                        return
                    await self._send(conn, stream, request, await self._answer(request))
                else:
                    await self._send(conn, stream, request, await self._answer(request))
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except _Closed:
            pass
        except h11.RemoteProtocolError as exc:
            await self._send_error(conn, stream, exc.error_status_hint, str(exc))
            await _linger(stream)  # what is left of the request is not read: drop it
        except h11.LocalProtocolError as exc:
            log.debug("HTTP connection from %s:%d ended: %s", peer[0], peer[1], exc)
        finally:
            if counted:
                self.open -= 1
            await _close(stream)

    async def _answer(self, request: Request) -> Response:
        """The handler's answer; for a request whose head check was left to an upgrade
        handler but that is served as plain HTTP after all, the head check's first."""
        if request.header("upgrade") and request.path in self.upgrades:
            early = await self._check_head(request)
            if early is not None:
                return early
        return await self._call(request)

    async def _call(self, request: Request) -> Response:
        try:
            return await self.handle(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.target)
            return _internal_error()

    async def _check_head(self, request: Request) -> Response | None:
        if self.check_head is None:
            return None
        try:
            return await self.check_head(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.target)
            return _internal_error()

    async def _read_request(self, conn: h11.Connection, stream: trio.abc.Stream,
                            peer: tuple[str, int], head_timeout: float, tls: bool
                            ) -> tuple[Request, Response | None] | None:
        """The next request, and the answer its head check gave (None: read on)."""
        event: object = None
        with trio.move_on_after(head_timeout):
            event = await self._next_event(conn, stream, head=True)
        if event is None:
            log.info("HTTP connection from %s:%d closed: no request head within %g s",
                     peer[0], peer[1], head_timeout)
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise _Closed
        request = Request.from_h11(event, peer, tls)
        # an upgrade on a path with a handler is that handler's to judge (it owns the
        # connection afterwards); everything else is judged here, before the body is read
        if not (request.header("upgrade") and request.path in self.upgrades):
            early = await self._check_head(request)
            if early is not None:
                if request.body_announced:
                    # its bytes are on the way and will not be read: end the connection
                    early.headers = [*early.headers, ("connection", "close")]
                    return request, early
                await self._read_body(conn, stream, request)  # nothing: End of message
                return request, early
        announced = _content_length(request)
        if announced > self.max_body:  # refused unread, as the head check's answers are
            reason = f"request body of {announced} bytes is larger than {self.max_body}"
            body = json.dumps({"error": "payload_too_large", "reason": reason}).encode()
            return request, Response(413, body, headers=[("connection", "close")])
        if conn.they_are_waiting_for_100_continue:
            await self._write(stream, conn.send(h11.InformationalResponse(
                status_code=100, headers=[])))
        await self._read_body(conn, stream, request)
        return request, None

    async def _read_body(self, conn: h11.Connection, stream: trio.abc.Stream,
                         request: Request) -> None:
        body = bytearray()
        while True:
            event = await self._next_event(conn, stream)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    await self._send_error(conn, stream, 413, "request body too large")
                    await _linger(stream)
                    raise _Closed
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.PAUSED:
                break  # an upgrade request: its body (if any) is not HTTP's to read
            else:
                raise _Closed
        request.body = bytes(body)

    async def _next_event(self, conn: h11.Connection, stream: trio.abc.Stream, *,
                          head: bool = False) -> object:
        """The next h11 event, reading as needed. While a request head is awaited
        (`head`), no more is read than fills h11's buffer to MAX_HEAD bytes, and a buffer
        that full without a complete head is refused (431)."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                size = READ_SIZE
                if head:
                    buffered = len(conn.trailing_data[0])
                    if buffered >= MAX_HEAD:
                        raise h11.RemoteProtocolError(
                            f"request head larger than {MAX_HEAD} bytes",
                            error_status_hint=431)
                    size = MAX_HEAD - buffered
                try:
                    data = await stream.receive_some(size)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    raise _Closed from None
                conn.receive_data(bytes(data))
                continue
            return event

    async def _send(self, conn: h11.Connection, stream: trio.abc.Stream, request: Request,
                    response: Response) -> None:
        headers = [("content-type", response.content_type),
                   ("content-length", str(len(response.body))),
                   ("server", SERVER_NAME), *response.headers]
        headers += _security_headers(response.headers)
        wire = conn.send(h11.Response(status_code=response.status, headers=headers))
        if request.method != "HEAD":
            wire += conn.send(h11.Data(data=response.body)) if response.body else b""
        wire += conn.send(h11.EndOfMessage())
        await self._write(stream, wire)

    async def _send_error(self, conn: h11.Connection, stream: trio.abc.Stream, status: int,
                          reason: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        error = {413: "payload_too_large", 431: "request_header_fields_too_large",
                 503: "service_unavailable"}.get(status, "bad_request")
        body = json.dumps({"error": error, "reason": reason}).encode()
        try:
            wire = conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(body))),
                ("connection", "close"), ("server", SERVER_NAME), *SECURITY_HEADERS]))
            wire += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await self._write(stream, wire)
        except (h11.LocalProtocolError, _Closed):
            pass

    @staticmethod
    async def _write(stream: trio.abc.Stream, data: bytes | None) -> None:
        if not data:
            return
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise _Closed from None


def _content_length(request: Request) -> int:
    """The Content-Length announced (h11 has checked its form), 0 if none."""
    value = request.header("content-length")
    return int(value) if value and value.strip().isdigit() else 0


def _internal_error() -> Response:
    return Response(500, b'{"error":"internal_error","reason":"see the broker log"}')


def _security_headers(given: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """SECURITY_HEADERS but those the response sets itself."""
    names = {name.lower() for name, _ in given}
    return [(name, value) for name, value in SECURITY_HEADERS if name not in names]


async def _linger(stream: trio.abc.Stream) -> None:
    """After answering a request whose body was not read: say we are done sending, then
    read and drop what the client still sends, for a short while, so that closing with
    unread bytes does not reset the connection before the client has read the answer."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
    with trio.move_on_after(LINGER_SECONDS):
        while True:
            try:
                if not await stream.receive_some(READ_SIZE):
                    return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return


async def _close(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
