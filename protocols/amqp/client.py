"""Sans-IO AMQP 0-9-1 client connection: the state a client keeps, with no I/O.

A gateway node in front of RabbitMQ speaks AMQP to it as a client. This module is that
client's protocol logic, in the shape of the server side (``session.py``) and of h11: the
caller feeds bytes read from the socket to ``receive_data``, takes events from
``next_event`` and writes ``data_to_send()`` to the socket; commands (declare, publish, ack,
...) only queue bytes. Time is the caller's too: it sends ``heartbeat()`` and closes a
connection that stayed silent. ``gateway.upstream`` is the trio driver on top.

What the state machine does itself:

- The handshake (spec 2.2.4): connection.start -> start-ok with PLAIN and the client
  capabilities RabbitMQ looks at (publisher confirms, consumer cancel notify,
  connection.blocked, basic.nack, authentication failure close); connection.tune ->
  tune-ok with channel-max and frame-max the smaller non-zero value of both sides and the
  heartbeat RabbitMQ's way (0 on one side means the other's value) -> connection.open of
  the vhost. ``ConnectionOpened`` ends it.
- Publisher confirms (RabbitMQ's extension): after confirm.select-ok a channel numbers its
  publishes from 1; a basic.ack or basic.nack with ``multiple`` settles every outstanding
  tag up to its own, and comes out as one ``Confirmed`` with the tags.
- Answering the server where the spec says the client must: channel.close and
  connection.close get their close-ok, channel.flow its flow-ok; after the client sent a
  close, frames for the closed channel (or connection) other than the close handshake are
  dropped, as the spec asks of a peer that sent a close.
- Everything else arrives as an event: replies to synchronous methods (``Reply``, in order
  per channel, which is how the driver pairs them with its requests), deliveries,
  returns, server-sent basic.cancel, connection.blocked and unblocked, and closes with
  their reply codes.

It does not choose channel numbers for the caller, retry, or reconnect: those are the
driver's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from pamqp import base, commands

from .client_codec import ClientCodec, ServerContent, build
from .frames import NEED_DATA, PROTOCOL_HEADER, Heartbeat, Method, NeedData, ProtocolError

Basic, Channel, Confirm = commands.Basic, commands.Channel, commands.Confirm
Connection, Exchange, Queue = commands.Connection, commands.Exchange, commands.Queue

REPLY_SUCCESS: Final = 200
CONNECTION_FORCED: Final = 320
ACCESS_REFUSED: Final = 403
NOT_FOUND: Final = 404
PRECONDITION_FAILED: Final = 406
FRAME_ERROR: Final = 501
UNEXPECTED_FRAME: Final = 505
NOT_IMPLEMENTED: Final = 540

CAPABILITIES: Final = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "basic.nack": True,
    "authentication_failure_close": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
}


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    """The handshake finished: the values in force for this connection."""

    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int  # seconds; 0: none


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """connection.close from the server (``by_server``) or the close-ok of ours."""

    reply_code: int
    reply_text: str
    by_server: bool
    class_id: int = 0
    method_id: int = 0


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """channel.close from the server (``by_server``; e.g. 404 on a passive declare) or
    the close-ok of ours; the channel number is free again."""

    channel: int
    reply_code: int
    reply_text: str
    by_server: bool
    class_id: int = 0
    method_id: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a synchronous method (queue.declare-ok, basic.consume-ok, ...)."""

    channel: int
    method: base.Frame


@dataclass(frozen=True, slots=True)
class Delivery:
    """A basic.deliver (or basic.get-ok, ``consumer_tag`` empty) with its content."""

    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: commands.Basic.Properties
    body: bytes


@dataclass(frozen=True, slots=True)
class Returned:
    """A basic.return: a mandatory publish that no queue took (312 NO_ROUTE)."""

    channel: int
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: commands.Basic.Properties
    body: bytes


@dataclass(frozen=True, slots=True)
class Confirmed:
    """basic.ack (``ack``) or basic.nack from the server for these publish delivery tags."""

    channel: int
    delivery_tags: tuple[int, ...]
    ack: bool


