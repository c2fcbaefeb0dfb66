"""WebSocket on trio with wsproto: the handshake, then any protocol session over messages.

Theory of operation
-------------------
`WebSocketFront.handle` is the HTTP server's upgrade hook for `/ws` (it gets the parsed
request, the stream and the bytes read past the request head); `serve` does the same from
raw head bytes. The handshake is wsproto's, fed the request head again: the subprotocol is
the first one the client offers that we speak (`SUBPROTOCOLS`), permessage-deflate is
accepted when offered, and a request we cannot accept gets an HTTP 400 whose body says why.
`/mqtt` and `/stomp` are aliases of `/ws` (paho-mqtt's default path is `/mqtt`).

A web page cannot use the browser's place on the network against the broker: an upgrade
whose `Origin` is neither the broker's own address nor listed in `[http] allowed_origins`,
or whose `Host` names a host `[http] allowed_hosts` does not admit (DNS rebinding), gets
HTTP 403 (the rules: `gateway.server.origin.BrowserPolicy`). Clients that are not browsers
send no Origin and are served as before.

A client that offers no subprotocol gets the endpoint's default one (STOMP on the Web-STOMP
port, MQTT on the Web-MQTT port); on `/ws` of the HTTP port, which has none, it is accepted
without one and its first message tells which protocol it speaks (`gateway.server.wsdetect`:
a STOMP CONNECT, an MQTT CONNECT, a WAMP HELLO); the session is made then.

Then one nursery per connection runs a reader, a writer and a ticker around the session:

- WAMP (`wamp.2.json` in text messages, `wamp.2.msgpack` in binary ones): one WebSocket
  message is one WAMP message, handed whole to `WampSession.receive_message`;
- MQTT (`mqtt`) and STOMP (`v10.stomp`, `v11.stomp`, `v12.stomp`): their sessions take a
  byte stream, so each message's payload is fed to `receive_data` in order, and what they
  produce goes out as one message per write (MQTT binary; STOMP text when it is UTF-8, as
  browsers' STOMP clients expect, else binary). Their sessions come from
  `gateway.server.factories`, the same as on their own ports.

Fragmented messages are reassembled up to `max_message_size` (close 1009 beyond it, before
more is buffered; a frame header announcing more is refused before its payload is read, by
`FrameSizeGuard`, since wsproto reports payload only as it arrives); pings are answered; a
silent peer is pinged after `ping_interval` seconds and dropped after twice that; wsproto's
parse errors close with their code (1002, 1007), and a handshake wsproto cannot read (a
malformed header, a non-ASCII value) gets an HTTP 400. The server's limits apply as on the
TCP listeners (`limits.websocket_max_message_size`, `connection_buffer`, `send_timeout`,
`handshake_timeout` and `handshake_max_bytes`, the last two counted from the upgrade for
the session inside). A session that ends (WAMP ABORT or GOODBYE answered, MQTT DISCONNECT,
STOMP ERROR) closes the WebSocket with 1000 once its last message is written; broker
shutdown with 1001.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from gateway.auth.service import is_loopback
from gateway.server.connection import (
    SendStalled,
    peer_of,
    send_with_timeout,
    settle_password_check,
)
from gateway.server.factories import SESSION_FACTORIES
from gateway.server.origin import BrowserPolicy
from gateway.server.tls import peer_info
from gateway.server.wsdetect import MORE, detect
from protocols.wamp.codec import Serializer
from protocols.wamp.session import WampSession, broker_cra_lookup

if TYPE_CHECKING:
    from gateway.config import Limits
    from gateway.server.app import Server

log = logging.getLogger("gateway.websocket")

READ_SIZE: Final = 65536
MAX_HEAD: Final = 64 * 1024
ALARM_POLL: Final = 0.1  # seconds between looks at the memory alarm while paused
WAMP: Final = {"wamp.2.json": Serializer.JSON, "wamp.2.msgpack": Serializer.MSGPACK}
STREAM: Final = {"mqtt": "mqtt", "v12.stomp": "stomp", "v11.stomp": "stomp",
                 "v10.stomp": "stomp"}
SUBPROTOCOLS: Final = (*WAMP, *STREAM)


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011


@dataclass(frozen=True)
class WebSocketOptions:
    path: str = "/ws"
    aliases: tuple[str, ...] = ("/mqtt", "/stomp")  # served exactly as `path`
    max_message_size: int = 16 * 1024 * 1024
    ping_interval: float = 30.0  # idle seconds before we ping; silent for twice: dropped
    high_water: int = 1024 * 1024  # outbound bytes before the reader pauses
    wamp_disclose: bool = False  # disclose publishers and callers without disclose_me
    # which subprotocols this endpoint speaks (None: all), and the one used when a client
    # offers none (RabbitMQ's Web-STOMP accepts such clients; None: tell it from the
    # client's first message, `gateway.server.wsdetect`)
    subprotocols: tuple[str, ...] | None = None
    default_subprotocol: str | None = None
    handshake_timeout: float = 10.0  # seconds for the request head on a listener of its own
    send_timeout: float = 0.0  # seconds a write may make no progress (0 = no limit)


STOMP_SUBPROTOCOLS: Final = ("v12.stomp", "v11.stomp", "v10.stomp")
# RabbitMQ's Web-STOMP (port 15674) and Web-MQTT (port 15675) endpoints, both on `/ws`, so
# browser apps written for them only change the host
WEB_STOMP: Final = WebSocketOptions(subprotocols=STOMP_SUBPROTOCOLS,
                                    default_subprotocol="v12.stomp")
WEB_MQTT: Final = WebSocketOptions(subprotocols=("mqtt",), default_subprotocol="mqtt")


def with_limits(options: WebSocketOptions, limits: Limits) -> WebSocketOptions:
    """`options` with the sizes and times of the config's [limits] section."""
    return replace(options, max_message_size=limits.websocket_max_message_size,
                   high_water=limits.connection_buffer, send_timeout=limits.send_timeout / 1000,
                   handshake_timeout=limits.handshake_timeout / 1000)


