"""Messages from the core to an MQTT client: the session's queues and their consumers, QoS,
topic aliases, in-flight.

The session's queue gets one copy of each message however many of its filters match
(bindings to one queue are routed once). At delivery the topic is matched against the
session's own subscriptions: the QoS is the lower of the published QoS and the highest
granted QoS of the matching subscriptions, the subscription identifiers are those of all of
them [MQTT-3.3.4-3], `$` topics are skipped for filters starting with a wildcard
[MQTT-4.7.2-1], and no-local subscriptions skip the session's own messages [MQTT-3.8.3-3].

Flow control is credit: a consumer can take a message only while the client's Receive
Maximum is not used up by unacknowledged QoS 1/2 PUBLISHes [MQTT-3.3.4-9] and the
connection's outbound buffer is under its high-water mark.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.auth import access
from gateway.core.errors import AccessRefused
from gateway.info import ConsumerOwner
from protocols.mqtt import persist
from protocols.mqtt.codec import encode_packet, encode_publish_qos0
from protocols.mqtt.frames import MQTT_5, NO_PROPERTIES, Properties, Publish, PubRel
from protocols.mqtt.mapping import (
    PUBLISHER_HEADER,
    filter_to_binding_key,
    from_core,
    published_qos,
    routing_key_to_topic,
    topic_matches,
)
from protocols.mqtt.session_state import (
    Outgoing,
    SubOptions,
    session_queue_name,
    shared_queue_name,
)

if TYPE_CHECKING:
    from gateway.core.message import Message
    from gateway.core.queue import Entry, Queue
    from protocols.mqtt.connection import Connection

FROM_KEY = "mqtt.from"  # Message.cache: (vhost, client id) of the MQTT publisher
RETAIN_KEY = "mqtt.retain"  # Message.cache: the PUBLISH had the retain flag
TOPIC_KEY = "mqtt.topic"  # Message.cache: the topic of its routing key, computed once
QOS0_KEY = "mqtt.q0"  # Message.cache: its QoS 0 PUBLISH without properties, encoded
QOS0_KEY_RETAIN = "mqtt.q0r"


class MQTTConsumer:
    """The core's `Consumer` for one MQTT session on one queue: the session's own queue, or
    a shared subscription's queue (then `share` is its options)."""

    __slots__ = ("tag", "session", "queue", "share", "no_ack", "exclusive", "priority")

    def __init__(self, session: Connection, queue: Queue,
                 share: tuple[str, SubOptions] | None = None) -> None:
        self.tag = f"mqtt-{session.client_id}"
        self.session = session
        self.queue = queue
        self.share = share  # (filter, options)
        self.no_ack = False
        self.exclusive = False
        self.priority = 0

    def owner(self) -> ConsumerOwner:
        return ConsumerOwner(self.session)

    def can_take(self) -> bool:
        s = self.session
        st = s.st
        return (st is not None and not s.output_blocked and not s.closed
                and len(st.outgoing) < s.client_receive_maximum)

    def deliver(self, entry: Entry) -> None:
        deliver(self.session, self, entry)

    def cancelled(self) -> None:
        s = self.session
        if s.consumer is self:
            s.consumer = None
        else:
            s.shared_consumers = {k: c for k, c in s.shared_consumers.items() if c is not self}


def _matching(s: Connection, consumer: MQTTConsumer, topic: str,
              own: bool) -> list[SubOptions]:
    if consumer.share is not None:
        f, opts = consumer.share
        return [opts] if topic_matches(f, topic) else []
    st = s.st
    assert st is not None
    return [opts for f, opts in st.subscriptions.items()
            if topic_matches(f, topic) and not (own and opts.no_local)]


def _published_upstream_by(message: Message, client_id: str) -> bool:
    """Whether a message that came back from RabbitMQ was published by this client id
    (`PUBLISHER_HEADER`; one vhost per node in that mode)."""
    headers = message.properties.headers
    return headers is not None and headers.get(PUBLISHER_HEADER) == client_id


