"""MQTT sessions driven by packets over one in-memory broker: connect rules, QoS 0/1/2,
retained, wills, keepalive, takeover, persistent sessions, MQTT 5 features."""

from __future__ import annotations

from mqtt_helpers import MQTT_5, MQTT_311, LaggingStore, World

from gateway.core.message import Message
from gateway.core.message import Properties as CoreProperties
from protocols.mqtt.frames import (
    Connack,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
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
    Will,
)

# -- CONNECT ---------------------------------------------------------------------------------


def test_connect_311_and_ping() -> None:
    c = World().client()
    assert c.connect() == Connack(0, False)
    c.send(PingReq())
    assert c.received() == [PingResp()]


def test_connect_5_advertises_limits() -> None:
    c = World().client(MQTT_5)
    ack = c.connect("", properties=Properties(receive_maximum=3, topic_alias_maximum=2))
    assert ack.reason_code == 0
    assert ack.properties.assigned_client_identifier
    assert ack.properties.topic_alias_maximum == 16
    assert ack.properties.receive_maximum == 256
    assert ack.properties.maximum_packet_size == 16777216
    assert c.session.client_receive_maximum == 3 and c.session.client_alias_maximum == 2


def test_first_packet_must_be_connect() -> None:
    c = World().client()
    c.send(PingReq())
    assert c.received() == [] and c.closed


def test_second_connect_is_a_protocol_error() -> None:
    c = World().client(MQTT_5)
    c.connect()
    c.send(Connect("c1", MQTT_5))
    (d,) = c.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.PROTOCOL_ERROR
    assert c.closed


def test_unsupported_level_gets_connack_1() -> None:
    c = World().client()
    c.raw(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c")
    assert c.session.data_to_send() == b"\x20\x02\x00\x01"
    assert c.closed


def test_empty_client_id_needs_clean_session_311() -> None:
    c = World().client()
    assert c.connect("", clean=False).reason_code == 2
    c = World().client()
    assert c.connect("", clean=True).reason_code == 0


def test_credentials() -> None:
    w = World()
    assert w.client().connect(username="guest", password=b"nope").reason_code == 4
    assert w.client(MQTT_5).connect(username="guest", password=b"x").reason_code == 0x86
    assert w.client().connect(username="/:guest", password=b"guest").reason_code == 0
    assert w.client().connect(username="nowhere:guest", password=b"guest").reason_code == 5
    assert w.client(MQTT_5).connect(username="nowhere:guest",
                                    password=b"guest").reason_code == 0x87
    # anonymous is guest, and guest only from loopback
    assert w.client(loopback=False).connect().reason_code == 5
    assert World(allow_anonymous=False).client().connect().reason_code == 4


def test_oversize_packet_disconnects_with_0x95() -> None:
    c = World(max_packet_size=64).client(MQTT_5)
    c.connect()
    c.send(Publish("t", b"x" * 100))
    (d,) = c.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.PACKET_TOO_LARGE


# -- publish / subscribe ---------------------------------------------------------------------


def test_qos_0_1_2_end_to_end() -> None:
    w = World()
    sub, pub = w.client(), w.client()
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("home/+/temp", 2),)))
    assert sub.received() == [SubAck(1, (2,))]
    pub.send(Publish("home/kitchen/temp", b"0", 0),
             Publish("home/kitchen/temp", b"1", 1, packet_id=1),
             Publish("home/kitchen/temp", b"2", 2, packet_id=2))
    assert pub.received() == [PubAck(1), PubRec(2)]
    pub.send(PubRel(2))
    assert pub.received() == [PubComp(2)]
    got = sub.received()
    assert [(p.payload, p.qos) for p in got if isinstance(p, Publish)] == [
        (b"0", 0), (b"1", 1), (b"2", 2)]
    p1, p2 = got[1], got[2]
    assert isinstance(p1, Publish) and isinstance(p2, Publish)
    sub.send(PubAck(p1.packet_id or 0), PubRec(p2.packet_id or 0))
    assert sub.received() == [PubRel(p2.packet_id or 0)]
    sub.send(PubComp(p2.packet_id or 0))
    assert sub.session.st is not None and not sub.session.st.outgoing


