"""One MQTT connection as the rest of the package sees it: `Connection`, the protocol that
``session.py``'s `MQTTSession` implements and that CONNECT (``connect.py``), the packet
handlers, delivery and persist take, and the small parts a connection is made of (its topic
aliases, the reply topics it remembers).

Typing those modules against this protocol rather than against `MQTTSession` keeps the
package free of import cycles: `MQTTSession` imports them, they import this module, which
imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.core.queue import Consumer

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, User
    from gateway.config import MQTTConfig
    from gateway.core.broker import Broker
    from gateway.core.confirms import Confirms
    from gateway.core.queue import Queue
    from gateway.core.vhost import VirtualHost
    from gateway.info import ConnectionInfo
    from protocols.admission import Admit
    from protocols.mqtt.frames import Packet, Will
    from protocols.mqtt.machine import ConnectionMachine, Local
    from protocols.mqtt.registry import MQTTRegistry
    from protocols.mqtt.session_state import SessionState

REPLY_TOPICS_KEPT = 1024


class SessionConsumer(Consumer, Protocol):
    """A core consumer of this connection on one queue (``delivery.py``'s `MQTTConsumer`)."""

    queue: Queue


class TopicAliases:
    """MQTT 5 topic aliases, both ways [MQTT-3.3.2-8]: the client's (alias -> topic, up to
    our Topic Alias Maximum) and ours (topic -> alias, up to the client's)."""

    __slots__ = ("inbound", "outbound")

    def __init__(self) -> None:
        self.inbound: dict[int, str] = {}
        self.outbound: dict[str, int] = {}


class ReplyTopics:
    """The Response Topics of this client's requests, by correlation data, so that an AMQP
    reply sent to the session's queue goes back on the topic asked for (the last one when
    the reply carries no known correlation id)."""

    __slots__ = ("_by_correlation", "_last")

    def __init__(self) -> None:
        self._by_correlation: dict[str, str] = {}
        self._last: str | None = None

    def remember(self, correlation_id: str | None, topic: str) -> None:
        self._last = topic
        if correlation_id is not None:
            if len(self._by_correlation) >= REPLY_TOPICS_KEPT:
                del self._by_correlation[next(iter(self._by_correlation))]
            self._by_correlation[correlation_id] = topic

    def topic(self, correlation_id: str | None) -> str | None:
        if correlation_id is not None and correlation_id in self._by_correlation:
            return self._by_correlation.pop(correlation_id)
        return self._last


class Connection(Protocol):
    """What CONNECT, the packet handlers, delivery and persist use of one connection."""

    # the broker, and how this connection logs in
    broker: Broker
    auth: AuthService
    config: MQTTConfig
    registry: MQTTRegistry
    admit: Admit
    clock: Callable[[], float]
    peer: tuple[str, int]
    loopback: bool
    loopback_users: frozenset[str]
    cert_user: str | None
    password_check: PendingCheck | None
    machine: ConnectionMachine
    # who it is, once CONNECTed
    user: User | None
    vhost: VirtualHost | None
    client_id: str
    st: SessionState | None  # the MQTT session, once CONNECTed
    will: Will | None
    keepalive: int
    # what it consumes
    consumer: SessionConsumer | None
    shared_consumers: dict[str, SessionConsumer]
    # flow: both in-flight windows, the output waiting for the store, the memory alarm
    client_receive_maximum: int
    client_max_packet: int | None
    client_alias_maximum: int
    inbound_qos1: int
    pending_acks: Confirms[Packet | bytes]
    output_blocked: bool
    alarm: bool
    read_paused: bool
    aliases: TopicAliases
    replies: ReplyTopics

    @property
    def version(self) -> int | None: ...

    @property
    def key(self) -> tuple[str, str]: ...

    @property
    def key_cached(self) -> tuple[str, str]: ...

    @property
    def name(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def info(self) -> ConnectionInfo: ...

    def send(self, packet: Packet) -> None: ...

    def emit(self, data: bytes) -> None: ...

    def send_when_durable(self, position: int, item: Packet | bytes) -> None: ...

    def inbound_inflight(self) -> int: ...

    def transition(self, event: Local, *, publish_will: bool = False) -> None: ...

    def taken_over(self, elsewhere: bool = False) -> None: ...