@dataclass(frozen=True, slots=True)
class ConsumerCancelled:
    """The server cancelled a consumer (its queue was deleted, or a quorum queue's leader
    moved and the consumer could not follow; RabbitMQ's consumer cancel notification)."""

    channel: int
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """connection.blocked: the server stopped reading publishes (a resource alarm)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked:
    pass


ClientEvent: TypeAlias = (
    ConnectionOpened | ConnectionClosed | ChannelOpened | ChannelClosed | Reply | Delivery
    | Returned | Confirmed | ConsumerCancelled | Blocked | Unblocked
)


class ClientError(Exception):
    """A command the connection's state does not allow (e.g. on a channel not open)."""


@dataclass
class _Channel:
    open: bool = False
    closing: bool = False  # we sent channel.close
    confirming: bool = False  # confirm.select-ok received
    confirm_requested: bool = False
    next_tag: int = 1  # delivery tag of the next publish, once confirming
    unconfirmed: dict[int, None] = field(default_factory=dict)  # ordered set


# -- the connection ----------------------------------------------------------------------


class ClientConnection:
    """One AMQP 0-9-1 client connection's protocol state."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        vhost: str = "/",
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        client_properties: dict[str, Any] | None = None,
        locale: str = "en_US",
    ) -> None:
        self.username = username
        self.password = password
        self.vhost = vhost
        self.locale = locale
        self._want = (channel_max, frame_max, heartbeat)
        properties: dict[str, Any] = {"product": "gateway",
                                      "information": "gateway upstream client"}
        properties.update(client_properties or {})
        properties["capabilities"] = dict(CAPABILITIES)
        self.client_properties = properties
        self.codec = ClientCodec()
        self.state = "new"  # -> handshake -> open -> closing -> closed
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.server_properties: dict[str, Any] = {}
        self.blocked: str | None = None
        self._out: list[bytes] = []
        self._channels: dict[int, _Channel] = {}

    # -- I/O surface ----------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the protocol header: the client speaks first (spec 4.2.2)."""
        if self.state != "new":
            raise ClientError("already initiated")
        self.state = "handshake"
        self._out.append(PROTOCOL_HEADER)

    def data_to_send(self) -> bytes:
        """Everything queued since the last call (possibly b"")."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes | bytearray) -> None:
        self.codec.receive_data(data)

    def next_event(self) -> ClientEvent | NeedData:
        """The next event, or ``NEED_DATA``. A violation by the server raises
        ``ProtocolError`` after queuing connection.close with its reply code."""
        while True:
            try:
                frame = self.codec.next_event()
            except ProtocolError as exc:
                if self.state not in ("closing", "closed"):
                    self._send(0, build(Connection.Close, reply_code=exc.code,
                                        reply_text=exc.text[:255], class_id=exc.class_id,
                                        method_id=exc.method_id))
                    self.state = "closing"
                raise
            if frame is NEED_DATA:
                return NEED_DATA
            if isinstance(frame, Heartbeat):
                continue
            event = self._handle(frame)
            if event is not None:
                return event

    def is_open(self, channel: int) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and ch.open and not ch.closing

    def unconfirmed(self, channel: int) -> list[int]:
        """Delivery tags published on ``channel`` that the server has not settled."""
        ch = self._channels.get(channel)
        return list(ch.unconfirmed) if ch is not None else []

    # -- incoming -------------------------------------------------------------------------

    def _handle(self, frame: Method | ServerContent) -> ClientEvent | None:
        if self.state == "closed":
            return None
        if isinstance(frame, ServerContent):
            return self._content(frame)
        channel, method = frame.channel, frame.method
        if channel == 0:
            return self._connection_method(method)
        ch = self._channels.get(channel)
        if isinstance(method, Channel.Close):
            self._send(channel, Channel.CloseOk())
            self._channels.pop(channel, None)
            return ChannelClosed(channel, method.reply_code or 0, method.reply_text or "", True,
                                 method.class_id or 0, method.method_id or 0)
        if isinstance(method, Channel.CloseOk):
            self._channels.pop(channel, None)
            return ChannelClosed(channel, REPLY_SUCCESS, "", False)
        if ch is None or self.state == "closing" or ch.closing:
            return None  # spec: discard frames for a channel being closed
        if isinstance(method, Channel.OpenOk):
            ch.open = True
            return ChannelOpened(channel)
        if isinstance(method, Basic.Ack | Basic.Nack):
            return self._settle(channel, ch, method.delivery_tag, method.multiple,
                                isinstance(method, Basic.Ack))
        if isinstance(method, Basic.Cancel):  # consumer cancel notification
            if not method.nowait:
                self._send(channel, build(Basic.CancelOk, consumer_tag=method.consumer_tag))
            return ConsumerCancelled(channel, method.consumer_tag or "")
        if isinstance(method, Channel.Flow):
            self._send(channel, Channel.FlowOk(active=method.active))
            return None
        if isinstance(method, Confirm.SelectOk):
            ch.confirming = True
        return Reply(channel, method)

    def _connection_method(self, method: base.Frame) -> ClientEvent | None:
        if isinstance(method, Connection.Close):
            self._send(0, Connection.CloseOk())
            self.state = "closed"
            self._channels.clear()
            return ConnectionClosed(method.reply_code or 0, method.reply_text or "", True,
                                    method.class_id or 0, method.method_id or 0)
        if isinstance(method, Connection.CloseOk):
            self.state = "closed"
            self._channels.clear()
            return ConnectionClosed(REPLY_SUCCESS, "", False)
        if self.state == "closing":
            return None
        if isinstance(method, Connection.Start):
            self._start(method)
            return None
        if isinstance(method, Connection.Tune):
            self._tune(method)
            return None
        if isinstance(method, Connection.OpenOk):
            self.state = "open"
            return ConnectionOpened(self.server_properties, self.channel_max, self.frame_max,
                                    self.heartbeat)
        if isinstance(method, Connection.Blocked):
            self.blocked = method.reason
            return Blocked(method.reason)
        if isinstance(method, Connection.Unblocked):
            self.blocked = None
            return Unblocked()
        self._fail(UNEXPECTED_FRAME, f"unexpected {method.name} on channel 0")
        return None

    def _start(self, method: commands.Connection.Start) -> None:
        if self.state != "handshake":
            self._fail(UNEXPECTED_FRAME, "connection.start after the handshake")
        self.server_properties = dict(method.server_properties or {})
        mechanisms = str(method.mechanisms or "").split()
        if "PLAIN" not in mechanisms:
            self._fail(ACCESS_REFUSED, f"server offers no PLAIN mechanism: {mechanisms}")
        response = f"\0{self.username}\0{self.password}"
        self._send(0, build(Connection.StartOk, client_properties=self.client_properties,
                            mechanism="PLAIN", response=response, locale=self.locale))

    def _tune(self, method: commands.Connection.Tune) -> None:
        channel_max, frame_max, heartbeat = self._want
        self.channel_max = _smaller_nonzero(channel_max, method.channel_max) or 65535
        self.frame_max = _smaller_nonzero(frame_max, method.frame_max) or 131072
        server_heartbeat = method.heartbeat
        self.heartbeat = (min(heartbeat, server_heartbeat) if heartbeat and server_heartbeat
                          else max(heartbeat, server_heartbeat))
        self.codec.frame_max = self.frame_max
        self._send(0, build(Connection.TuneOk, channel_max=self.channel_max,
                            frame_max=self.frame_max, heartbeat=self.heartbeat))
        self._send(0, build(Connection.Open, virtual_host=self.vhost))

    def _content(self, frame: ServerContent) -> ClientEvent | None:
        ch = self._channels.get(frame.channel)
        if ch is None or ch.closing or self.state == "closing":
            return None
        method = frame.method
        if isinstance(method, Basic.Return):
            return Returned(frame.channel, method.reply_code or 0, method.reply_text or "",
                            method.exchange or "", method.routing_key or "", frame.properties,
                            frame.body)
        tag = method.consumer_tag or "" if isinstance(method, Basic.Deliver) else ""
        return Delivery(frame.channel, tag, method.delivery_tag or 0, bool(method.redelivered),
                        method.exchange or "", method.routing_key or "", frame.properties,
                        frame.body)

    def _settle(self, channel: int, ch: _Channel, tag: int, multiple: bool,
                ack: bool) -> Confirmed:
        if multiple:
            tags = tuple(t for t in ch.unconfirmed if t <= tag)
        else:
            tags = (tag,) if tag in ch.unconfirmed else ()
        for t in tags:
            del ch.unconfirmed[t]
        return Confirmed(channel, tags, ack)

    def _fail(self, code: int, text: str) -> None:
        self._send(0, build(Connection.Close, reply_code=code, reply_text=text[:255],
                            class_id=0, method_id=0))
        self.state = "closing"
        raise ProtocolError(code, text)

    # -- outgoing: connection and channels ------------------------------------------------

    def _send(self, channel: int, method: base.Frame) -> None:
        self._out.append(self.codec.encode_method(channel, method))

    def send_method(self, channel: int, method: base.Frame) -> None:
        """Any method on an open channel (the typed helpers below cover the usual ones)."""
        self._require(channel)
        self._send(channel, method)

    def _require(self, channel: int) -> _Channel:
        if self.state != "open":
            raise ClientError(f"connection is {self.state}")
        ch = self._channels.get(channel)
        if ch is None or ch.closing:
            raise ClientError(f"channel {channel} is not open")
        return ch

    def heartbeat_frame(self) -> None:
        """Queue a heartbeat frame (the driver calls this every ``heartbeat / 2`` s)."""
        self._out.append(self.codec.encode_heartbeat())

    def close(self, reply_code: int = REPLY_SUCCESS, reply_text: str = "",
              class_id: int = 0, method_id: int = 0) -> None:
        """Queue connection.close; ``ConnectionClosed`` follows the server's close-ok."""
        if self.state in ("closing", "closed"):
            return
        self._send(0, build(Connection.Close, reply_code=reply_code,
                            reply_text=reply_text[:255], class_id=class_id,
                            method_id=method_id))
        self.state = "closing"

    def open_channel(self, channel: int) -> None:
        if self.state != "open":
            raise ClientError(f"connection is {self.state}")
        if not 0 < channel <= self.channel_max or channel in self._channels:
            raise ClientError(f"channel {channel} in use or out of range")
        self._channels[channel] = _Channel()
        self._send(channel, Channel.Open())

    def close_channel(self, channel: int, reply_code: int = REPLY_SUCCESS,
                      reply_text: str = "") -> None:
        ch = self._require(channel)
        ch.closing = True
        self._send(channel, build(Channel.Close, reply_code=reply_code,
                                  reply_text=reply_text[:255], class_id=0, method_id=0))

    # -- exchanges, queues, bindings -----------------------------------------------------

    def exchange_declare(self, channel: int, exchange: str, exchange_type: str = "direct", *,
                         passive: bool = False, durable: bool = False,
                         auto_delete: bool = False, internal: bool = False,
                         arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(
            Exchange.Declare, exchange=exchange, exchange_type=exchange_type, passive=passive,
            durable=durable, auto_delete=auto_delete, internal=internal, nowait=False,
            arguments=arguments or {}))

    def exchange_delete(self, channel: int, exchange: str, *, if_unused: bool = False) -> None:
        self.send_method(channel, build(Exchange.Delete, exchange=exchange,
                                        if_unused=if_unused, nowait=False))

    def exchange_bind(self, channel: int, destination: str, source: str, routing_key: str = "",
                      arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(Exchange.Bind, destination=destination, source=source,
                                        routing_key=routing_key, nowait=False,
                                        arguments=arguments or {}))

    def exchange_unbind(self, channel: int, destination: str, source: str,
                        routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(Exchange.Unbind, destination=destination,
                                        source=source, routing_key=routing_key, nowait=False,
                                        arguments=arguments or {}))

    def queue_declare(self, channel: int, queue: str = "", *, passive: bool = False,
                      durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False,
                      arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(
            Queue.Declare, queue=queue, passive=passive, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, nowait=False, arguments=arguments or {}))

    def queue_bind(self, channel: int, queue: str, exchange: str, routing_key: str = "",
                   arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(Queue.Bind, queue=queue, exchange=exchange,
                                        routing_key=routing_key, nowait=False,
                                        arguments=arguments or {}))

    def queue_unbind(self, channel: int, queue: str, exchange: str, routing_key: str = "",
                     arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(Queue.Unbind, queue=queue, exchange=exchange,
                                        routing_key=routing_key, arguments=arguments or {}))

    def queue_purge(self, channel: int, queue: str) -> None:
        self.send_method(channel, build(Queue.Purge, queue=queue, nowait=False))

    def queue_delete(self, channel: int, queue: str, *, if_unused: bool = False,
                     if_empty: bool = False) -> None:
        self.send_method(channel, build(Queue.Delete, queue=queue, if_unused=if_unused,
                                        if_empty=if_empty, nowait=False))

    # -- basic -------------------------------------------------------------------------

    def confirm_select(self, channel: int) -> None:
        """Publisher confirms on ``channel``: publishes are numbered from the select-ok."""
        ch = self._require(channel)
        if ch.confirm_requested:
            return
        ch.confirm_requested = True
        self._send(channel, build(Confirm.Select, nowait=False))

    def basic_qos(self, channel: int, prefetch_count: int, *, prefetch_size: int = 0,
                  global_: bool = False) -> None:
        self.send_method(channel, build(Basic.Qos, prefetch_size=prefetch_size,
                                        prefetch_count=prefetch_count, global_=global_))

    def basic_consume(self, channel: int, queue: str, consumer_tag: str = "", *,
                      no_ack: bool = False, exclusive: bool = False,
                      arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, build(Basic.Consume, queue=queue, consumer_tag=consumer_tag,
                                        no_local=False, no_ack=no_ack, exclusive=exclusive,
                                        nowait=False, arguments=arguments or {}))

    def basic_cancel(self, channel: int, consumer_tag: str) -> None:
        self.send_method(channel, build(Basic.Cancel, consumer_tag=consumer_tag, nowait=False))

    def basic_get(self, channel: int, queue: str, *, no_ack: bool = False) -> None:
        self.send_method(channel, build(Basic.Get, queue=queue, no_ack=no_ack))

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                properties: commands.Basic.Properties | None = None, *,
                mandatory: bool = False) -> int:
        """Queue a basic.publish; its delivery tag if the channel confirms, else 0."""
        ch = self._require(channel)
        if ch.confirm_requested and not ch.confirming:
            raise ClientError("publish before confirm.select-ok")
        data = self.codec.encode_publish(
            channel, exchange, routing_key, body,
            properties if properties is not None else commands.Basic.Properties(),
            mandatory=mandatory)
        self._out.append(data)
        if not ch.confirming:
            return 0
        tag = ch.next_tag
        ch.next_tag += 1
        ch.unconfirmed[tag] = None
        return tag

    def ack(self, channel: int, delivery_tag: int, *, multiple: bool = False) -> None:
        self.send_method(channel, build(Basic.Ack, delivery_tag=delivery_tag,
                                        multiple=multiple))

    def nack(self, channel: int, delivery_tag: int, *, multiple: bool = False,
             requeue: bool = True) -> None:
        self.send_method(channel, build(Basic.Nack, delivery_tag=delivery_tag,
                                        multiple=multiple, requeue=requeue))

    def reject(self, channel: int, delivery_tag: int, *, requeue: bool = True) -> None:
        self.send_method(channel, build(Basic.Reject, delivery_tag=delivery_tag,
                                        requeue=requeue))

    def recover(self, channel: int, *, requeue: bool = True) -> None:
        self.send_method(channel, build(Basic.Recover, requeue=requeue))

    def channels(self) -> Iterable[int]:
        return list(self._channels)


def _smaller_nonzero(a: int, b: int) -> int:
    """Spec 2.2.4 negotiation of limits: 0 means "no limit" on that side."""
    if a and b:
        return min(a, b)
    return a or b