def deliver(s: Connection, consumer: MQTTConsumer, entry: Entry) -> None:
    msg = entry.message
    queue = entry.queue
    now = s.clock()
    if msg.exchange == "" and consumer.share is None:
        # an AMQP reply sent to this session's queue through the default exchange
        topic = s.replies.topic(msg.properties.correlation_id)
        subs = [SubOptions(min(1, published_qos(msg)))] if topic else []
    else:
        topic = msg.cache.get(TOPIC_KEY)
        if topic is None:
            topic = msg.cache[TOPIC_KEY] = routing_key_to_topic(msg.routing_key)
        publisher = msg.cache.get(FROM_KEY)
        own = (publisher == s.key_cached if publisher is not None
               else _published_upstream_by(msg, s.client_id))
        subs = _matching(s, consumer, topic, own)
    expiry = None
    if entry.expires_at is not None:
        expiry = math.ceil(entry.expires_at - now)
        if expiry <= 0:
            subs = []
    if not subs or topic is None:
        queue.ack(entry)
        return
    qos = min(published_qos(msg), max(o.qos for o in subs))
    retain = bool(msg.cache.get(RETAIN_KEY)) and any(o.retain_as_published for o in subs)
    props = from_core(msg) if s.version == MQTT_5 else NO_PROPERTIES
    if s.version == MQTT_5:
        ids = tuple(o.subscription_id for o in subs if o.subscription_id is not None)
        if ids or expiry is not None:
            props = replace(props, subscription_identifiers=ids,
                            message_expiry_interval=expiry if expiry is not None
                            else props.message_expiry_interval)
    if not send_publish(s, topic, msg.body, qos, retain, props, entry):
        queue.ack(entry)


def send_publish(s: Connection, topic: str, payload: bytes, qos: int, retain: bool,
                 props: Properties, entry: Entry | None) -> bool:
    """Send one PUBLISH; QoS 1/2 ones are remembered until acknowledged. False when it was
    dropped: over the client's Maximum Packet Size [MQTT-3.1.2-25] or no packet id free.
    A QoS 0 entry is settled here."""
    st = s.st
    assert st is not None
    if not qos and entry is not None and props is NO_PROPERTIES and (
            s.version != MQTT_5 or not s.client_alias_maximum):
        # the common QoS 0 case: encoded once per message, whatever its fan-out
        key = QOS0_KEY_RETAIN if retain else QOS0_KEY
        data = entry.message.cache.get(key)
        if data is None:
            data = entry.message.cache[key] = encode_publish_qos0(
                topic, payload, retain, s.version or 4)
        if s.client_max_packet is not None and len(data) > s.client_max_packet:
            return False
        entry.queue.ack(entry)
        s.emit(data)
        s.registry.publishes_sent += 1
        return True
    pid = None
    if qos:
        pid = st.allocate_packet_id()
        if pid is None:
            return False
    # a message the queue had handed out before (requeued, or recovered after a restart,
    # when the in-flight packet ids are gone) goes out again with DUP set [MQTT-3.3.1-1]
    dup = pid is not None and entry is not None and entry.redelivered
    packet = Publish(topic, payload, qos, retain, dup, pid, props)
    # QoS 2 to a persistent session: sent once its record is on disk (so without a topic
    # alias, which later PUBLISHes sent before it could not rely on)
    recorded = pid is not None and persist.recorded(s, qos, entry)
    wire = packet if recorded else _with_alias(s, packet)
    data = encode_packet(wire, s.version or 4)
    if s.client_max_packet is not None and len(data) > s.client_max_packet:
        return False
    if pid is not None:
        out = st.outgoing[pid] = Outgoing(packet, entry)
        if recorded:
            s.send_when_durable(persist.sent(s, pid, out), data)
            s.registry.publishes_sent += 1
            return True
    elif entry is not None:
        entry.queue.ack(entry)
    s.emit(data)
    s.registry.publishes_sent += 1
    return True


