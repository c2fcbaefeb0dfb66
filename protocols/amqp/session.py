"""One AMQP 0-9-1 connection's state machine: frames in -> core calls, deliveries -> frames.

Theory of operation
-------------------
The server feeds received bytes to `receive_data`; the codec turns them into events, and
each event is handled to completion, synchronously, against the core. Everything the
connection must send is appended to an outbound buffer that the server's writer task
drains (`data_to_send`); `wake` tells it there is something new when output was produced
by another connection's publish. No I/O and no awaits happen here.

The connection's and each channel's states, the frames each state takes and where they lead
are `machine.py`'s tables (`ConnectionMachine`, `ChannelMachine`); every frame is put to
them first, and only what they accept is handled here. A `BrokerError` from the core or
auth closes the channel (soft codes) or the connection (hard codes) with its reply code and
text, and only that: the broker and every other client go on.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import base, commands

import gateway
from gateway.core.errors import (
    BrokerError,
    NotAllowed,
    NotImplementedFeature,
    PreconditionFailed,
    ReplyCode,
)
from gateway.core.message import Message
from gateway.info import ConnectionInfo
from protocols.admission import Admit, AdmitChannel, admit_all, admit_any_channel
from protocols.amqp import handlers
from protocols.amqp.channel import Channel
from protocols.amqp.codec import AMQPCodec
from protocols.amqp.frames import (
    NEED_DATA,
    PROTOCOL_HEADER,
    BadProtocolHeader,
    Content,
    Heartbeat,
    Method,
    OversizeContent,
    ProtocolError,
    ProtocolHeaderReceived,
)
from protocols.amqp.machine import (
    CHANNEL_FRAME,
    CONTENT,
    ChannelLocal,
    ChannelMachine,
    ChannelState,
    ConnectionMachine,
    Local,
    State,
)
from protocols.amqp.mapping import encoded_properties, parse_credentials
from protocols.outbox import Outbox

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, LoginRefused, User
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost
    from protocols.tls import TLSPeer

log = logging.getLogger("gateway.amqp")


Ch = commands.Channel
__all__ = ["AMQPSession", "State", "reply_text"]


def reply_text(err: BrokerError) -> str:
    prefix = f"{err.code.name} - "
    return err.text if err.text.startswith(prefix) else prefix + err.text


class AMQPSession(Outbox):
    protocol_name = "AMQP 0-9-1"  # as the management API lists connections

    def __init__(
        self,
        broker: Broker,
        auth: AuthService,
        *,
        peer: tuple[str, int],
        loopback: bool,
        clock: Callable[[], float],
        wake: Callable[[], None] = lambda: None,
        frame_max: int = 131072,
        channel_max: int = 2047,
        heartbeat: int = 60,
        max_message_size: int = 128 * 1024 * 1024,
        high_water: int = 1024 * 1024,
        tls: TLSPeer | None = None,
        admit: Admit = admit_all,
        consumer_max: int = 0,
        admit_channel: AdmitChannel = admit_any_channel,
        consumer_timeout: int = 1_800_000,
    ) -> None:
        self.id = broker.next_connection_id()  # unique among the broker's connections
        self.admit = admit
        self.admit_channel = admit_channel
        self.consumer_max = consumer_max  # per channel, 0 = no limit
        self.consumer_timeout = consumer_timeout  # ms, 0 = none; queues may set their own
        self.broker = broker
        self.auth = auth
        self.peer = peer
        self.loopback = loopback
        self.tls = tls
        self.clock = clock
        self.wake = wake
        self.codec = AMQPCodec(frame_max=frame_max, max_message_size=max_message_size)
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.high_water = high_water
        self.machine = ConnectionMachine()
        self.channels: dict[int, Channel] = {}
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self.client_properties: dict[str, Any] = {}
        self.cancel_notify = False
        self.last_recv = clock()
        self.init_outbox()
        self.close_reason: str | None = None
        self._confirm_channels: set[Channel] = set()
        self._mechanism = "PLAIN"
        self.alarm = False  # the broker is over its memory high-watermark
        self.read_paused = False  # blocked: published while the alarm was on
        self.blocked_notify = False
        # a slow password check the I/O layer runs in a thread; input waits meanwhile
        self.password_check: PendingCheck | None = None

    # -- I/O boundary ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def closed(self) -> bool:
        return self.machine.state is State.CLOSED

    def info(self) -> ConnectionInfo:
        """This connection and its channels as management shows them."""
        return ConnectionInfo(
            self.protocol_name, "amqp", self.peer,
            self.user.name if self.user is not None else None,
            self.vhost.name if self.vhost is not None else None, self.closed,
            self.client_properties, self.heartbeat, self.frame_max, self.channel_max,
            self._mechanism, self.tls.info() if self.tls is not None else None,
            self.pending_output, self.read_paused,
            tuple(ch.info() for _, ch in sorted(self.channels.items())))

    @property
    def authenticated(self) -> bool:
        """Logged in with a vhost open (the handshake limits no longer apply)."""
        return self.vhost is not None

    def credit_returned(self) -> None:
        now = self.clock()
        for ch in list(self.channels.values()):
            ch.kick(now)

    def send_method(self, channel: int, method: base.Frame) -> None:
        self.emit(self.codec.encode_method(channel, method))

    def send_content(self, channel: int, method: base.Frame, message: Message) -> None:
        self.emit(self.codec.encode_content(channel, method, encoded_properties(message),
                                             message.body))

    def send_delivery(self, channel: int, consumer_tag: str, delivery_tag: int,
                      redelivered: bool, message: Message) -> None:
        self.emit(self.codec.encode_delivery(
            channel, consumer_tag, delivery_tag, redelivered, message.exchange,
            message.routing_key, encoded_properties(message), message.body))

    def receive_data(self, data: bytes | bytearray) -> None:
        if self.closed:
            return
        self.last_recv = self.clock()
        codec = self.codec
        codec.receive_data(data)
        next_event = codec.next_event
        while not self.closed and self.password_check is None:
            try:
                event = next_event()
            except BadProtocolHeader:
                self.emit(PROTOCOL_HEADER)
                self._finish()
                break
            except ProtocolError as exc:
                self.close_connection(exc.code, f"{ReplyCode(exc.code).name} - {exc.text}",
                                      exc.class_id, exc.method_id)
                self._finish_after_close()
                break
            if event is NEED_DATA:
                break
            try:
                if type(event) is Content:  # the per-message path, first
                    self._on_content(event)
                else:
                    self._handle(event)
            except BrokerError as err:
                self.close_connection(err.code, reply_text(err))
        self.flush_confirms()

    def timer(self, now: float) -> None:
        """Heartbeats: send one when idle for half the interval; give up after two missed.
        Consumer timeouts: a channel whose oldest unacknowledged delivery is older than its
        queue's timeout is closed with 406, as RabbitMQ's channel tick does."""
        machine = self.machine
        if machine.allows(Local.CHANNEL_TIMERS):
            for ch in list(self.channels.values()):
                timeout = ch.timed_out(now, self.consumer_timeout)
                if timeout is not None and ch.machine.allows(ChannelLocal.SEND_CLOSE):
                    self.close_channel(ch, PreconditionFailed(
                        f"PRECONDITION_FAILED - delivery acknowledgement on channel "
                        f"{ch.number} timed out. Timeout value used: {timeout} ms. This "
                        "timeout value can be configured, see consumers doc guide to learn "
                        "more"), 0, 0)
        if not self.heartbeat or not machine.allows(Local.HEARTBEAT):
            return
        if self.read_paused:
            self.last_recv = now  # blocked by the memory alarm: we are the ones not reading
        if now - self.last_recv > 2 * self.heartbeat:
            log.info("connection %s: missed heartbeats from client, closing", self.name)
            self.close_reason = "missed heartbeats"
            self._finish()
            return
        if now - self.last_send >= self.heartbeat / 2:
            self.emit(self.codec.encode_heartbeat())
            self.last_send = now

    def connection_lost(self) -> None:
        """The socket is gone: release every channel and the exclusive queues."""
        self._release_all()
        self.machine.process(Local.FINISH)

    def shutdown(self, text: str = "CONNECTION_FORCED - broker shutdown") -> None:
        target = self.machine.target(Local.SHUTDOWN)
        if target is State.CLOSING:
            self.close_connection(ReplyCode.CONNECTION_FORCED, text)
        elif target is State.CLOSED:
            self._finish()

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    # -- closing ---------------------------------------------------------------------------

    def close_connection(self, code: int, text: str, class_id: int = 0,
                         method_id: int = 0) -> None:
        if not self.machine.allows(Local.SEND_CLOSE):
            return
        self.send_method(0, commands.Connection.Close(int(code), text[:255], class_id,
                                                      method_id))
        self.close_reason = text
        self._release_all()
        self.machine.process(Local.SEND_CLOSE)

    def _finish_after_close(self) -> None:
        """After a protocol error the codec is broken: stop reading, close when flushed."""
        self.machine.process(Local.FINISH)

    def _finish(self) -> None:
        self._release_all()
        self.machine.process(Local.FINISH)

    def _release_all(self) -> None:
        now = self.clock()
        for ch in list(self.channels.values()):
            ch.machine.process(ChannelLocal.RELEASE)
            ch.release(now)
        self.channels.clear()
        self._confirm_channels.clear()
        if self.vhost is not None:
            self.vhost.connection_closed(self)

    def close_channel(self, ch: Channel, err: BrokerError, class_id: int,
                      method_id: int) -> None:
        ch.machine.process(ChannelLocal.SEND_CLOSE)
        ch.release(self.clock())
        self._confirm_channels.discard(ch)
        self.send_method(ch.number, commands.Channel.Close(int(err.code), reply_text(err)[:255],
                                                          class_id, method_id))

    # -- event dispatch --------------------------------------------------------------------

    def _handle(self, event: object) -> None:
        if isinstance(event, Content):
            self._on_content(event)
        elif isinstance(event, Method):
            self._on_method(event.channel, event.method)
        elif isinstance(event, Heartbeat):
            pass
        elif isinstance(event, ProtocolHeaderReceived):
            if self.machine.process(ProtocolHeaderReceived):
                self._on_header()
        elif isinstance(event, OversizeContent):
            ch = self._channel_for(event.channel, CONTENT)
            if ch is not None:
                self.close_channel(ch, PreconditionFailed(
                    f"PRECONDITION_FAILED - message size {event.size} is larger than "
                    f"configured max size {self.max_message_size}"), 60, 40)

    def _on_header(self) -> None:
        caps = {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        }
        props: dict[str, Any] = {
            "product": "gateway",
            "version": gateway.__version__,
            "platform": f"Python {platform.python_version()}",
            "cluster_name": "gateway",
            "copyright": "gateway contributors",
            "information": "Multi-protocol message broker",
            "capabilities": caps,
        }
        # EXTERNAL (RabbitMQ's rabbitmq_auth_mechanism_ssl) only where a verified client
        # certificate names a user, as RabbitMQ offers it only with a peer certificate
        mechanisms = "PLAIN AMQPLAIN EXTERNAL" if self._cert_user() else "PLAIN AMQPLAIN"
        self.send_method(0, commands.Connection.Start(0, 9, props, mechanisms, "en_US"))

    def _channel_for(self, number: int, event: Any) -> Channel | None:
        """The channel a frame on `number` goes to, when the connection's and the
        channel's machines accept it; None when they discard it (closing)."""
        machine = self.machine
        if CHANNEL_FRAME not in machine.steady and not machine.process(CHANNEL_FRAME):
            return None
        ch = self.channels.get(number)
        if ch is None:
            ChannelMachine().process(event)  # raises 504: no channel.open before it
            return None
        if event not in ch.machine.steady and not ch.machine.process(event):
            return None
        return ch

    def _on_method(self, number: int, method: base.Frame) -> None:
        kind = type(method)
        if number == 0:
            before = self.machine.state
            if self.machine.process(kind):
                self._on_connection_method(method, before)
            return
        machine = self.machine
        if CHANNEL_FRAME not in machine.steady and not machine.process(CHANNEL_FRAME):
            return  # closing: discarded
        ch = self.channels.get(number)
        if ch is None:
            self._open_channel(number, kind)
            return
        chm = ch.machine
        if kind not in chm.steady:
            if not chm.process(kind):
                return  # closing: discarded until close-ok (spec 2.3.6)
            if chm.state is ChannelState.CLOSED:  # channel.close, or close-ok to ours
                del self.channels[number]
                # its unsent confirms die with it, as in RabbitMQ: the number may be
                # opened again for a channel that published nothing
                self._confirm_channels.discard(ch)
                if kind is Ch.Close:
                    ch.release(self.clock())
                    self.send_method(number, Ch.CloseOk())
                return
        try:
            handlers.TABLE[kind](self, ch, method)
        except BrokerError as err:
            if err.hard:
                raise
            self.close_channel(ch, err, *_ids_of(method))

    def _open_channel(self, number: int, kind: type) -> None:
        machine = ChannelMachine()
        machine.process(kind)  # 504 unless it is channel.open
        if number > self.channel_max:
            raise NotAllowed(f"NOT_ALLOWED - channel number {number} is above the "
                             f"negotiated channel_max {self.channel_max}")
        if self.user is not None:  # the user's max-channels (connection.close 530)
            self.admit_channel(self, self.user.name)
        self.channels[number] = Channel(self, number, machine)
        self.send_method(number, Ch.OpenOk())

    def memory_alarm(self, on: bool) -> None:
        """The broker went over (or back under) its memory high-watermark. As in
        RabbitMQ, a connection is blocked (not read) once it publishes during the alarm,
        and told so with connection.blocked if it asked for that capability."""
        if on == self.alarm:
            return
        self.alarm = on
        if not self.machine.allows(Local.BLOCK):
            self.read_paused = False
            return
        if on:
            if self.blocked_notify:
                self.send_method(0, commands.Connection.Blocked("low on memory"))
        else:
            self.read_paused = False
            if self.blocked_notify:
                self.send_method(0, commands.Connection.Unblocked())

    def _on_content(self, event: Content) -> None:
        if self.alarm:
            self.read_paused = True
        machine = self.machine
        if CHANNEL_FRAME not in machine.steady and not machine.process(CHANNEL_FRAME):
            return
        ch = self.channels.get(event.channel)
        if ch is None:
            ChannelMachine().process(CONTENT)  # raises 504: no channel.open before it
            return
        if CONTENT not in ch.machine.steady and not ch.machine.process(CONTENT):
            return  # closing: discarded
        try:
            handlers.publish(self, ch, event.method, event.properties, event.body,
                             event.raw_properties)
        except BrokerError as err:
            if err.hard:
                raise
            self.close_channel(ch, err, 60, 40)

    # -- connection class ------------------------------------------------------------------

    def _on_connection_method(self, method: base.Frame, before: State) -> None:
        """A channel-0 method its state accepted (the machine has moved on already;
        `before` is the state it arrived in)."""
        C = commands.Connection
        if isinstance(method, C.StartOk):
            self._on_start_ok(method)
        elif isinstance(method, C.TuneOk):
            self._on_tune_ok(method)
        elif isinstance(method, C.Open):
            self._on_open(method)
        elif isinstance(method, C.Close):
            self.send_method(0, C.CloseOk())
            if before is not State.CLOSING:
                self._finish()
        elif isinstance(method, C.CloseOk):
            if before is not State.CLOSING:
                self._finish()
        elif isinstance(method, C.UpdateSecret):
            self.send_method(0, C.UpdateSecretOk())

    def _on_start_ok(self, m: commands.Connection.StartOk) -> None:
        self.client_properties = dict(m.client_properties or {})
        caps = self.client_properties.get("capabilities")
        self.cancel_notify = isinstance(caps, dict) and bool(
            caps.get("consumer_cancel_notify"))
        self.blocked_notify = isinstance(caps, dict) and bool(caps.get("connection.blocked"))
        self._mechanism = m.mechanism or "PLAIN"
        response = m.response
        raw = response.encode("latin-1") if isinstance(response, str) else bytes(response)
        try:
            cert_user = self._cert_user()
            if self._mechanism == "EXTERNAL" and cert_user is not None:
                # the certificate is the credential; the response (pika sends "") is unused
                self._logged_in(self.auth.authenticate_certificate(cert_user,
                                                                   loopback=self.loopback))
                return
            login, password = parse_credentials(self._mechanism, raw)
        except BrokerError as err:
            log.info("connection %s: login refused: %s", self.name,
                     getattr(err, "reason", err.text))
            self.close_connection(ReplyCode.ACCESS_REFUSED, reply_text(err))
            return
        self.password_check = self.auth.login(
            login, password, peer=self.peer[0], loopback=self.loopback, protocol="AMQP",
            mechanism=self._mechanism, now=self.clock(), then=self._logged_in)

    def _logged_in(self, result: User | LoginRefused) -> None:
        if not self.machine.allows(Local.LOGGED_IN):
            return  # closed meanwhile
        if isinstance(result, BrokerError):
            self.close_connection(ReplyCode.ACCESS_REFUSED, reply_text(result))
            return
        self.user = result
        self.send_method(0, commands.Connection.Tune(self.channel_max, self.frame_max,
                                                     self.heartbeat))
        self.machine.process(Local.LOGGED_IN)

    def _cert_user(self) -> str | None:
        return self.tls.cert_user if self.tls is not None else None

    def resume_input(self) -> None:
        """A password check finished: handle the input that waited for it."""
        self.receive_data(b"")

    def _on_tune_ok(self, m: commands.Connection.TuneOk) -> None:
        if m.frame_max and m.frame_max < 4096:
            raise BrokerError(f"NOT_ALLOWED - frame_max={m.frame_max} < 4096 min size",
                              ReplyCode.NOT_ALLOWED)
        if m.frame_max > self.frame_max:
            raise BrokerError(f"NOT_ALLOWED - frame_max={m.frame_max} > {self.frame_max} "
                              "max size", ReplyCode.NOT_ALLOWED)
        frame_max = m.frame_max or self.frame_max
        self.frame_max = frame_max
        self.codec.frame_max = frame_max
        if m.channel_max:
            self.channel_max = min(self.channel_max, m.channel_max)
        self.heartbeat = m.heartbeat

    def _on_open(self, m: commands.Connection.Open) -> None:
        assert self.user is not None
        name = m.virtual_host or "/"
        self.auth.check_vhost(self.user, name)
        self.admit(self, self.user.name, name)  # NotAllowed: connection.close 530
        self.vhost = self.broker.vhost(name)
        self.send_method(0, commands.Connection.OpenOk())
        if self.alarm and self.blocked_notify:
            self.send_method(0, commands.Connection.Blocked("low on memory"))

    # -- confirms --------------------------------------------------------------------------

    def confirm_channel(self, ch: Channel) -> None:
        self._confirm_channels.add(ch)

    def flush_confirms(self) -> None:
        """Send the confirms whose messages are durable, coalesced with `multiple`."""
        if not self._confirm_channels:
            return
        for ch in list(self._confirm_channels):
            last_ack = 0
            for seq in ch.confirms.confirm():
                if seq > 0:
                    last_ack = seq
                else:
                    if last_ack:
                        self.send_method(ch.number, commands.Basic.Ack(last_ack, True))
                        last_ack = 0
                    self.send_method(ch.number, commands.Basic.Nack(-seq, False, False))
            if last_ack:
                self.send_method(ch.number, commands.Basic.Ack(last_ack, True))

    def ensure_supported(self, feature: bool, text: str) -> None:
        if not feature:
            raise NotImplementedFeature(text)


def _ids_of(method: base.Frame) -> tuple[int, int]:
    index = getattr(method, "index", 0)
    return index >> 16, index & 0xFFFF