def test_qos2_exactly_once_with_repeated_publish() -> None:
    w = World()
    sub, pub = w.client(), w.client()
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("t", 0),)))
    sub.received()
    pub.send(Publish("t", b"once", 2, packet_id=7))
    pub.send(Publish("t", b"once", 2, dup=True, packet_id=7))  # resent before PUBREL
    assert pub.received() == [PubRec(7), PubRec(7)]
    pub.send(PubRel(7))
    assert pub.received() == [PubComp(7)]
    assert [p.payload for p in sub.received()] == [b"once"]  # type: ignore[union-attr]
    pub.send(PubRel(7))  # unknown now: still completed (3.1.1 has no reason code)
    assert pub.received() == [PubComp(7)]


def test_puback_waits_for_the_store() -> None:
    store = LaggingStore()
    w = World(store)
    sub, pub = w.client(), w.client()
    sub.connect("durable-sub", clean=False)
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.received()
    store.sync()
    pub.connect("pub")
    pub.send(Publish("t", b"m", 1, packet_id=1))
    assert pub.received() == []  # the message is in a durable queue, not on disk yet
    store.sync()
    pub.session.flush_confirms()
    assert pub.received() == [PubAck(1)]


def test_qos0_publish_is_transient() -> None:
    w = World()
    pub = w.client()
    pub.connect("pub")
    q = w.broker.vhost("/").declare_queue("amqp-q")
    w.broker.vhost("/").bind(q, "amq.topic", "#")
    pub.send(Publish("a", b"x", 0), Publish("a", b"y", 1, packet_id=1))
    modes = [e.message.properties.delivery_mode for e in q.iter_ready()]
    assert modes == [1, 2]


def test_subscribe_failures_and_unsubscribe() -> None:
    w = World()
    c3, c5 = w.client(), w.client(MQTT_5)
    c3.connect("a")
    c5.connect("b")
    for c in (c3, c5):
        c.send(Subscribe(1, (Subscription("a/#/b", 1), Subscription("ok", 1),
                             Subscription("$share//x", 0))))
    assert c3.received() == [SubAck(1, (0x80, 1, 0x80))]
    assert c5.received() == [SubAck(1, (0x8F, 1, 0x8F))]
    c5.send(Unsubscribe(2, ("ok", "never")))
    assert c5.received() == [UnsubAck(2, (0, 0x11))]
    c3.send(Unsubscribe(2, ("ok",)))
    assert c3.received() == [UnsubAck(2)]


def test_dollar_topics_not_matched_by_leading_wildcards() -> None:
    w = World()
    sub, pub = w.client(), w.client()
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("#", 0), Subscription("+/x", 0))))
    sub.received()
    pub.send(Publish("$SYS/x", b"hidden", 0), Publish("a/x", b"seen", 0))
    assert [p.payload for p in sub.received()] == [b"seen"]  # type: ignore[union-attr]


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos() -> None:
    w = World()
    sub, pub = w.client(MQTT_5), w.client()
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("a/#", 0),), Properties(subscription_identifiers=(1,))),
             Subscribe(2, (Subscription("a/+", 2),), Properties(subscription_identifiers=(2,))))
    sub.received()
    pub.send(Publish("a/b", b"x", 2, packet_id=1))
    (p,) = sub.received()
    assert isinstance(p, Publish) and p.qos == 2
    assert sorted(p.properties.subscription_identifiers) == [1, 2]


# -- retained --------------------------------------------------------------------------------


