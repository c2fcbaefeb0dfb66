"""One handler per MQTT packet a client sends after CONNECT; `TABLE` at the bottom is the
table of contents (CONNECT itself is in ``connect.py``; which packets each state of the
connection takes is ``machine.py``'s to say).

Publishing: PUBLISH -> `amq.topic` with the topic's routing key. QoS 0 is transient, QoS 1
and 2 persistent; their PUBACK / PUBREC wait until the store has made the message durable
(in a `gateway.core.confirms` tracker, as AMQP confirms do). QoS 2 is exactly once: the
packet id is remembered from PUBLISH to PUBREL and a PUBLISH repeating it is answered but
not routed again [MQTT-4.3.3-9]; for a persistent session across a broker restart too
(``persist.py``, which also keeps the session's outgoing QoS 2 exchanges). Nothing is
downgraded: QoS 2 is granted and delivered as QoS 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway.auth import access
from gateway.core.errors import AccessRefused, PreconditionFailed
from protocols.mqtt import delayed, persist
from protocols.mqtt.delivery import (
    FROM_KEY,
    RETAIN_KEY,
    attach_shared,
    ensure_queue,
    kick,
    may_make_queue,
    send_publish,
)
from protocols.mqtt.frames import (
    MQTT_5,
    NO_PROPERTIES,
    SUBACK_FAILURE_311,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from protocols.mqtt.machine import Local
from protocols.mqtt.mapping import (
    PUBLISHER_HEADER,
    REPLY_PREFIX,
    filter_to_binding_key,
    parse_shared,
    reply_queue,
    to_core,
    topic_to_routing_key,
    valid_topic_filter,
)
from protocols.mqtt.retain import Retained
from protocols.mqtt.session_state import SubOptions, session_queue_name, shared_queue_name
from protocols.mqtt.sys_topics import is_sys, may_read

if TYPE_CHECKING:
    from gateway.core.vhost import PublishResult
    from protocols.mqtt.connection import Connection

Handler = Callable[["Connection", Any], None]

log = logging.getLogger("gateway.mqtt")


# -- publishing ----------------------------------------------------------------------------

def route_publish(s: Connection, topic: str, payload: bytes, qos: int, retain: bool,
                  props: Properties, delay_ms: int | None = None
                  ) -> tuple[PublishResult, int]:
    """Publish to amq.topic (and the retained store). Returns the core's result and the
    store position a PUBACK/PUBREC must wait for (0: nothing to wait for). `delay_ms`: a
    `$delayed/` publish, held by the vhost that long (retain is not applied to it)."""
    vh = s.vhost
    assert vh is not None
    now = s.clock()
    own: str | None = None
    if props.response_topic is not None:
        s.replies.remember(
            props.correlation_data.decode("utf-8", "replace")
            if props.correlation_data is not None else None, props.response_topic)
        if needs_own_queue(props) and may_make_queue(s):
            own = ensure_queue(s).name
    message = to_core(topic, payload, qos, props, own_queue=own,
                      message_id=vh.next_message_id())
    message.cache[FROM_KEY] = s.key_cached
    if vh.backend is not None and message.properties.headers is not None:
        message.properties.headers[PUBLISHER_HEADER] = s.client_id  # no local, upstream
    durable = s.broker.durable
    before = durable.position
    if retain:
        message.cache[RETAIN_KEY] = True
        expires = (now + props.message_expiry_interval
                   if props.message_expiry_interval is not None else None)
        s.registry.retained(vh.name).set(Retained(topic, payload, qos, props, expires))
    exchange = vh.get_exchange("amq.topic")
    if topic.startswith(REPLY_PREFIX):
        # a reply to an AMQP requester: straight to its reply queue
        exchange = vh.get_exchange("")
        message.exchange = ""
        message.routing_key = reply_queue(topic)
    if delay_ms is not None:
        result = vh.hold(exchange, message, delay_ms, now)
    else:
        result = vh.publish(exchange, message.routing_key, message, now)
    return result, durable.since(before)


def needs_own_queue(props: Properties) -> bool:
    """A Response Topic that is not an AMQP reply queue: an AMQP replier answers through the
    session's queue (the message's reply-to), which this publish may have to declare."""
    topic = props.response_topic
    return topic is not None and not topic.startswith(REPLY_PREFIX)


def _publish_refused(s: Connection, topic: str, props: Properties) -> str | None:
    """Why this PUBLISH may not go (None: it may): write on the exchange and the topic
    permission, and for a Response Topic the session queue it would declare."""
    assert s.user is not None and s.vhost is not None
    exchange_name = "" if topic.startswith(REPLY_PREFIX) else "amq.topic"
    key = reply_queue(topic) if not exchange_name else topic_to_routing_key(topic)
    try:
        access.publish(s.auth, s.user, s.vhost, exchange_name, key, client_id=s.client_id)
    except AccessRefused as err:
        return err.text
    if needs_own_queue(props) and not may_make_queue(s):
        return (f"a Response Topic needs the session queue "
                f"'{session_queue_name(s.client_id)}', which user '{s.user.name}' may not "
                "declare and consume")
    return None


def publish(s: Connection, p: Publish) -> None:
    st = s.st
    assert st is not None
    if s.alarm:
        s.read_paused = True
    v5 = s.version == MQTT_5
    topic = p.topic
    alias = p.properties.topic_alias
    if alias is not None:
        if not v5 or alias == 0 or alias > s.config.topic_alias_maximum:
            raise ProtocolError(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
        if topic:
            s.aliases.inbound[alias] = topic
        else:
            known = s.aliases.inbound.get(alias)
            if known is None:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}")
            topic = known
    if p.properties.payload_format_indicator == 1:
        try:
            p.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ReasonCode.PAYLOAD_FORMAT_INVALID,
                                "payload is not UTF-8 [MQTT-3.3.2-4]") from exc
    if p.qos == 2 and p.packet_id in st.incoming_qos2:
        # a repeat of a QoS 2 PUBLISH not yet released: answer, do not route again
        assert p.packet_id is not None
        s.pending_acks.insert(0, PubRec(p.packet_id))
        return
    if p.qos and v5 and s.inbound_inflight() >= s.config.receive_maximum:
        raise ProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                            "more unacknowledged QoS 1/2 PUBLISHes than Receive Maximum "
                            "[MQTT-3.3.4-7]")
    props = replace(p.properties, topic_alias=None) if alias is not None else p.properties
    delay_ms: int | None = None
    if topic.startswith(delayed.PREFIX):
        try:
            delay_ms, topic = delayed.parse(topic, s.clock())
        except delayed.DelayedTopicError as exc:
            _not_delayed(s, p, ReasonCode.TOPIC_NAME_INVALID, str(exc))
            return
        if delay_ms <= 0:
            delay_ms = None
    refused = _publish_refused(s, topic, props)
    if refused is not None:
        if p.qos == 0 or not v5:
            raise ProtocolError(ReasonCode.NOT_AUTHORIZED, refused)
        assert p.packet_id is not None
        ack_cls = PubAck if p.qos == 1 else PubRec
        s.send(ack_cls(p.packet_id, ReasonCode.NOT_AUTHORIZED))
        return
    try:
        result, position = route_publish(s, topic, p.payload, p.qos,
                                         p.retain and delay_ms is None, props, delay_ms)
    except PreconditionFailed as exc:  # past the vhost's delayed-message limits
        _not_delayed(s, p, ReasonCode.QUOTA_EXCEEDED, exc.text)
        return
    if p.qos == 0:
        return
    assert p.packet_id is not None
    code = ReasonCode.SUCCESS
    if v5 and not result.routed:
        code = ReasonCode.NO_MATCHING_SUBSCRIBERS
    if v5 and result.rejected:
        code = ReasonCode.QUOTA_EXCEEDED
    if p.qos == 1:
        s.inbound_qos1 += 1
        s.pending_acks.insert(position, PubAck(p.packet_id, code))
    else:
        if code < 0x80:
            st.incoming_qos2.add(p.packet_id)
            position = persist.received(s, p.packet_id) or position
        s.pending_acks.insert(position, PubRec(p.packet_id, code))


def _not_delayed(s: Connection, p: Publish, code: ReasonCode, why: str) -> None:
    """A `$delayed/` PUBLISH that is not held: MQTT 5 QoS 1/2 get `code`; QoS 0 and MQTT
    3.1.1, which have no way to be told, lose it, as EMQX discards such a message."""
    log.info("mqtt: delayed publish of client '%s' dropped: %s", s.client_id, why)
    if p.qos == 0:
        return
    assert p.packet_id is not None
    v5 = s.version == MQTT_5
    ack_cls = PubAck if p.qos == 1 else PubRec
    s.send(ack_cls(p.packet_id, code if v5 else ReasonCode.SUCCESS))


def pubrel(s: Connection, p: PubRel) -> None:
    st = s.st
    assert st is not None
    position = 0
    if p.packet_id in st.incoming_qos2:
        st.incoming_qos2.discard(p.packet_id)
        position = persist.incoming_released(s, p.packet_id)
        code = ReasonCode.SUCCESS
    else:
        code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    # after the PUBREC that preceded it, which may still wait for the store
    s.pending_acks.insert(position, PubComp(p.packet_id, code if s.version == MQTT_5
                                            else 0))


# -- acknowledgements of our PUBLISHes -----------------------------------------------------

def puback(s: Connection, p: PubAck) -> None:
    st = s.st
    assert st is not None
    out = st.outgoing.get(p.packet_id)
    if out is None or out.packet.qos != 1:
        return  # unknown id: nothing to settle (a client may ack twice after a resend)
    del st.outgoing[p.packet_id]
    if out.entry is not None:
        out.entry.queue.ack(out.entry)
    kick(s)


def pubrec(s: Connection, p: PubRec) -> None:
    st = s.st
    assert st is not None
    out = st.outgoing.get(p.packet_id)
    if out is None or out.packet.qos != 2:
        s.send(PubRel(p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
                      if s.version == MQTT_5 else 0))
        return
    if p.reason_code >= 0x80:  # the client refused it: the exchange ends here
        persist.completed(s, p.packet_id, out)
        if out.entry is not None:
            out.entry.queue.ack(out.entry)
        del st.outgoing[p.packet_id]
        kick(s)
        return
    # PUBREL owed: recorded before the entry's ack, and sent once that record is durable
    position = persist.released(s, p.packet_id, out)
    if out.entry is not None:
        out.entry.queue.ack(out.entry)
        out.entry = None
    out.released = True
    s.send_when_durable(position, PubRel(p.packet_id))


def pubcomp(s: Connection, p: PubComp) -> None:
    st = s.st
    assert st is not None
    out = st.outgoing.get(p.packet_id)
    if out is None or not out.released:
        return
    persist.completed(s, p.packet_id, out)
    del st.outgoing[p.packet_id]
    kick(s)


# -- subscriptions -------------------------------------------------------------------------

def _failure(s: Connection, reason: ReasonCode) -> int:
    return int(reason) if s.version == MQTT_5 else SUBACK_FAILURE_311


def subscribe(s: Connection, p: Subscribe) -> None:
    st, vh = s.st, s.vhost
    assert st is not None and vh is not None
    sub_id = p.properties.subscription_identifiers[0] if (
        p.properties.subscription_identifiers) else None
    codes: list[int] = []
    retained: list[tuple[Subscription, bool]] = []
    before = s.broker.durable.position
    for sub in p.subscriptions:
        group, topic_filter = parse_shared(sub.topic_filter)
        if group == "" or not valid_topic_filter(topic_filter):
            codes.append(_failure(s, ReasonCode.TOPIC_FILTER_INVALID))
            continue
        if group is not None and sub.no_local:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "no local on a shared subscription [MQTT-3.8.3-4]")
        queue_name = (shared_queue_name(group, topic_filter) if group is not None
                      else session_queue_name(s.client_id))
        assert s.user is not None
        if is_sys(topic_filter) and not may_read(s.user):  # $SYS: monitoring users only
            codes.append(_failure(s, ReasonCode.NOT_AUTHORIZED))
            continue
        try:
            access.subscribe(s.auth, s.user, vh, queue=queue_name, exchange="amq.topic",
                             binding_key=filter_to_binding_key(topic_filter),
                             client_id=s.client_id)
        except AccessRefused:
            codes.append(_failure(s, ReasonCode.NOT_AUTHORIZED))
            continue
        opts = SubOptions(sub.qos, sub.no_local, sub.retain_as_published, sub_id)
        try:  # the queue may be refused: the vhost's max-queues (as RabbitMQ: 0x97)
            if group is not None:
                attach_shared(s, group, topic_filter, opts)
            else:
                queue = ensure_queue(s)
        except PreconditionFailed:
            codes.append(_failure(s, ReasonCode.QUOTA_EXCEEDED))
            continue
        if group is not None:
            st.shared[sub.topic_filter] = (group, topic_filter, opts)
        else:
            old = st.subscriptions.get(topic_filter)
            key = filter_to_binding_key(topic_filter)
            if old is not None and old != opts:
                vh.unbind(queue, "amq.topic", key, old.binding_args())
            st.subscriptions[topic_filter] = opts
            vh.bind(queue, "amq.topic", key, opts.binding_args())
            if sub.retain_handling == 0 or (sub.retain_handling == 1 and old is None):
                retained.append((sub, True))
        codes.append(sub.qos)
    if vh.backend is not None:
        # in front of a RabbitMQ cluster: once its queue and bindings are declared there
        s.send_when_durable(s.broker.durable.since(before), SubAck(p.packet_id, tuple(codes)))
    else:
        s.send(SubAck(p.packet_id, tuple(codes)))
    # retained messages after the SUBACK, with the retain flag set [MQTT-3.3.1-9]
    now = s.clock()
    store = s.registry.retained(vh.name)
    for sub, _ in retained:
        for msg in store.match(sub.topic_filter, now):
            props = msg.properties if s.version == MQTT_5 else NO_PROPERTIES
            if s.version == MQTT_5:
                expiry = (max(1, int(msg.expires_at - now + 0.999))
                          if msg.expires_at is not None else None)
                props = replace(props, message_expiry_interval=expiry,
                                subscription_identifiers=(sub_id,) if sub_id else ())
            send_publish(s, msg.topic, msg.payload, min(msg.qos, sub.qos), True, props, None)
    if s.consumer is not None:
        kick(s)


def unsubscribe(s: Connection, p: Unsubscribe) -> None:
    st, vh = s.st, s.vhost
    assert st is not None and vh is not None
    codes = []
    for f in p.topic_filters:
        group, topic_filter = parse_shared(f)
        if group:
            shared = st.shared.pop(f, None)
            consumer = s.shared_consumers.pop(f, None)
            if consumer is not None:
                vh.cancel(consumer.queue, consumer, s.clock())
            codes.append(0 if shared else ReasonCode.NO_SUBSCRIPTION_EXISTED)
            continue
        opts = st.subscriptions.pop(f, None)
        if opts is None:
            codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
            continue
        queue = vh.queues.get(session_queue_name(s.client_id))
        if queue is not None:
            vh.unbind(queue, "amq.topic", filter_to_binding_key(f), opts.binding_args())
        codes.append(0)
    s.send(UnsubAck(p.packet_id, tuple(int(c) for c in codes)
                    if s.version == MQTT_5 else ()))


# -- the rest ------------------------------------------------------------------------------

def pingreq(s: Connection, p: PingReq) -> None:
    s.send(PingResp())


def disconnect(s: Connection, p: Disconnect) -> None:
    st = s.st
    assert st is not None
    expiry = p.properties.session_expiry_interval
    if expiry is not None:
        if st.expiry == 0 and expiry != 0:
            # [MQTT-3.14.2-2]: a session that was not persistent may not become one here
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "session expiry set at DISCONNECT")
        st.expiry = min(expiry, s.config.max_session_expiry)
    # a DISCONNECT deletes the will unless its reason code is 0x04 [MQTT-3.14.4-3]
    s.transition(Local.CLOSE,
                 publish_will=p.reason_code == ReasonCode.DISCONNECT_WITH_WILL)


TABLE: dict[type, Handler] = {
    Publish: publish,
    PubAck: puback,
    PubRec: pubrec,
    PubRel: pubrel,
    PubComp: pubcomp,
    Subscribe: subscribe,
    Unsubscribe: unsubscribe,
    PingReq: pingreq,
    Disconnect: disconnect,
}