def _with_alias(s: Connection, packet: Publish) -> Publish:
    """Server-to-client topic aliases: the first PUBLISH of a topic carries topic and alias,
    later ones the alias and an empty topic [MQTT-3.3.2-12]."""
    if not s.client_alias_maximum or s.version != MQTT_5:
        return packet
    aliases = s.aliases.outbound
    alias = aliases.get(packet.topic)
    if alias is not None:
        return replace(packet, topic="", properties=replace(packet.properties,
                                                            topic_alias=alias))
    if len(aliases) >= s.client_alias_maximum:
        return packet
    alias = len(aliases) + 1
    aliases[packet.topic] = alias
    return replace(packet, properties=replace(packet.properties, topic_alias=alias))


def resend_inflight(s: Connection) -> None:
    """On a resumed session: every unacknowledged PUBLISH again with DUP set and its packet
    id, PUBREL for those already received [MQTT-4.4.0-1], in the original order. Behind
    whatever the store has not yet made durable (a record of the previous connection may
    still be on its way)."""
    st = s.st
    assert st is not None
    position = s.broker.durable.position
    for pid, out in st.outgoing.items():
        if out.released:
            s.send_when_durable(position, PubRel(pid))
        else:
            s.send_when_durable(position, replace(out.packet, dup=True))


# -- the session's queues -------------------------------------------------------------------

def ensure_queue(s: Connection) -> Queue:
    """The session's queue, declared on first use: durable with `x-expires` for a
    persistent session, transient for a clean one."""
    st = s.st
    assert s.vhost is not None and st is not None
    name = session_queue_name(s.client_id)
    queue = s.vhost.queues.get(name)
    if queue is None:
        persistent = st.expiry > 0
        args = {"x-expires": st.expiry * 1000} if persistent else {}
        queue = s.vhost.declare_queue(name, durable=persistent, arguments=args,
                                      now=s.clock())
    if s.consumer is None or s.consumer.queue is not queue:
        attach(s, queue)
    return queue


def may_make_queue(s: Connection) -> bool:
    """Whether the session's queue exists or this user may declare and consume it (what
    `ensure_queue` does)."""
    assert s.user is not None and s.vhost is not None
    name = session_queue_name(s.client_id)
    if name in s.vhost.queues:
        return True
    try:
        access.declare_queue(s.auth, s.user, s.vhost, name)
        access.consume(s.auth, s.user, s.vhost, name)
    except AccessRefused:
        return False
    return True


def attach(s: Connection, queue: Queue) -> None:
    s.consumer = MQTTConsumer(s, queue)
    queue.add_consumer(s.consumer, s.clock())


def attach_shared(s: Connection, group: str, topic_filter: str, opts: SubOptions) -> None:
    """A member of a shared subscription: one more consumer on the group's queue, which
    hands messages round-robin to its consumers."""
    assert s.vhost is not None
    name = shared_queue_name(group, topic_filter)
    queue = s.vhost.queues.get(name)
    if queue is None:
        queue = s.vhost.declare_queue(name, auto_delete=True, now=s.clock())
        s.vhost.bind(queue, "amq.topic", filter_to_binding_key(topic_filter),
                     {"x-mqtt-subscription-qos": 2})
    key = f"$share/{group}/{topic_filter}"
    old = s.shared_consumers.pop(key, None)
    if old is not None:
        s.vhost.cancel(old.queue, old, s.clock())
    consumer = MQTTConsumer(s, queue, (topic_filter, opts))
    s.shared_consumers[key] = consumer
    queue.add_consumer(consumer, s.clock())


def kick(s: Connection) -> None:
    """Credit came back: let the queues this session consumes from deliver again."""
    now = s.clock()
    consumers = [s.consumer, *s.shared_consumers.values()]
    for c in consumers:
        if c is not None and not c.queue.deleted:
            c.queue.dispatch(now)