def test_retained_reach_wildcard_subscribers_and_clear() -> None:
    w = World()
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("home/kitchen/temp", b"21", 1, True, packet_id=1),
             Publish("home/hall/temp", b"19", 0, True),
             Publish("home/hall/temp", b"18", 0, True))  # replaces
    sub = w.client()
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("home/+/temp", 1),)))
    suback, *msgs = sub.received()
    assert suback == SubAck(1, (1,))
    assert sorted((p.topic, p.payload, p.retain, p.qos) for p in msgs  # type: ignore[union-attr]
                  ) == [("home/hall/temp", b"18", True, 0), ("home/kitchen/temp", b"21", True, 1)]
    pub.send(Publish("home/hall/temp", b"", 0, True))  # clears
    (live,) = sub.received()
    assert isinstance(live, Publish) and live.payload == b"" and not live.retain
    other = w.client()
    other.connect("other")
    other.send(Subscribe(1, (Subscription("home/#", 0),)))
    _, *msgs = other.received()
    assert [p.topic for p in msgs] == ["home/kitchen/temp"]  # type: ignore[union-attr]


def test_retain_handling_and_retain_as_published() -> None:
    w = World()
    pub, sub = w.client(), w.client(MQTT_5)
    pub.connect("pub")
    sub.connect("sub")
    pub.send(Publish("r", b"kept", 0, True))
    sub.send(Subscribe(1, (Subscription("r", 0, retain_handling=2),)))
    assert len(sub.received()) == 1  # SUBACK only
    sub.send(Subscribe(2, (Subscription("r", 0, retain_handling=1),)))
    assert len(sub.received()) == 1  # not a new subscription
    sub.send(Subscribe(3, (Subscription("r", 0, retain_as_published=True),)))
    assert len(sub.received()) == 2
    pub.send(Publish("r", b"live", 0, True))
    (p,) = sub.received()
    assert isinstance(p, Publish) and p.retain


# -- wills, keepalive, takeover ----------------------------------------------------------------


def _watcher(w: World, topic: str = "will/#") -> object:
    c = w.client()
    c.connect("watcher")
    c.send(Subscribe(1, (Subscription(topic, 1),)))
    c.received()
    return c


def test_will_on_abnormal_close_not_on_disconnect() -> None:
    w = World()
    watcher = _watcher(w)
    a = w.client()
    a.connect("a", will=Will("will/a", b"a died", 0))
    a.session.connection_lost()
    b = w.client()
    b.connect("b", will=Will("will/b", b"b died", 0))
    b.send(Disconnect())
    assert [p.payload for p in watcher.received()] == [b"a died"]  # type: ignore[attr-defined]


def test_disconnect_with_will_message_v5() -> None:
    w = World()
    watcher = _watcher(w)
    a = w.client(MQTT_5)
    a.connect("a", will=Will("will/a", b"asked", 1))
    a.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL))
    assert [p.payload for p in watcher.received()] == [b"asked"]  # type: ignore[attr-defined]


def test_keepalive_one_and_a_half_times() -> None:
    w = World()
    watcher = _watcher(w)
    a = w.client(MQTT_5)
    a.connect("a", keepalive=10, will=Will("will/a", b"timeout", 0))
    w.clock.now += 14.9
    a.session.timer(w.clock.now)
    assert not a.closed
    w.clock.now += 0.2
    a.session.timer(w.clock.now)
    (d,) = a.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert [p.payload for p in watcher.received()] == [b"timeout"]  # type: ignore[attr-defined]


def test_session_takeover() -> None:
    w = World()
    old = w.client(MQTT_5)
    old.connect("same", clean=False, properties=Properties(session_expiry_interval=60))
    old.send(Subscribe(1, (Subscription("t", 1),)))
    old.received()
    new = w.client(MQTT_5)
    ack = new.connect("same", clean=False, properties=Properties(session_expiry_interval=60))
    assert ack.session_present
    (d,) = old.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.SESSION_TAKEN_OVER
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("t", b"to the new one", 1, packet_id=1))
    assert [p.payload for p in new.received()] == [b"to the new one"]  # type: ignore[union-attr]
    assert old.received() == []


