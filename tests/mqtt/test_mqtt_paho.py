"""paho-mqtt (MQTT 3.1.1 and 5.0) against the running broker, feature by feature."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mqtt_clientkit import TIMEOUT, V5, V311, Peer, RawPeer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.mqtt.frames import Connack, Connect, SubAck, Subscribe, Subscription, Will

MakePeer = Callable[..., Peer]


@pytest.fixture
def peer(broker: Any) -> Iterator[MakePeer]:
    opened: list[Peer] = []

    def make(client_id: str, protocol: int = V311, **kwargs: Any) -> Peer:
        p = Peer(broker.ports["mqtt"], client_id, protocol, **kwargs)
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


def props(**values: Any) -> Properties:
    kind = values.pop("kind", PacketTypes.PUBLISH)
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("protocol", [V311, V5])
def test_qos_0_1_2_end_to_end(peer: MakePeer, unique: Callable[[str], str],
                              protocol: int) -> None:
    topic = unique("sensors") + "/kitchen/temp"
    sub = peer(unique("sub"), protocol)
    pub = peer(unique("pub"), protocol)
    assert [int(getattr(c, "value", c)) for c in sub.subscribe(topic.replace(
        "/kitchen/", "/+/"), 2)] == [2]
    for qos in (0, 1, 2):
        pub.publish(topic, f"q{qos}".encode(), qos)
    got = [sub.message() for _ in range(3)]
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        (topic, b"q0", 0), (topic, b"q1", 1), (topic, b"q2", 2)]


@pytest.mark.parametrize("protocol", [V311, V5])
def test_retained_to_wildcard_subscriber_replace_and_clear(
        peer: MakePeer, unique: Callable[[str], str], protocol: int) -> None:
    base = unique("ret")
    pub = peer(unique("pub"), protocol)
    pub.publish(f"{base}/a", b"old", 1, retain=True)
    pub.publish(f"{base}/a", b"new", 1, retain=True)
    pub.publish(f"{base}/b.c", b"dotted", 0, retain=True)
    sub = peer(unique("sub"), protocol)
    sub.subscribe(f"{base}/+", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in (sub.message(), sub.message()))
    assert got == [(f"{base}/a", b"new", True), (f"{base}/b.c", b"dotted", True)]
    pub.publish(f"{base}/a", b"", 1, retain=True)
    cleared = sub.message()
    assert (cleared.payload, cleared.retain) == (b"", False)
    late = peer(unique("late"), protocol)
    late.subscribe(f"{base}/#", 1)
    assert late.message().topic == f"{base}/b.c"
    late.no_message()


@pytest.mark.parametrize("protocol", [V311, V5])
def test_persistent_session_gets_what_was_sent_meanwhile(
        peer: MakePeer, unique: Callable[[str], str], protocol: int) -> None:
    topic, cid = unique("offline"), unique("persistent")
    expiry = props(kind=PacketTypes.CONNECT, SessionExpiryInterval=300)
    kwargs: dict[str, Any] = {"clean": False}
    if protocol == V5:
        kwargs["properties"] = expiry
    sub = peer(cid, protocol, **kwargs)
    assert not sub.session_present
    sub.subscribe(topic, 2)
    sub.close()
    pub = peer(unique("pub"), protocol)
    for qos in (1, 2):
        pub.publish(topic, f"while away {qos}".encode(), qos)
    back = peer(cid, protocol, **kwargs)
    assert back.session_present
    assert sorted(back.message().payload for _ in range(2)) == [b"while away 1",
                                                                b"while away 2"]
    back.client.disconnect()
    # a clean session ends it
    clean = peer(cid, protocol)
    assert not clean.session_present


@pytest.mark.parametrize("protocol", [V311, V5])
def test_will_on_abnormal_disconnect_only(broker: Any, peer: MakePeer,
                                          unique: Callable[[str], str],
                                          protocol: int) -> None:
    topic = unique("will")
    watcher = peer(unique("watcher"), protocol)
    watcher.subscribe(topic + "/#", 1)
    polite = peer(unique("polite"), protocol, will=(topic + "/polite", b"never", 1))
    polite.client.disconnect()
    raw = RawPeer(broker.ports["mqtt"], Connect(
        unique("rude"), 5 if protocol == V5 else 4, True, 60,
        Will(topic + "/rude", b"gone", 1)))
    assert isinstance(raw.receive(), Connack)
    raw.close()  # no DISCONNECT
    msg = watcher.message()
    assert (msg.topic, msg.payload) == (topic + "/rude", b"gone")
    watcher.no_message()


def test_keepalive_is_enforced(broker: Any, peer: MakePeer,
                               unique: Callable[[str], str]) -> None:
    topic = unique("keepalive")
    watcher = peer(unique("watcher"))
    watcher.subscribe(topic, 0)
    raw = RawPeer(broker.ports["mqtt"], Connect(unique("silent"), 4, True, 1,
                                                Will(topic, b"timed out", 0)))
    assert isinstance(raw.receive(), Connack)
    # 1.5 s of silence; the broker looks once a second, so within about 3 s
    assert watcher.message(timeout=TIMEOUT).payload == b"timed out"
    raw.close()


def test_session_takeover_v5(peer: MakePeer, unique: Callable[[str], str]) -> None:
    cid = unique("twin")
    first = peer(cid, V5)
    second = peer(cid, V5)
    assert second.connected.is_set()
    rc = first.disconnected.get(timeout=TIMEOUT)
    assert int(rc.value) == 0x8E  # Session taken over
    first.client.loop_stop()


def test_unsubscribe_and_filter_validation(broker: Any, peer: MakePeer,
                                           unique: Callable[[str], str]) -> None:
    topic = unique("unsub")
    raw = RawPeer(broker.ports["mqtt"], Connect(unique("raw"), 5))
    assert isinstance(raw.receive(), Connack)
    raw.send(Subscribe(1, (Subscription(topic, 1), Subscription("bad/#/filter", 1))))
    assert raw.receive() == SubAck(1, (1, 0x8F))  # paho refuses to send such a filter
    raw.close()
    c = peer(unique("c"), V5)
    c.subscribe(topic, 1)
    c.client.unsubscribe([topic, "never/subscribed"])
    codes = c.unsubacks.get(timeout=TIMEOUT)
    assert [int(x.value) for x in codes] == [0, 0x11]
    c.publish(topic, b"after unsubscribe", 1)
    c.no_message()


def test_mqtt5_properties_request_response(peer: MakePeer,
                                           unique: Callable[[str], str]) -> None:
    req_topic, resp_topic = unique("service"), unique("replies")
    responder = peer(unique("responder"), V5)
    requester = peer(unique("requester"), V5)
    responder.subscribe(req_topic, 1)
    requester.subscribe(resp_topic, 1)
    requester.publish(req_topic, b'{"q": 1}', 1, properties=props(
        ResponseTopic=resp_topic, CorrelationData=b"\x01corr", ContentType="application/json",
        UserProperty=[("a", "1"), ("a", "2")], MessageExpiryInterval=60))
    request = responder.message()
    p = request.properties
    assert p.ResponseTopic == resp_topic and p.CorrelationData == b"\x01corr"
    assert p.ContentType == "application/json"
    assert p.UserProperty == [("a", "1"), ("a", "2")]
    assert 0 < p.MessageExpiryInterval <= 60
    responder.publish(p.ResponseTopic, b"answer", 1,
                      properties=props(CorrelationData=p.CorrelationData))
    reply = requester.message()
    assert reply.payload == b"answer" and reply.properties.CorrelationData == b"\x01corr"


def test_mqtt5_subscription_ids_and_no_local(peer: MakePeer,
                                             unique: Callable[[str], str]) -> None:
    topic = unique("ids")
    c = peer(unique("c"), V5)
    c.subscribe([(topic + "/#", SubscribeOptions(qos=1))],
                properties=props(kind=PacketTypes.SUBSCRIBE, SubscriptionIdentifier=11))
    c.subscribe([(topic + "/+", SubscribeOptions(qos=1))],
                properties=props(kind=PacketTypes.SUBSCRIBE, SubscriptionIdentifier=22))
    other = peer(unique("other"), V5)
    other.publish(topic + "/x", b"both", 1)
    msg = c.message()
    assert sorted(msg.properties.SubscriptionIdentifier) == [11, 22]
    c.subscribe([(topic + "/self", SubscribeOptions(qos=1, noLocal=True))])
    c.publish(topic + "/self", b"mine", 1)  # matches the no-local one and the others
    msg = c.message()
    assert sorted(msg.properties.SubscriptionIdentifier) == [11, 22]
    c.no_message()


def test_mqtt5_shared_subscription_round_robin(peer: MakePeer,
                                               unique: Callable[[str], str]) -> None:
    topic, group = unique("jobs"), unique("workers")
    workers = [peer(unique("w"), V5) for _ in range(2)]
    for w in workers:
        w.subscribe(f"$share/{group}/{topic}", 1)
    pub = peer(unique("pub"), V5)
    for i in range(6):
        pub.publish(topic, str(i).encode(), 1)
    got = [[w.message().payload for _ in range(3)] for w in workers]
    assert sorted(got[0] + got[1]) == [str(i).encode() for i in range(6)]
    for w in workers:
        w.no_message()


def test_mqtt5_topic_alias_from_client(peer: MakePeer, unique: Callable[[str], str]) -> None:
    topic = unique("alias") + "/a/rather/long/topic/name"
    sub = peer(unique("sub"), V5)
    sub.subscribe(topic, 1)
    pub = peer(unique("pub"), V5)
    assert pub.connack[1].TopicAliasMaximum == 16
    pub.publish(topic, b"first", 1, properties=props(TopicAlias=1))
    pub.publish("", b"second", 1, properties=props(TopicAlias=1))
    assert [(m.topic, m.payload) for m in (sub.message(), sub.message())] == [
        (topic, b"first"), (topic, b"second")]


def test_mqtt5_assigned_client_id_and_no_subscribers(peer: MakePeer,
                                                     unique: Callable[[str], str]) -> None:
    c = peer("", V5)
    assert c.connack[1].AssignedClientIdentifier.startswith("gw-")
    info = c.client.publish(unique("nobody-listens"), b"x", 1)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published()


def test_persistent_session_survives_a_broker_restart(fresh_broker: Any,
                                                      unique: Callable[[str], str]) -> None:
    """Subscriptions are durable bindings and QoS 1 messages persistent: after kill -9 and
    a restart the session is still there with what was published for it."""
    topic, cid = unique("durable"), unique("survivor")
    sub = Peer(fresh_broker.ports["mqtt"], cid, V311, clean=False)
    sub.subscribe(topic, 1)
    sub.close()
    pub = Peer(fresh_broker.ports["mqtt"], unique("pub"))
    pub.publish(topic, b"kept on disk", 1)  # PUBACK: the store has it
    pub.close()
    fresh_broker.restart(kill=True)
    back = Peer(fresh_broker.ports["mqtt"], cid, V311, clean=False)
    try:
        assert back.session_present
        msg = back.message()
        assert (msg.topic, msg.payload, msg.qos) == (topic, b"kept on disk", 1)
        pub = Peer(fresh_broker.ports["mqtt"], unique("pub2"))
        pub.publish(topic, b"after restart", 1)  # the subscription came back too
        assert back.message().payload == b"after restart"
        pub.close()
    finally:
        back.close()
