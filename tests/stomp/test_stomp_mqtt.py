"""STOMP <-> MQTT through the one core: stomp.py on one side, paho-mqtt on the other. MQTT
topics `a/b` are routing keys `a.b` on amq.topic, which STOMP names `/topic/a.b`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_stomp_clientkit import TIMEOUT, Peer, open_peers

Peers = Callable[..., Peer]


@pytest.fixture
def peers(broker: Any) -> Iterator[Peers]:
    yield from open_peers(broker)


class MQTTPeer:
    def __init__(self, port: int, client_id: str, protocol: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol)
        self.messages: queue.Queue[Any] = queue.Queue()
        self.subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(TIMEOUT), "no SUBACK"

    def message(self) -> Any:
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {TIMEOUT} s") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_peer(broker: Any, unique: Callable[[str], str]) -> Iterator[Callable[[int],
                                                                               MQTTPeer]]:
    opened: list[MQTTPeer] = []

    def make(protocol: int = mqtt.MQTTv311) -> MQTTPeer:
        peer = MQTTPeer(broker.ports["mqtt"], unique("stomp-mqtt"), protocol)
        opened.append(peer)
        return peer

    yield make
    for peer in opened:
        peer.close()


def test_mqtt_publish_reaches_stomp_topic_wildcard(peers: Peers, mqtt_peer: Any,
                                                   unique: Callable[[str], str]) -> None:
    level = unique("m2s").replace("-", "")
    p = peers("1.2")
    p.subscribe(f"/topic/{level}.*", "t")
    m = mqtt_peer()
    m.client.publish(f"{level}/x", b"from mqtt", qos=1).wait_for_publish(TIMEOUT)
    msg = p.message()
    assert msg.body == b"from mqtt" and msg.headers["destination"] == f"/topic/{level}.x"


def test_stomp_send_reaches_mqtt_subscriber(peers: Peers, mqtt_peer: Any,
                                            unique: Callable[[str], str]) -> None:
    level = unique("s2m").replace("-", "")
    m = mqtt_peer()
    m.subscribe(f"{level}/#")
    p = peers("1.1")
    p.conn.send(f"/topic/{level}.y.z", b"\x00from stomp")
    msg = m.message()
    assert msg.topic == f"{level}/y/z" and msg.payload == b"\x00from stomp"


def test_mqtt5_properties_and_stomp_headers(peers: Peers, mqtt_peer: Any,
                                            unique: Callable[[str], str]) -> None:
    level = unique("m5").replace("-", "")
    p = peers("1.2")
    p.subscribe(f"/topic/{level}.in", "t")
    m = mqtt_peer(mqtt.MQTTv5)
    m.subscribe(f"{level}/out")
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.CorrelationData = b"corr-1"
    props.UserProperty = [("colour", "blue")]
    m.client.publish(f"{level}/in", b"{}", qos=1, properties=props).wait_for_publish(TIMEOUT)
    msg = p.message()
    assert msg.headers["content-type"] == "application/json"
    assert msg.headers["correlation-id"] == "corr-1" and msg.headers["colour"] == "blue"
    p.conn.send(f"/topic/{level}.out", b"back", headers={
        "content-type": "text/plain", "correlation-id": "corr-2", "size": "large"})
    back = m.message()
    assert back.payload == b"back"
    assert back.properties.ContentType == "text/plain"
    assert back.properties.CorrelationData == b"corr-2"
    assert ("size", "large") in back.properties.UserProperty