class FrameSizeGuard:
    """Reads each frame's payload length from its header as the bytes arrive (RFC 6455
    5.2) and sums the data frames of the message in progress, so a message announced
    larger than `limit` is refused before its payload is read. It parses nothing else:
    wsproto still decodes everything; this only keeps track of where headers start."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = bytearray()  # the header being read (at most 14 bytes)
        self._message = 0  # payload bytes of the data frames of the message so far

    def too_big(self, data: bytes | bytearray) -> bool:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            head = self._head
            head.append(data[pos])
            pos += 1
            if len(head) < 2:
                continue
            code = head[1] & 0x7F
            size = 2 + (2 if code == 126 else 8 if code == 127 else 0) + (
                4 if head[1] & 0x80 else 0)
            if len(head) < size:
                continue
            if code == 126:
                length = int.from_bytes(head[2:4], "big")
            elif code == 127:
                length = int.from_bytes(head[2:10], "big")
            else:
                length = code
            opcode, fin = head[0] & 0x0F, head[0] & 0x80
            head.clear()
            if opcode < 8:  # continuation, text or binary (control frames are <= 125)
                self._message += length
                if self._message > self.limit:
                    return True
                if fin:
                    self._message = 0
            self._skip = length
        return False


class UpgradeRequest(Protocol):
    """What the HTTP server's upgrade hook passes (`gateway.server.http.Request`)."""

    peer: tuple[str, int]

    def head_bytes(self) -> bytes: ...