def test_delayed_will_cancelled_by_reconnect() -> None:
    w = World()
    watcher = _watcher(w)
    a = w.client(MQTT_5)
    will = Will("will/a", b"late", 0, properties=Properties(will_delay_interval=5))
    a.connect("a", will=will, properties=Properties(session_expiry_interval=60))
    a.session.connection_lost()
    w.clock.now += 2
    w.broker.tick(w.clock.now)
    a2 = w.client(MQTT_5)
    a2.connect("a", clean=False, properties=Properties(session_expiry_interval=60))
    w.clock.now += 10
    w.broker.tick(w.clock.now)
    assert watcher.received() == []  # type: ignore[attr-defined]
    # and without the reconnect it is published after the delay
    b = w.client(MQTT_5)
    b.connect("b", will=Will("will/b", b"late b", 0, properties=Properties(
        will_delay_interval=5)), properties=Properties(session_expiry_interval=60))
    b.session.connection_lost()
    w.clock.now += 6
    w.broker.tick(w.clock.now)
    assert [p.payload for p in watcher.received()] == [b"late b"]  # type: ignore[attr-defined]


# -- persistent sessions ---------------------------------------------------------------------


def test_persistent_session_keeps_subscriptions_and_messages() -> None:
    w = World()
    sub = w.client()
    sub.connect("p", clean=False)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    sub.received()
    sub.send(Disconnect())
    queue = w.broker.vhost("/").queues["mqtt-subscription-pqos1"]
    assert queue.durable and queue.arguments["x-expires"] == 86400 * 1000
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("t", b"while away", 1, packet_id=1),
             Publish("t", b"qos0 too", 0))
    back = w.client()
    assert back.connect("p", clean=False).session_present
    assert [(p.payload, p.qos) for p in back.received()] == [  # type: ignore[union-attr]
        (b"while away", 1), (b"qos0 too", 0)]


def test_inflight_resent_with_dup_and_same_packet_id() -> None:
    w = World()
    sub = w.client()
    sub.connect("p", clean=False)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    sub.received()
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("t", b"one", 1, packet_id=1), Publish("t", b"two", 2, packet_id=2))
    pub.send(PubRel(2))
    first = sub.received()
    assert len(first) == 2
    two = first[1]
    assert isinstance(two, Publish)
    sub.send(PubRec(two.packet_id or 0))
    sub.received()
    sub.session.connection_lost()
    back = w.client()
    assert back.connect("p", clean=False).session_present
    again = back.received()
    one = first[0]
    assert isinstance(one, Publish)
    assert again == [Publish("t", b"one", 1, False, True, one.packet_id),
                     PubRel(two.packet_id or 0)]


def test_clean_session_discards_the_old_one() -> None:
    w = World()
    sub = w.client()
    sub.connect("p", clean=False)
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.send(Disconnect())
    again = w.client()
    assert not again.connect("p", clean=True).session_present
    assert "mqtt-subscription-pqos1" not in w.broker.vhost("/").queues
    again.send(Disconnect())
    assert not w.client().connect("p", clean=False).session_present


def test_session_expiry_v5() -> None:
    w = World()
    a = w.client(MQTT_5)
    a.connect("e", clean=False, properties=Properties(session_expiry_interval=5))
    a.send(Subscribe(1, (Subscription("t", 1),)))
    a.send(Disconnect())
    w.clock.now += 6
    w.broker.tick(w.clock.now)
    assert not w.client(MQTT_5).connect("e", clean=False).session_present


# -- MQTT 5 ----------------------------------------------------------------------------------


