"""One MQTT connection over the core: packets in -> core calls, deliveries -> packets out.

Theory of operation
-------------------
The server feeds bytes to `receive_data`; the codec turns them into packets, each handled
to completion against the core (``connect.py`` handles CONNECT, ``handlers.py`` has one
function per later packet type; its `TABLE` is the table of contents). Output is appended
to a buffer the writer task drains (`data_to_send`). Nothing here awaits or touches a
socket; time comes from `clock`.

The connection's state machine is ``machine.py``: which packets each state takes, and
which events move it. This module looks every packet up in it and tells it every decision:

    CONNECT_WAIT --CONNECT accepted--> CONNECTED --DISCONNECT / error / lost--> CLOSED
    CONNECT_WAIT --anything else, or CONNECT refused--> CLOSED
    CONNECT_WAIT --slow password check--> AUTHENTICATING --its answer--> CONNECTED or CLOSED
    CONNECTED --our DISCONNECT (MQTT 5)--> CLOSING --a moment later--> CLOSED

The first packet must be CONNECT and a second one is a protocol error [MQTT-3.1.0-1,
MQTT-3.1.0-2]. A protocol error closes this connection only (MQTT 5: after a DISCONNECT
with its reason code [MQTT-4.13.1-1]); the will is published unless the client sent a
DISCONNECT other than 0x04 "with will message" [MQTT-3.1.2-8, MQTT-3.14.4-3]. Keepalive:
a client silent for one and a half keepalive periods is disconnected [MQTT-3.1.2-24].

Sessions (``session_state.py``, kept by the broker's ``registry.py``): a clean session
(3.1.1 clean session, 5.0 session expiry 0) ends with its connection and its queue is
deleted; a persistent one keeps its durable queue (`x-expires` = session expiry) and its
state; a CONNECT with the client id of a connected client takes the session over: the old
connection gets DISCONNECT 0x8E and is closed [MQTT-3.1.4-3].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.core.confirms import Confirms
from gateway.core.errors import BrokerError
from gateway.info import ConnectionInfo
from protocols.admission import Admit, admit_all
from protocols.mqtt import connect, handlers
from protocols.mqtt.codec import MQTTCodec, encode_packet
from protocols.mqtt.connection import ReplyTopics, SessionConsumer, TopicAliases
from protocols.mqtt.delivery import kick
from protocols.mqtt.frames import (
    MQTT_5,
    NEED_DATA,
    NO_PROPERTIES,
    Connect,
    Disconnect,
    Packet,
    Properties,
    ProtocolError,
    PubAck,
    ReasonCode,
    Will,
)
from protocols.mqtt.machine import (
    DROPPING,
    HANDSHAKE,
    READING,
    RECEIVES,
    ConnectionMachine,
    ConnState,
    Local,
)
from protocols.mqtt.registry import MQTTRegistry
from protocols.mqtt.session_state import SessionState
from protocols.outbox import Outbox

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, User
    from gateway.config import MQTTConfig
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost
    from protocols.tls import TLSPeer

log = logging.getLogger("gateway.mqtt")
CONNECT_TIMEOUT = 10.0  # seconds a new connection has to send CONNECT (limits.handshake_timeout)
LINGER = 1.0  # seconds input is still read (and dropped) after a server DISCONNECT

_HANDLERS: dict[type, handlers.Handler] = {Connect: connect.connect, **handlers.TABLE}
# for each state, the handler of each packet it takes: the machine's `RECEIVES` joined with
# the handlers, so a packet costs one lookup; a packet not found is refused by the machine
DISPATCH: dict[ConnState, dict[type, handlers.Handler]] = {
    state: {kind: _HANDLERS[kind] for kind in kinds} for state, kinds in RECEIVES.items()
}


class MQTTSession(Outbox):
    # slots, not a __dict__: past 30 attributes an instance dict costs 1.5 KiB, and an idle
    # broker holds one session per connection
    __slots__ = (
        "_key", "_linger_until", "_out", "_out_size", "output_blocked", "last_send",
        "admit", "alarm", "aliases", "auth", "broker", "cert_user", "client_alias_maximum",
        "client_id", "client_max_packet", "client_receive_maximum", "clock", "codec", "config",
        "connect_timeout", "consumer", "high_water", "inbound_qos1", "keepalive", "last_recv",
        "loopback", "loopback_users", "machine", "password_check", "peer", "pending_acks",
        "read_paused", "registry", "replies", "shared_consumers", "st", "started", "tls",
        "user", "vhost", "wake", "will",
    )

    def __init__(
        self,
        broker: Broker,
        auth: AuthService,
        config: MQTTConfig,
        *,
        registry: MQTTRegistry,
        peer: tuple[str, int],
        loopback: bool,
        loopback_users: frozenset[str] = frozenset(),
        clock: Callable[[], float],
        wake: Callable[[], None] = lambda: None,
        high_water: int = 1024 * 1024,
        tls: TLSPeer | None = None,
        admit: Admit = admit_all,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.broker = broker
        self.admit = admit
        self.connect_timeout = connect_timeout
        self.auth = auth
        self.config = config
        self.peer = peer
        self.loopback = loopback
        self.loopback_users = loopback_users
        self.tls = tls
        # a CONNECT without user name is the verified certificate's CN (ssl_cert_login)
        self.cert_user = tls.cert_user if tls is not None and config.ssl_cert_login else None
        self.clock = clock
        self.wake = wake
        self.high_water = high_water
        self.init_outbox()
        self.codec = MQTTCodec(max_packet_size=config.max_packet_size)
        self.registry = registry  # the broker's session states and retained messages
        self.machine = ConnectionMachine()
        self.user: User | None = None
        # a slow password check the I/O layer runs in a thread; input waits meanwhile
        self.password_check: PendingCheck | None = None
        self.vhost: VirtualHost | None = None
        self.client_id = ""
        self.st: SessionState | None = None  # the MQTT session, once CONNECTed
        self.consumer: SessionConsumer | None = None
        self.shared_consumers: dict[str, SessionConsumer] = {}
        self.will: Will | None = None
        self.keepalive = 0
        self.started = clock()
        self.last_recv = self.started
        # what the client told us about itself (MQTT 5 CONNECT properties)
        self.client_receive_maximum = 65535
        self.client_max_packet: int | None = None
        self.client_alias_maximum = 0  # 0: we send no topic aliases
        self.aliases = TopicAliases()
        # output waiting for the store, in order, each packet (or its bytes) with the store
        # position it waits for: QoS 1/2 acknowledgements, and a persistent session's QoS 2
        # PUBLISH and PUBREL
        self.pending_acks: Confirms[Packet | bytes] = Confirms(broker.durable, self)
        self.inbound_qos1 = 0  # QoS 1 PUBLISHes received whose PUBACK is not sent yet
        self.replies = ReplyTopics()
        self.alarm = False
        self.read_paused = False
        self._linger_until = 0.0
        self._key: tuple[str, str] | None = None

    # -- I/O boundary ----------------------------------------------------------------------

    @property
    def state(self) -> ConnState:
        return self.machine.state

    @property
    def version(self) -> int | None:
        return self.codec.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost.name if self.vhost else "", self.client_id)

    @property
    def key_cached(self) -> tuple[str, str]:
        """`key`, built once the session is connected (it no longer changes then)."""
        k = self._key
        if k is None or k[1] != self.client_id:
            k = self._key = self.key
        return k

    @property
    def authenticated(self) -> bool:
        """Logged in with a vhost open (the handshake limits no longer apply)."""
        return self.vhost is not None

    @property
    def closed(self) -> bool:
        return self.machine.state is ConnState.CLOSED

    @property
    def protocol_name(self) -> str:
        """As the management API lists connections (RabbitMQ: "MQTT 3.1.1")."""
        return {3: "MQTT 3.1", 4: "MQTT 3.1.1", 5: "MQTT 5.0"}.get(self.version or 4, "MQTT")

    @property
    def client_properties(self) -> dict[str, str]:
        return {"client_id": self.client_id} if self.client_id else {}

    @property
    def heartbeat(self) -> int:
        return self.keepalive

    def info(self) -> ConnectionInfo:
        """This connection as management shows it."""
        return ConnectionInfo(
            self.protocol_name, "mqtt", self.peer,
            self.user.name if self.user is not None else None,
            self.vhost.name if self.vhost is not None else None, self.closed,
            self.client_properties, self.heartbeat,
            tls=self.tls.info() if self.tls is not None else None,
            pending_output=self.pending_output, blocked=self.read_paused)

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]} ({self.client_id or '-'})"

    def credit_returned(self) -> None:
        if self.machine.state is ConnState.CONNECTED:
            kick(self)

    def send(self, packet: Packet) -> None:
        self.emit(encode_packet(packet, self.version or 4))

    def receive_data(self, data: bytes | bytearray) -> None:
        machine = self.machine
        if machine.state in DROPPING:
            return
        self.last_recv = self.clock()
        self.codec.receive_data(data)
        # only CONNECT_WAIT and CONNECTED handle packets: AUTHENTICATING keeps them for
        # later, and after our DISCONNECT (CLOSING) the rest of the read is dropped
        while machine.state in READING:
            try:
                packet = self.codec.next_event()
            except ProtocolError as exc:
                self._protocol_error(exc)
                break
            if packet is NEED_DATA:
                break
            try:
                handler = DISPATCH[machine.state].get(type(packet))
                if handler is None:
                    machine.apply(type(packet))  # not taken in this state: raises
                    continue
                handler(self, packet)
            except ProtocolError as exc:
                self._protocol_error(exc)
            except BrokerError as err:
                log.info("connection %s: %s", self.name, err.text)
                self.close(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, err.text)
        self.flush_confirms()

    def resume_input(self) -> None:
        """A password check finished: handle the input that waited for it."""
        self.receive_data(b"")

    def _protocol_error(self, exc: ProtocolError) -> None:
        log.info("connection %s: %s: %s", self.name, exc.reason.name, exc.text)
        if self.machine.state in HANDSHAKE:
            if exc.reason is ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # [MQTT-3.1.2-2]: CONNACK 0x01 in 3.1.1's format, then close
                self.emit(b"\x20\x02\x00\x01")
            self.transition(Local.REFUSE)
            return
        self.close(exc.reason, exc.text)

    def transition(self, event: Local, *, publish_will: bool = False) -> None:
        """Tell the state machine what happened. Leaving CONNECTED ends the MQTT session:
        detached from the core, kept or discarded, its will published if `publish_will`."""
        if self.machine.apply(event) is ConnState.CONNECTED:
            connect.end(self, publish_will=publish_will)

    def timer(self, now: float) -> None:
        state = self.machine.state
        if state is ConnState.CLOSING:
            if now >= self._linger_until:
                self.transition(Local.LINGER_OVER)
            return
        if state in HANDSHAKE:
            if now - self.started > self.connect_timeout:
                self.transition(Local.REFUSE)
            return
        if self.read_paused:
            self.last_recv = now  # paused by the memory alarm: we are the ones not reading
        if state is ConnState.CONNECTED and self.keepalive and (
                now - self.last_recv > 1.5 * self.keepalive):
            log.info("connection %s: keepalive timeout", self.name)
            self.close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keepalive timeout")

    def connection_lost(self) -> None:
        self.transition(Local.CLOSE, publish_will=True)

    def shutdown(self) -> None:
        if self.machine.state is ConnState.CONNECTED:
            self.close(ReasonCode.SERVER_SHUTTING_DOWN, "broker shutdown", will=False)
        self.transition(Local.CLOSE)

    def memory_alarm(self, on: bool) -> None:
        """Over the memory high-watermark a publishing client is not read any more."""
        self.alarm = on
        if not on:
            self.read_paused = False

    # -- closing ---------------------------------------------------------------------------

    def close(self, reason: ReasonCode, text: str = "", *, will: bool = True) -> None:
        """Server-side close: DISCONNECT with a reason code (MQTT 5), then the session
        ends as after a lost connection."""
        state = self.machine.state
        if state in DROPPING:
            return
        if self.version == MQTT_5 and state is ConnState.CONNECTED:
            props = Properties(reason_string=text[:200]) if text else NO_PROPERTIES
            self.send(Disconnect(int(reason), props))
            # the client may still be sending: reading on for a moment lets it read our
            # DISCONNECT instead of a connection reset
            self._linger_until = self.clock() + LINGER
            self.transition(Local.DISCONNECT_SENT, publish_will=will)
            return
        self.transition(Local.CLOSE, publish_will=will)

    def taken_over(self, elsewhere: bool = False) -> None:
        """Another connection CONNECTed with this client id [MQTT-3.1.4-3]. From another
        gateway node (`elsewhere`): a will with a delay is dropped, as that reconnect
        cancels it [MQTT-3.1.3-9]; an immediate one is published; and the writer is woken,
        as no input of this node's did it."""
        will = self.will
        if elsewhere and will is not None and (will.properties.will_delay_interval or 0) > 0:
            self.will = None
        self.close(ReasonCode.SESSION_TAKEN_OVER, "session taken over")
        if elsewhere:
            self.wake()

    # -- output that waits for the store ---------------------------------------------------

    def flush_confirms(self) -> None:
        """Send what waited for the store (PUBACK/PUBREC of messages it has made durable,
        QoS 2 PUBLISH/PUBREL whose records it has), in order."""
        pending = self.pending_acks
        if not pending or self.machine.state is not ConnState.CONNECTED:
            return
        for packet in pending.confirm():
            if isinstance(packet, bytes):
                self.emit(packet)
                continue
            if isinstance(packet, PubAck):
                self.inbound_qos1 -= 1
            self.send(packet)

    def send_when_durable(self, position: int, item: Packet | bytes) -> None:
        """Send a packet (or its bytes) once the store has made `position` durable, after
        whatever waits before it."""
        if not self.pending_acks and self.broker.durable.is_durable(position):
            if isinstance(item, bytes):
                self.emit(item)
            else:
                self.send(item)
        else:
            self.pending_acks.insert(position, item)

    def inbound_inflight(self) -> int:
        """QoS 1/2 PUBLISHes from the client not yet acknowledged (PUBACK / PUBCOMP)."""
        st = self.st
        return self.inbound_qos1 + (len(st.incoming_qos2) if st else 0)
