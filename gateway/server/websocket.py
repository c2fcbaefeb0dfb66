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

Then the server's one `Connection` drives the client, as it drives the TCP ports' clients,
through the sans-IO framing layer `gateway.server.wsframing.WebSocketSession` (WebSocket
frames around the protocol session inside: WAMP messages, or the MQTT / STOMP byte streams,
whose sessions come from `gateway.server.factories` as on their own ports). The server's
limits apply as on the TCP listeners, counted in the same `Server.connections`
(`max_connections`, `limits.websocket_max_message_size`, `connection_buffer`,
`send_timeout`, `handshake_timeout` and `handshake_max_bytes`, the last two counted from the
upgrade for the session inside), and so do the memory alarm and shutdown's grace. A
handshake wsproto cannot read (a malformed header, a non-ASCII value) gets an HTTP 400.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from gateway.auth.service import is_loopback
from gateway.server.connection import Connection, Session, peer_of
from gateway.server.factories import SESSION_FACTORIES, SessionHost
from gateway.server.listen import open_tcp_listeners
from gateway.server.origin import BrowserPolicy
from gateway.server.tls import peer_info
from gateway.server.wsframing import STREAM, WAMP, WebSocketSession
from gateway.server.wsframing import SUBPROTOCOLS as SUBPROTOCOLS
from protocols.wamp.codec import Serializer
from protocols.wamp.session import WampSession, broker_cra_lookup

if TYPE_CHECKING:
    from gateway.config import Limits

log = logging.getLogger("gateway.websocket")

READ_SIZE: Final = 65536
MAX_HEAD: Final = 64 * 1024


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


def wamp_session(server: SessionHost, peer: tuple[str, int], wake: Callable[[], None],
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


class FrontHost(SessionHost, Protocol):
    """What a WebSocket front needs of the server (`gateway.server.app.Server` is it)."""

    @property
    def sessions(self) -> set[Any]: ...

    @property
    def connections(self) -> set[Connection]: ...

    async def secure(self, stream: trio.SocketStream, *, https: bool = False
                     ) -> trio.SSLStream[trio.SocketStream] | None: ...

    def connection(self, wire: trio.abc.Stream, *, high_water: int | None = None,
                   send_timeout: float | None = None, label: str = "connection"
                   ) -> Connection: ...

    async def drive(self, conn: Connection, session: Session, *, early: bytes = b"") -> None:
        ...


class WebSocketFront:
    """Serves WebSocket connections for one server."""

    def __init__(self, server: FrontHost, options: WebSocketOptions | None = None) -> None:
        """Without `options`: the defaults with the server's configured limits."""
        self.server = server
        self.options = options or with_limits(WebSocketOptions(), server.config.limits)
        http = server.config.http
        self.policy = BrowserPolicy(http.allowed_origins, http.allowed_hosts)

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
                     handler_nursery: trio.Nursery | None = None, reuse_port: bool = False,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve WebSocket alone on `host:port` (with `tls`: wss, the server's [tls]), its
        connections in `handler_nursery` (the server's connections nursery); reports the
        bound port when started. `reuse_port`: shared with the other workers."""
        async def secure(stream: trio.SocketStream) -> None:
            wrapped = await self.server.secure(stream, https=True)
            if wrapped is not None:
                await self.serve_stream(wrapped)

        listeners = await open_tcp_listeners(port, host, reuse_port=reuse_port)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(secure if tls else self.serve_stream, listeners,
                                   handler_nursery=handler_nursery)

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
        server, options = self.server, self.options
        conn = server.connection(stream, high_water=options.high_water,
                                 send_timeout=options.send_timeout, label="websocket")
        tls_peer = peer_info(stream)

        def make_session(subprotocol: str) -> Any:
            if subprotocol in WAMP:
                return wamp_session(server, peer, conn.wake, WAMP[subprotocol], options)
            return SESSION_FACTORIES[STREAM[subprotocol]](server, peer, conn.wake, tls_peer)

        session = WebSocketSession(
            ws, make_session, subprotocol=chosen or None, peer=peer, clock=server.clock,
            wake=conn.wake, enter=server.sessions.add, leave=server.sessions.discard,
            max_message_size=options.max_message_size, ping_interval=options.ping_interval)
        await server.drive(conn, session, early=rest)

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
        if len(server.connections) >= limit:
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
