"""MQTT's delayed publish, EMQX's `$delayed/SECONDS/topic`, with paho (3.1.1 and 5.0) and
our codec on a socket where the reason codes matter. A message must not arrive before its
delay; it must arrive within the delay and a generous margin (bounded waits)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mqtt_clientkit import TIMEOUT, V5, V311, Peer, RawPeer

from protocols.mqtt.delayed import DelayedTopicError, parse
from protocols.mqtt.frames import Connack, Connect, PubAck, Publish, PubRec

MakePeer = Callable[..., Peer]
MARGIN = 10.0  # s past the delay a delayed message may take to arrive (a loaded machine)


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


def test_parse_follows_emqx() -> None:
    now = 1_700_000_000.0
    assert parse("$delayed/15/x/y", now) == (15_000, "x/y")
    assert parse("$delayed/0/a", now) == (0, "a")
    assert parse("$delayed/-3/a", now) == (-3000, "a")
    assert parse("$delayed/3600/$SYS/topic", now) == (3_600_000, "$SYS/topic")
    # from 4294967 on: a Unix time to publish at
    assert parse(f"$delayed/{int(now) + 60}/a", now) == (60_000, "a")
    assert parse(f"$delayed/{int(now) - 60}/a", now)[0] < 0
    for bad in ("$delayed/abc/a", "$delayed/1.5/a", "$delayed/10", "$delayed/10/",
                "$delayed//a", f"$delayed/{int(now) + 4294968}/a", "$delayed/5/a/#"):
        with pytest.raises(DelayedTopicError):
            parse(bad, now)


@pytest.mark.parametrize("protocol", [V311, V5])
def test_delayed_publish_arrives_after_its_delay(peer: MakePeer, unique: Callable[[str], str],
                                                 protocol: int) -> None:
    topic = unique("later") + "/t"
    sub = peer(unique("sub"), protocol)
    sub.subscribe(topic, 1)
    pub = peer(unique("pub"), protocol)
    start = time.time()
    pub.publish(f"$delayed/2/{topic}", b"two seconds", 1)
    pub.publish(topic, b"now", 1)
    first = sub.message()
    assert first.payload == b"now"
    msg = sub.message(timeout=2 + MARGIN)
    arrived = time.time()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"two seconds", 1)
    assert arrived - start >= 2.0


def test_delayed_publishes_arrive_in_due_order(peer: MakePeer,
                                               unique: Callable[[str], str]) -> None:
    topic = unique("order")
    sub = peer(unique("sub"), V5)
    sub.subscribe(topic, 1)
    pub = peer(unique("pub"), V5)
    start = time.time()
    pub.publish(f"$delayed/3/{topic}", b"third", 1)
    pub.publish(f"$delayed/1/{topic}", b"first", 0)
    pub.publish(f"$delayed/2/{topic}", b"second", 1)
    got = [sub.message(timeout=3 + MARGIN) for _ in range(3)]
    assert [m.payload for m in got] == [b"first", b"second", b"third"]
    assert time.time() - start >= 3.0


def test_reason_codes_v5(broker: Any, unique: Callable[[str], str]) -> None:
    """Held: 0x10 No matching subscribers, as EMQX answers a delayed publish (its broker
    publishes nothing now); a bad interval: 0x90 Topic Name invalid."""
    raw = RawPeer(broker.ports["mqtt"], Connect(unique("raw"), 5))
    try:
        assert isinstance(raw.receive(), Connack)
        raw.send(Publish(f"$delayed/60/{unique('t')}", b"x", 1, packet_id=1))
        assert raw.receive() == PubAck(1, 0x10)
        raw.send(Publish(f"$delayed/soon/{unique('t')}", b"x", 1, packet_id=2))
        assert raw.receive() == PubAck(2, 0x90)
        raw.send(Publish(f"$delayed/99999999999/{unique('t')}", b"x", 2, packet_id=3))
        assert raw.receive() == PubRec(3, 0x90)
    finally:
        raw.close()


def test_bad_interval_v311_is_dropped_and_acknowledged(peer: MakePeer,
                                                       unique: Callable[[str], str]) -> None:
    topic = unique("dropped")
    watcher = peer(unique("w"), V311)
    watcher.subscribe("#", 0)
    pub = peer(unique("pub"), V311)
    pub.publish(f"$delayed/xyz/{topic}", b"lost", 1)  # PUBACKed: the client is not told
    pub.publish(topic, b"marker", 1)
    msgs = []
    while True:
        m = watcher.message()
        msgs.append((m.topic, m.payload))
        if m.payload == b"marker":
            break
    assert all(payload != b"lost" for _, payload in msgs)


def test_limit_answers_quota_exceeded(configured_broker: Callable[[str], Any],
                                      unique: Callable[[str], str]) -> None:
    running = configured_broker("[limits]\ndelayed_max_messages = 1\n")
    raw = RawPeer(running.ports["mqtt"], Connect(unique("raw"), 5))
    try:
        assert isinstance(raw.receive(), Connack)
        raw.send(Publish("$delayed/60/a", b"x", 1, packet_id=1))
        assert raw.receive() == PubAck(1, 0x10)
        raw.send(Publish("$delayed/60/a", b"y", 1, packet_id=2))
        assert raw.receive() == PubAck(2, 0x97)
    finally:
        raw.close()


def test_delayed_qos1_survives_kill(fresh_broker: Any, unique: Callable[[str], str]) -> None:
    """A QoS 1 delayed publish is on disk when PUBACKed: killed (SIGKILL) and restarted,
    the broker publishes it when due to the persistent session subscribed to the topic."""
    topic, cid = unique("durable"), unique("survivor")
    sub = Peer(fresh_broker.ports["mqtt"], cid, V311, clean=False)
    sub.subscribe(topic, 1)
    sub.close()
    pub = Peer(fresh_broker.ports["mqtt"], unique("pub"))
    start = time.time()
    pub.publish(f"$delayed/2/{topic}", b"held on disk", 1)
    pub.close()
    fresh_broker.restart(kill=True)
    back = Peer(fresh_broker.ports["mqtt"], cid, V311, clean=False)
    try:
        msg = back.message(timeout=2 + MARGIN + TIMEOUT)
        assert (msg.topic, msg.payload) == (topic, b"held on disk")
        assert time.time() - start >= 2.0
        back.no_message(1.0)  # once
    finally:
        back.close()