class HandshakeRefused(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def choose_subprotocol(offered: list[str], available: set[str]) -> str | None:
    """The first subprotocol the client offers that we speak (never `.batched`)."""
    for name in offered:
        if name in available:
            return name
    return None


def wamp_session(server: Server, peer: tuple[str, int], wake: Callable[[], None],
                 serializer: Serializer, options: WebSocketOptions) -> WampSession:
    # WAMP-CRA signs with each user's salted key, stored when the password was set
    wamp = server.config.wamp
    return WampSession(
        server.broker, server.auth, server.wamp_router, serializer, peer=peer,
        loopback=is_loopback(peer[0]), clock=server.clock, wake=wake,
        allow_anonymous=wamp.allow_anonymous, anonymous_user=wamp.anonymous_user,
        loopback_users=server.config.auth.loopback_users,
        max_message_size=options.max_message_size, high_water=options.high_water,
        disclose=options.wamp_disclose, admit=server.admit,
        cra_lookup=broker_cra_lookup(server.auth))


class WebSocketFront:
    """Serves WebSocket connections for one server."""

    def __init__(self, server: Server, options: WebSocketOptions | None = None) -> None:
        """Without `options`: the defaults with the server's configured limits."""
        self.server = server
        self.options = options or with_limits(WebSocketOptions(), server.config.limits)
        http = server.config.http
        self.policy = BrowserPolicy(http.allowed_origins, http.allowed_hosts)
        self.undecided = 0  # open connections whose first message has not come yet

    @property
    def paths(self) -> tuple[str, ...]:
        """The request paths this endpoint answers on (`/ws` and its aliases)."""
        return (self.options.path, *self.options.aliases)

    def available(self) -> set[str]:
        names = set(WAMP)
        names.update(n for n, proto in STREAM.items() if proto in SESSION_FACTORIES)
        if self.options.subprotocols is not None:
            names &= set(self.options.subprotocols)
        return names

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """A connection on a listener of its own (RabbitMQ's Web-STOMP/Web-MQTT ports): read
        the request head (bounded in size and time), then `serve`."""
        data = b""
        with trio.move_on_after(self.options.handshake_timeout):
            while b"\r\n\r\n" not in data and len(data) <= MAX_HEAD:
                try:
                    chunk = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    chunk = b""
                if not chunk:
                    break
                data += chunk
        if b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                await _refuse(stream, "request head too large")
            await _close(stream)
            return
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        assert isinstance(transport, trio.SocketStream)
        peer = await peer_of(transport)
        if peer is None:
            return
        try:
            await self.serve(stream, data, peer)
        finally:
            await _close(stream)

    async def listen(self, host: str, port: int, *, tls: bool = False,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve WebSocket alone on `host:port` (with `tls`: wss, the server's [tls]);
        reports the bound port when started."""
        async def secure(stream: trio.SocketStream) -> None:
            wrapped = await self.server.secure(stream, https=True)
            if wrapped is not None:
                await self.serve_stream(wrapped)

        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(secure if tls else self.serve_stream, listeners)

    async def handle(self, request: UpgradeRequest, stream: trio.abc.Stream,
                     trailing: bytes) -> None:
        """The HTTP server's upgrade hook (`HTTPServer.add_upgrade("/ws", front.handle)`)."""
        await self.serve(stream, request.head_bytes() + trailing, request.peer)

    async def serve(self, stream: trio.abc.Stream, data: bytes, peer: tuple[str, int]
                    ) -> None:
        """Handshake from `data` (the request head and whatever followed it), then run."""
        tls = isinstance(stream, trio.SSLStream)
        ws, wire, chosen, rest = self.handshake(data, tls=tls)
        if not await _send(stream, wire) or chosen is None:
            return
        conn = WebSocketConnection(self, stream, ws, chosen or None, peer)
        await conn.run(rest)

    def handshake(self, data: bytes, *, tls: bool = False
                  ) -> tuple[WSConnection, bytes, str | None, bytes]:
        """The sans-IO part of `serve`: the server's connection, the bytes to answer with
        (101, or a refusal), the subprotocol chosen (None: refused, close after sending;
        "": none offered, the first message tells) and the bytes that came after the
        request head. `tls`: the request came over TLS (the scheme of the broker's own
        pages, for the Origin rule)."""
        ws = WSConnection(ConnectionType.SERVER)
        # wsproto's server handshake drops what follows the request head, so keep the
        # frames that came with it and feed them once the connection is open
        head, sep, rest = data.partition(b"\r\n\r\n")
        try:
            ws.receive_data(head + sep)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
            if request is None:
                raise HandshakeRefused("incomplete WebSocket handshake request")
            chosen = self._check(request, tls)
            # a client that offered none gets the endpoint's default, not echoed back
            subprotocol = chosen if chosen in request.subprotocols else None
        except RemoteProtocolError as exc:
            return ws, _refusal(str(exc)), None, b""
        except UnicodeError as exc:  # wsproto decodes header values as ASCII (Host: IDNA)
            return ws, _refusal(f"malformed handshake header: {exc}"), None, b""
        except HandshakeRefused as exc:
            wire = ws.send(RejectConnection(
                status_code=exc.status, has_body=True, headers=[
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(exc.reason.encode())).encode())]))
            return ws, wire + ws.send(RejectData(data=exc.reason.encode())), None, b""
        extensions: list[Extension] = [PerMessageDeflate()] if _offers_deflate(request) else []
        wire = ws.send(AcceptConnection(subprotocol=subprotocol, extensions=extensions))
        return ws, wire, chosen, rest

    def _check(self, request: Request, tls: bool) -> str:
        path = request.target.split("?", 1)[0]
        if path not in self.paths:
            raise HandshakeRefused(f"no WebSocket endpoint at {path}")
        _check_key(request)
        self._check_browser(request, tls)
        server = self.server
        limit = server.config.limits.max_connections
        if len(server.connections) + len(server.sessions) - _tcp_sessions(server) \
                + self.undecided >= limit:
            raise HandshakeRefused(f"connection limit reached (max_connections {limit})", 503)
        chosen = choose_subprotocol(list(request.subprotocols), self.available())
        if chosen is None and not request.subprotocols:
            chosen = self.options.default_subprotocol or ""  # "": the first message tells
        if chosen is None:
            offered = ", ".join(request.subprotocols) or "none"
            raise HandshakeRefused(
                f"no supported subprotocol offered (offered: {offered}; supported: "
                f"{', '.join(sorted(self.available()))})")
        return chosen


    def _check_browser(self, request: Request, tls: bool) -> None:
        """HTTP 403 for a Host that `[http] allowed_hosts` does not admit, and for an Origin
        (a web page) that is not the broker's own nor listed in `[http] allowed_origins`."""
        host = request.host
        if not self.policy.host_allowed(host):
            log.info("websocket upgrade refused: Host %r not allowed", host)
            raise HandshakeRefused(f"Host {host!r} is not allowed here (an IP address, "
                                   "localhost, or a name in [http] allowed_hosts)", 403)
        for name, value in request.extra_headers:
            if name.lower() != b"origin":
                continue
            origin = value.decode("latin-1")
            if not self.policy.origin_allowed(origin, host, tls=tls):
                log.info("websocket upgrade refused: Origin %r not allowed (Host %r)",
                         origin, host)
                raise HandshakeRefused(f"Origin {origin!r} is not allowed: a page may open a "
                                       "WebSocket to the broker only from the broker's own "
                                       "address or an origin in [http] allowed_origins", 403)


def _check_key(request: Request) -> None:
    """Exactly one Sec-WebSocket-Key, 16 bytes in base64 [RFC 6455 4.2.1, 11.3.1]. wsproto
    joins repeated keys with ", " and answers with the accept token of that string, which
    no client can verify: refuse instead."""
    keys = [v for k, v in request.extra_headers if k.lower() == b"sec-websocket-key"]
    try:
        nonce = binascii.a2b_base64(keys[0], strict_mode=True) if len(keys) == 1 else b""
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeRefused("Sec-WebSocket-Key must be sent once, 16 bytes in base64")


def _tcp_sessions(server: Server) -> int:
    """Sessions that are counted in `server.connections` already (TCP listeners')."""
    return sum(1 for c in server.connections if c.session is not None)


def _offers_deflate(request: Request) -> bool:
    return any((e if isinstance(e, str) else e.name).split(";", 1)[0].strip()
               == "permessage-deflate" for e in request.extensions)


async def _send(stream: trio.abc.Stream, data: bytes) -> bool:
    if not data:
        return True
    try:
        await stream.send_all(data)
        return True
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return False


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


def _refusal(reason: str) -> bytes:
    body = reason.encode()
    return (b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8"
            b"\r\nconnection: close\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


async def _refuse(stream: trio.abc.Stream, reason: str) -> None:
    await _send(stream, _refusal(reason))


class Undecided:
    """The session of a WebSocket that offered no subprotocol, until its first message tells
    which protocol it speaks: not logged in, nothing to send. It is not one of the server's
    sessions (the management API does not list it); the front counts it."""

    def __init__(self) -> None:
        self.closed = False
        self.alarm = False

    authenticated: Final = False
    pending_output: Final = 0
    read_paused: Final = False
    password_check: Final = None

    def data_to_send(self) -> bytes:
        return b""

    def output_drained(self) -> None:
        pass

    def timer(self, now: float) -> None:
        pass

    def memory_alarm(self, on: bool) -> None:
        self.alarm = on

    def connection_lost(self) -> None:
        self.closed = True


class WebSocketConnection:
    """One accepted WebSocket and the protocol session it carries (`subprotocol` None: told
    by the first message, see `gateway.server.wsdetect`)."""

    def __init__(self, front: WebSocketFront, stream: trio.abc.Stream, ws: WSConnection,
                 subprotocol: str | None, peer: tuple[str, int]) -> None:
        self.front = front
        self.stream = stream
        self.ws = ws
        self.subprotocol = subprotocol
        self.peer = peer
        self.options = front.options
        server = front.server
        self.clock = server.clock
        self.wamp: WampSession | None = None
        self.session: Any = Undecided()
        self.text_out = False
        if subprotocol is not None:
            self._make_session(subprotocol)
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._out = bytearray()  # WebSocket frames ready to write
        self._parts: list[bytes | str] = []
        self._size = 0
        self._close_sent = False
        self.last_recv = self.clock()
        self._pinged = False
        self._cancel: trio.CancelScope | None = None
        self.guard = FrameSizeGuard(self.options.max_message_size)
        self._refused = False
        self.handshake = server.handshake_limits()

    def _make_session(self, subprotocol: str) -> None:
        server = self.front.server
        self.subprotocol = subprotocol
        if subprotocol in WAMP:
            self.wamp = wamp_session(server, self.peer, self.wake, WAMP[subprotocol],
                                     self.options)
            self.session = self.wamp
        else:
            self.session = SESSION_FACTORIES[STREAM[subprotocol]](
                server, self.peer, self.wake, peer_info(self.stream))
        self.text_out = subprotocol.endswith(".stomp")

    def _decide(self, message: bytes | str) -> bool:
        """The first message of a client that offered no subprotocol: make the session of
        the protocol it speaks (True), or close (False; also for EOLs only, to wait)."""
        chosen = detect(message)
        if chosen == MORE:
            return False
        if chosen is None:
            log.info("websocket %s:%s closed: no subprotocol offered and the first message "
                     "is no STOMP CONNECT, MQTT CONNECT or WAMP HELLO", *self.peer)
            self._close(CloseCode.PROTOCOL_ERROR, "offer a subprotocol (mqtt, v12.stomp, "
                        "wamp.2.json) or start with CONNECT or HELLO")
            self.session.connection_lost()
            return False
        self._make_session(chosen)
        self.front.undecided -= 1
        server = self.front.server
        server.sessions.add(self.session)
        self.session.memory_alarm(server.memory_alarm)
        return True

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, early: bytes = b"") -> None:
        """Serve until closed; `early` holds the frames that came with the handshake."""
        server = self.front.server
        if isinstance(self.session, Undecided):
            self.front.undecided += 1
        else:
            server.sessions.add(self.session)
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._reader, early)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._login_deadline)
        except Exception:
            log.exception("websocket connection %s:%s failed", *self.peer)
        finally:
            self.session.connection_lost()
            if isinstance(self.session, Undecided):
                self.front.undecided -= 1
            server.sessions.discard(self.session)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    # -- output --------------------------------------------------------------------------------

    def _close(self, code: int, reason: str = "") -> None:
        if not self._close_sent and self.ws.state is ConnectionState.OPEN:
            self._out += self.ws.send(CloseConnection(code=code, reason=reason))
        self._close_sent = True
        self.wake()

    def _collect(self) -> None:
        """Move the session's output into WebSocket frames."""
        if self._close_sent or self.ws.state is not ConnectionState.OPEN:
            if self.wamp is not None:
                self.wamp.messages_to_send()
            else:
                self.session.data_to_send()
            return
        if self.wamp is not None:
            for msg in self.wamp.messages_to_send():
                if isinstance(msg, str):
                    self._out += self.ws.send(TextMessage(data=msg))
                else:
                    self._out += self.ws.send(BytesMessage(data=msg))
        else:
            data = self.session.data_to_send()
            if data:
                if self.text_out:
                    try:
                        self._out += self.ws.send(TextMessage(data=data.decode("utf-8")))
                    except UnicodeDecodeError:
                        self._out += self.ws.send(BytesMessage(data=data))
                else:
                    self._out += self.ws.send(BytesMessage(data=data))
        if self.session.closed and not self.session.pending_output:
            shutting_down = getattr(self.session, "close_reason", None) == "broker shutdown"
            self._close(CloseCode.GOING_AWAY if shutting_down else CloseCode.NORMAL)

    async def _writer(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._collect()
            if self._out:
                data = bytes(self._out)
                self._out.clear()
                try:
                    await send_with_timeout(self.stream, data, self.options.send_timeout)
                except SendStalled:
                    self._cut_off("not reading: a write stalled for the send timeout "
                                  f"({self.options.send_timeout:g} s)")
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._stop()
                    return
            self.session.output_drained()
            self._drained.set()
            if self._close_sent and self.ws.state is not ConnectionState.OPEN \
                    and self.ws.state is not ConnectionState.LOCAL_CLOSING:
                self._stop()
                return
            if self._close_sent and self.ws.state is ConnectionState.LOCAL_CLOSING:
                # wait a moment for the peer's close frame, then go
                assert self._cancel is not None
                self._cancel.deadline = min(self._cancel.deadline,
                                            trio.current_time() + 2)

    async def _login_deadline(self) -> None:
        """`limits.handshake_timeout` from the upgrade: cut off a session (or a client
        whose first message has not come) that has not logged in by then."""
        limits = self.handshake
        if not limits.timeout:
            return
        await trio.sleep(limits.timeout)
        if not self.session.authenticated:
            self._cut_off(limits.why())

    def _stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _cut_off(self, why: str) -> None:
        log.info("websocket %s:%s closed: %s", *self.peer, why)
        self.session.connection_lost()
        self._stop()

    # -- input ---------------------------------------------------------------------------------

    def _sync_alarm(self) -> None:
        alarm = self.front.server.memory_alarm
        if self.session.alarm != alarm:
            self.session.memory_alarm(alarm)
            self.wake()

    async def _reader(self, early: bytes) -> None:
        if early and not self._feed(early):  # frames that came with the handshake
            return
        self.wake()
        if getattr(self.session, "password_check", None) is not None:
            await settle_password_check(self.session)
            self.wake()
        while True:
            session = self.session  # the first message of an undecided client replaces it
            while session.pending_output > self.options.high_water and not session.closed:
                self._drained = trio.Event()
                await self._drained.wait()
            # the broker's memory alarm: a session that published meanwhile is not read
            # until it clears (the server tells only its own TCP connections, so look)
            self._sync_alarm()
            while session.read_paused and not session.closed:
                await trio.sleep(ALARM_POLL)
                self._sync_alarm()
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                session.connection_lost()
                self._stop()
                return
            self.last_recv = self.clock()
            self._pinged = False
            if not self._feed(data):
                return
            if getattr(self.session, "password_check", None) is not None:
                await settle_password_check(self.session)  # its later input waits meanwhile
                self.wake()

    def _feed(self, data: bytes | bytearray) -> bool:
        """Bytes read from the peer; False when reading should stop."""
        session = self.session
        if self._refused or self.guard.too_big(data):
            if not self._refused:  # the payload that follows is dropped, not decoded
                self._refused = True
                self._close(CloseCode.TOO_BIG, "message too big")
                session.connection_lost()
            return True
        self.ws.receive_data(bytes(data))
        for event in self.ws.events():
            self._on_event(event)
        self.front.server.durability.kick()  # receipts/acks waiting for the disk
        self.wake()
        if self.handshake.over(self.session, len(data)):
            self._cut_off("sent more than handshake_max_bytes "
                          f"({self.handshake.max_bytes}) before logging in")
            return False
        return self.ws.state not in (ConnectionState.CLOSED, ConnectionState.REMOTE_CLOSING)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            if self._close_sent:
                return
            self._size += len(event.data)
            if self._size > self.options.max_message_size:
                self._parts.clear()
                self._close(CloseCode.TOO_BIG, "message too big")
                self.session.connection_lost()
                return
            self._parts.append(event.data if isinstance(event.data, str)
                               else bytes(event.data))
            if event.message_finished:
                parts, self._parts, self._size = self._parts, [], 0
                self._deliver(parts)
        elif isinstance(event, Ping):
            self._out += self.ws.send(event.response())
        elif isinstance(event, Pong):
            pass
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self._out += self.ws.send(event.response())
                self._close_sent = True
            else:  # a parse error: wsproto reports the code to close with
                self._close(event.code, event.reason or "")
            self.session.connection_lost()

    def _deliver(self, parts: list[bytes | str]) -> None:
        if isinstance(self.session, Undecided):
            first = "".join(p for p in parts if isinstance(p, str)) if isinstance(
                parts[0], str) else b"".join(p for p in parts if isinstance(p, bytes))
            if not self._decide(first):
                return
        if isinstance(parts[0], str):
            text = "".join(p for p in parts if isinstance(p, str))
            if self.wamp is not None:
                self.wamp.receive_message(text)
            else:
                self.session.receive_data(text.encode("utf-8"))
        else:
            data = b"".join(p for p in parts if isinstance(p, bytes))
            if self.wamp is not None:
                self.wamp.receive_message(data)
            else:
                self.session.receive_data(data)

    # -- time ----------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            now = self.clock()
            wait = 1.0
            if self.wamp is not None:
                deadline = self.wamp.next_deadline()
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - now))
            await trio.sleep(wait)
            now = self.clock()
            if self.session.read_paused:
                self.last_recv = now  # paused by the memory alarm: we are not reading
            self.session.timer(now)
            idle = now - self.last_recv
            if idle > 2 * self.options.ping_interval:
                log.info("websocket %s:%s silent for %.0f s, closing", *self.peer, idle)
                self.session.connection_lost()
                self._close(CloseCode.GOING_AWAY, "ping timeout")
            elif idle > self.options.ping_interval and not self._pinged \
                    and self.ws.state is ConnectionState.OPEN:
                self._pinged = True
                self._out += self.ws.send(Ping(payload=b"gateway"))
            if self.session.pending_output or self.session.closed or self._out:
                self.wake()