def test_topic_aliases_both_ways() -> None:
    w = World()
    sub = w.client(MQTT_5)
    sub.connect("sub", properties=Properties(topic_alias_maximum=1))
    sub.send(Subscribe(1, (Subscription("#", 0),)))
    sub.received()
    pub = w.client(MQTT_5)
    pub.connect("pub")
    pub.send(Publish("long/topic/name", b"1", properties=Properties(topic_alias=3)),
             Publish("", b"2", properties=Properties(topic_alias=3)),
             Publish("other", b"3"))
    got = sub.received()
    assert [(p.topic, p.properties.topic_alias, p.payload) for p in got  # type: ignore[union-attr]
            ] == [("long/topic/name", 1, b"1"), ("", 1, b"2"), ("other", None, b"3")]
    pub.send(Publish("", b"x", properties=Properties(topic_alias=4)))
    (d,) = pub.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.PROTOCOL_ERROR
    bad = w.client(MQTT_5)
    bad.connect("bad")
    bad.send(Publish("t", b"x", properties=Properties(topic_alias=17)))
    (d,) = bad.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_no_local_and_no_matching_subscribers() -> None:
    w = World()
    c = w.client(MQTT_5)
    c.connect("self")
    c.send(Subscribe(1, (Subscription("t", 1, no_local=True),)))
    c.received()
    c.send(Publish("t", b"mine", 1, packet_id=1), Publish("nobody/here", b"x", 1, packet_id=2))
    assert c.received() == [PubAck(1), PubAck(2, ReasonCode.NO_MATCHING_SUBSCRIBERS)]


def test_shared_subscription_round_robin() -> None:
    w = World()
    members = [w.client(MQTT_5) for _ in range(2)]
    for i, m in enumerate(members):
        m.connect(f"m{i}")
        m.send(Subscribe(1, (Subscription("$share/g/jobs/+", 1),)))
        assert m.received() == [SubAck(1, (1,))]
    pub = w.client()
    pub.connect("pub")
    for i in range(4):
        pub.send(Publish("jobs/x", str(i).encode(), 0))
    counts = [len(m.received()) for m in members]
    assert counts == [2, 2]


def test_receive_maximum_is_credit() -> None:
    w = World()
    sub = w.client(MQTT_5)
    sub.connect("slow", properties=Properties(receive_maximum=2))
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.received()
    pub = w.client()
    pub.connect("pub")
    for i in range(5):
        pub.send(Publish("t", str(i).encode(), 1, packet_id=i + 1))
    first = sub.received()
    assert [p.payload for p in first] == [b"0", b"1"]  # type: ignore[union-attr]
    sub.send(PubAck(first[0].packet_id))  # type: ignore[union-attr]
    assert [p.payload for p in sub.received()] == [b"2"]  # type: ignore[union-attr]


def test_receive_maximum_exceeded_by_the_client() -> None:
    c = World(receive_maximum=2).client(MQTT_5)
    c.connect()
    c.send(*(Publish("t", b"x", 2, packet_id=i) for i in (1, 2, 3)))
    *_, d = c.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_payload_format_indicator_checked() -> None:
    c = World().client(MQTT_5)
    c.connect()
    c.send(Publish("t", b"\xff", 0, properties=Properties(payload_format_indicator=1)))
    (d,) = c.received()
    assert isinstance(d, Disconnect) and d.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID


def test_message_expiry_counts_down() -> None:
    w = World()
    sub = w.client(MQTT_5)
    sub.connect("s", clean=False, properties=Properties(session_expiry_interval=100))
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.send(Disconnect())
    pub = w.client(MQTT_5)
    pub.connect("p")
    pub.send(Publish("t", b"x", 1, packet_id=1, properties=Properties(
        message_expiry_interval=10)),
        Publish("t", b"gone", 1, packet_id=2, properties=Properties(
            message_expiry_interval=2)))
    w.clock.now += 4
    back = w.client(MQTT_5)
    back.connect("s", clean=False, properties=Properties(session_expiry_interval=100))
    (p,) = back.received()
    assert isinstance(p, Publish) and p.properties.message_expiry_interval == 6


