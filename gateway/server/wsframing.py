"""WebSocket as a framing layer: a sans-IO session that wraps a protocol session in wsproto.

Theory of operation
-------------------
`gateway.server.connection.Connection` drives every client, TCP or WebSocket, through one
session interface (bytes in, bytes out, timers, logged in or not, closed or not). For a
WebSocket client that session is a `WebSocketSession`: the bytes read go to wsproto, whose
events become the inner protocol session's input, and the inner session's output leaves as
WebSocket messages; so limits, the memory alarm, send timeouts, handshake limits, shutdown
and metrics are the `Connection`'s, the same as on the TCP ports (hypercorn drives its
WebSocket stream from its one TCP loop in the same way).

The inner session takes one of two shapes:

- WAMP (`wamp.2.json` in text messages, `wamp.2.msgpack` in binary ones): one WebSocket
  message is one WAMP message, handed whole to `receive_message`, and each message it
  queued (`messages_to_send`) leaves as a WebSocket message of its own;
- MQTT (`mqtt`) and STOMP (`v10.stomp`, `v11.stomp`, `v12.stomp`): byte-stream sessions, so
  each message's payload is fed to `receive_data` in order, and what they produce goes out
  as one message per write (MQTT binary; STOMP text when it is UTF-8, as browsers' STOMP
  clients expect, else binary).

A client that offered no subprotocol starts with an `Undecided` inner session; its first
message tells which protocol it speaks (`gateway.server.wsdetect`), and the layer swaps in
that protocol's session then (as hypercorn's ProtocolWrapper switches), handing it the
message.

Fragmented messages are reassembled up to `max_message_size` (close 1009 beyond it, before
more is buffered; a frame header announcing more is refused before its payload is read, by
`FrameSizeGuard`, since wsproto reports payload only as it arrives); pings are answered; a
silent peer is pinged after `ping_interval` seconds (looked at on the connection's tick) and
dropped after twice that; wsproto's parse errors close with their code (1002, 1007). A
session that ends (WAMP ABORT or GOODBYE answered, MQTT DISCONNECT, STOMP ERROR) closes the
WebSocket with 1000 once its last message is framed; broker shutdown with 1001. No I/O and
no awaits happen here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)

from gateway.server.wsdetect import MORE, detect
from protocols.wamp.codec import Serializer

log = logging.getLogger("gateway.websocket")

WAMP: Final = {"wamp.2.json": Serializer.JSON, "wamp.2.msgpack": Serializer.MSGPACK}
STREAM: Final = {"mqtt": "mqtt", "v12.stomp": "stomp", "v11.stomp": "stomp",
                 "v10.stomp": "stomp"}
SUBPROTOCOLS: Final = (*WAMP, *STREAM)
PING_PAYLOAD: Final = b"gateway"


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011


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


class Undecided:
    """The inner session of a WebSocket that offered no subprotocol, until its first message
    tells which protocol it speaks: not logged in, nothing to send. It is not one of the
    server's sessions (the management API does not list it)."""

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

    def flush_confirms(self) -> None:
        pass

    def resume_input(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def connection_lost(self) -> None:
        self.closed = True


SessionMaker = Callable[[str], Any]  # subprotocol -> the protocol session for it


class WebSocketSession:
    """One accepted WebSocket and the protocol session it carries, as one session for
    `Connection` (`subprotocol` None: told by the first message, see the module doc).
    `make_session` makes the inner session for a subprotocol; `enter` and `leave` add it to
    and take it from the server's sessions."""

    def __init__(self, ws: WSConnection, make_session: SessionMaker, *,
                 subprotocol: str | None, peer: tuple[str, int], clock: Callable[[], float],
                 wake: Callable[[], None], enter: Callable[[Any], None],
                 leave: Callable[[Any], None], max_message_size: int,
                 ping_interval: float) -> None:
        self.ws = ws
        self.make_session = make_session
        self.peer = peer
        self.clock = clock
        self.wake = wake
        self.enter = enter
        self.leave = leave
        self.max_message_size = max_message_size
        self.ping_interval = ping_interval
        self.alarm = False
        self.inner: Any = Undecided()
        self.subprotocol: str | None = None
        self.messages = False  # the inner session takes and gives whole messages (WAMP)
        self.text_out = False  # byte-stream output goes in text messages when UTF-8 (STOMP)
        self._out = bytearray()  # WebSocket frames ready to write
        self._parts: list[bytes | str] = []
        self._size = 0
        self._close_sent = False
        self._refused = False
        self.guard = FrameSizeGuard(max_message_size)
        self.last_recv = clock()
        self._pinged = False
        if subprotocol is not None:
            self._switch(subprotocol)

    def _switch(self, subprotocol: str) -> None:
        """Make the inner session of `subprotocol` and make it one of the server's."""
        self.subprotocol = subprotocol
        self.messages = subprotocol in WAMP
        self.text_out = subprotocol.endswith(".stomp")
        self.inner = self.make_session(subprotocol)
        self.inner.memory_alarm(self.alarm)
        self.enter(self.inner)

    # -- what Connection reads -------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        return bool(self.inner.authenticated)

    @property
    def closed(self) -> bool:
        return self._close_sent or bool(self.inner.closed)

    @property
    def finished(self) -> bool:
        """Both close frames went: nothing more to read, no reason to linger."""
        return self.ws.state is ConnectionState.CLOSED

    @property
    def pending_output(self) -> int:
        owed = 1 if self.inner.closed and not self._close_sent else 0  # the close frame
        return len(self._out) + int(self.inner.pending_output) + owed

    @property
    def read_paused(self) -> bool:
        return bool(self.inner.read_paused)

    @property
    def password_check(self) -> Any:
        return self.inner.password_check

    @password_check.setter
    def password_check(self, check: Any) -> None:
        self.inner.password_check = check

    def resume_input(self) -> None:
        self.inner.resume_input()

    def memory_alarm(self, on: bool) -> None:
        self.alarm = on
        self.inner.memory_alarm(on)

    def flush_confirms(self) -> None:
        self.inner.flush_confirms()

    def output_drained(self) -> None:
        self.inner.output_drained()

    def shutdown(self) -> None:
        self.inner.shutdown()

    def connection_lost(self) -> None:
        self.inner.connection_lost()
        self.leave(self.inner)

    def timer(self, now: float) -> None:
        """The connection's tick: the inner session's timers, then ping a quiet peer, and
        drop one silent for twice `ping_interval`."""
        inner = self.inner
        if inner.read_paused:
            self.last_recv = now  # paused by the memory alarm: we are not reading
        inner.timer(now)
        idle = now - self.last_recv
        if idle > 2 * self.ping_interval:
            if not self._close_sent:
                log.info("websocket %s:%s silent for %.0f s, closing", *self.peer, idle)
            inner.connection_lost()
            self._close(CloseCode.GOING_AWAY, "ping timeout")
        elif idle > self.ping_interval and not self._pinged \
                and self.ws.state is ConnectionState.OPEN:
            self._pinged = True
            self._out += self.ws.send(Ping(payload=PING_PAYLOAD))

    # -- output ----------------------------------------------------------------------------

    def _close(self, code: int, reason: str = "") -> None:
        if not self._close_sent and self.ws.state is ConnectionState.OPEN:
            self._out += self.ws.send(CloseConnection(code=code, reason=reason))
        self._close_sent = True

    def data_to_send(self) -> bytes:
        """The inner session's output framed as WebSocket messages, after any control
        frames; the close frame once the inner session has ended."""
        inner = self.inner
        if self._close_sent or self.ws.state is not ConnectionState.OPEN:
            if self.messages:  # nothing more goes out: dropped
                inner.messages_to_send()
            else:
                inner.data_to_send()
        elif self.messages:
            for msg in inner.messages_to_send():
                if isinstance(msg, str):
                    self._out += self.ws.send(TextMessage(data=msg))
                else:
                    self._out += self.ws.send(BytesMessage(data=msg))
        else:
            data = inner.data_to_send()
            if data:
                if self.text_out:
                    try:
                        self._out += self.ws.send(TextMessage(data=data.decode("utf-8")))
                    except UnicodeDecodeError:
                        self._out += self.ws.send(BytesMessage(data=data))
                else:
                    self._out += self.ws.send(BytesMessage(data=data))
        if inner.closed and not inner.pending_output:
            shutting_down = getattr(inner, "close_reason", None) == "broker shutdown"
            self._close(CloseCode.GOING_AWAY if shutting_down else CloseCode.NORMAL)
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Bytes read from the peer."""
        self.last_recv = self.clock()
        self._pinged = False
        if self._refused or self.guard.too_big(data):
            if not self._refused:  # the payload that follows is dropped, not decoded
                self._refused = True
                self._close(CloseCode.TOO_BIG, "message too big")
                self.inner.connection_lost()
            return
        self.ws.receive_data(bytes(data))
        for event in self.ws.events():
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            if self._close_sent:
                return
            self._size += len(event.data)
            if self._size > self.max_message_size:
                self._parts.clear()
                self._close(CloseCode.TOO_BIG, "message too big")
                self.inner.connection_lost()
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
            self.inner.connection_lost()

    def _deliver(self, parts: list[bytes | str]) -> None:
        message: bytes | str
        if isinstance(parts[0], str):
            message = "".join(p for p in parts if isinstance(p, str))
        else:
            message = b"".join(p for p in parts if isinstance(p, bytes))
        if isinstance(self.inner, Undecided) and not self._decide(message):
            return
        if self.messages:
            self.inner.receive_message(message)
        elif isinstance(message, str):
            self.inner.receive_data(message.encode("utf-8"))
        else:
            self.inner.receive_data(message)

    def _decide(self, message: bytes | str) -> bool:
        """The first message of a client that offered no subprotocol: switch to the session
        of the protocol it speaks (True), or close (False; also for EOLs only, to wait)."""
        chosen = detect(message)
        if chosen == MORE:
            return False
        if chosen is None:
            log.info("websocket %s:%s closed: no subprotocol offered and the first message "
                     "is no STOMP CONNECT, MQTT CONNECT or WAMP HELLO", *self.peer)
            self._close(CloseCode.PROTOCOL_ERROR, "offer a subprotocol (mqtt, v12.stomp, "
                        "wamp.2.json) or start with CONNECT or HELLO")
            self.inner.connection_lost()
            return False
        self._switch(chosen)
        return True