def test_amqp_message_reaches_mqtt_with_its_properties() -> None:
    w = World()
    sub = w.client(MQTT_5)
    sub.connect("s")
    sub.send(Subscribe(1, (Subscription("home/+/cmd", 2),)))
    sub.received()
    vh = w.broker.vhost("/")
    msg = Message(vh.next_message_id(), "amq.topic", "home.kitchen.cmd", CoreProperties(
        delivery_mode=2, correlation_id="c1", reply_to="amq.gen-q", headers={"u": "v"}),
        b"on")
    vh.publish(vh.get_exchange("amq.topic"), "home.kitchen.cmd", msg, w.clock.now)
    (p,) = sub.received()
    assert isinstance(p, Publish)
    assert (p.topic, p.payload, p.qos) == ("home/kitchen/cmd", b"on", 1)
    assert p.properties.correlation_data == b"c1"
    assert p.properties.response_topic == "$reply/amq.gen-q"
    assert p.properties.user_properties == (("u", "v"),)


def test_v311_sees_no_properties_and_reason_codes() -> None:
    w = World()
    c = w.client(MQTT_311)
    c.connect()
    c.send(Publish("nobody", b"x", 1, packet_id=1))
    assert c.received() == [PubAck(1)]


def test_slow_reader_is_held_back_not_buffered() -> None:
    """Deliveries stop once the outbound buffer is over its high-water mark; the rest wait
    in the queue until the writer has drained it."""
    w = World()
    sub = w.client()
    sub.session.high_water = 4096
    sub.connect("slow")
    sub.send(Subscribe(1, (Subscription("flood", 0),)))
    sub.received()
    pub = w.client()
    pub.connect("pub")
    for _ in range(100):
        pub.send(Publish("flood", b"x" * 1000, 0))
    queue = w.broker.vhost("/").queues["mqtt-subscription-slowqos1"]
    assert sub.session.pending_output < 4096 + 1100
    assert queue.message_count > 90
    delivered = 0
    for _ in range(100):  # the writer drains, credit returns, more flows
        delivered += len(sub.received())
        sub.session.output_drained()
        if not queue.message_count:
            break
    delivered += len(sub.received())
    assert delivered == 100 and queue.message_count == 0


def test_what_the_management_api_lists() -> None:
    c = World().client(MQTT_5)
    c.connect("listed", keepalive=30)
    s = c.session
    assert (s.protocol_name, s.client_properties, s.heartbeat) == (
        "MQTT 5.0", {"client_id": "listed"}, 30)
    assert s.user is not None and s.user.name == "guest" and s.vhost is not None


def test_enhanced_authentication_is_refused() -> None:
    c = World().client(MQTT_5)
    ack = c.connect(properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert ack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD and c.closed


def test_publisher_paused_during_memory_alarm() -> None:
    w = World()
    c = w.client()
    c.connect()
    c.session.memory_alarm(True)
    c.send(PingReq())
    assert not c.session.read_paused  # only publishing pauses the reader
    c.send(Publish("t", b"x", 0))
    assert c.session.read_paused
    c.session.memory_alarm(False)
    assert not c.session.read_paused


def test_a_will_with_a_response_topic_leaves_no_consumer_on_the_session_queue() -> None:
    # The will's Response Topic declares the session queue (an AMQP replier answers there)
    # after the connection detached from it; the queue must stay unused, so that its
    # x-expires runs and a message for the session waits for the next connection.
    w = World()
    a = w.client(MQTT_5)
    will = Will("will/a", b"gone", 1, properties=Properties(response_topic="answers/a"))
    a.connect("a", will=will, properties=Properties(session_expiry_interval=60))
    a.session.connection_lost()
    queue = w.broker.vhost("/").queues["mqtt-subscription-aqos1"]
    assert queue.consumer_count == 0
    a2 = w.client(MQTT_5)
    assert a2.connect("a", clean=False, properties=Properties(
        session_expiry_interval=60)).session_present
    assert queue.consumer_count == 1
