"""MQTT <-> AMQP 0-9-1 through the one core: paho-mqtt on one side, pika on the other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from mqtt_clientkit import TIMEOUT, V5, V311, Peer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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


@pytest.fixture
def channel(broker: Any) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    yield conn.channel()
    conn.close()


def get(channel: Any, queue: str) -> tuple[Any, Any, bytes]:
    """The next message of `queue`, polled with a deadline."""
    deadline = TIMEOUT
    for method, props, body in channel.consume(queue, auto_ack=True,
                                               inactivity_timeout=deadline):
        assert method is not None, f"nothing in {queue} within {deadline} s"
        channel.cancel()
        return method, props, body
    raise AssertionError("unreachable")


@pytest.mark.parametrize("protocol", [V311, V5])
def test_mqtt_publish_reaches_amqp_binding(peer: MakePeer, channel: Any,
                                           unique: Callable[[str], str],
                                           protocol: int) -> None:
    home = unique("home")
    q = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q, "amq.topic", f"{home}.*.temp")
    sensor = peer(unique("sensor"), protocol)
    sensor.publish(f"{home}/kitchen/temp", b"21.5", 1)
    method, props, body = get(channel, q)
    assert (method.exchange, method.routing_key, body) == ("amq.topic",
                                                          f"{home}.kitchen.temp", b"21.5")
    assert props.delivery_mode == 2
    assert props.headers["x-mqtt-publish-qos"] == 1


def test_dot_inside_a_level_does_not_split_it(peer: MakePeer, channel: Any,
                                              unique: Callable[[str], str]) -> None:
    base = unique("probe")
    q = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q, "amq.topic", f"{base}.*.c")
    mqtt_sub = peer(unique("sub"))
    mqtt_sub.subscribe(f"{base}/a.b/c", 0)
    peer(unique("pub")).publish(f"{base}/a.b/c", b"dotted", 1)
    assert mqtt_sub.message().topic == f"{base}/a.b/c"  # lossless MQTT to MQTT
    method, _, _ = get(channel, q)  # one AMQP word for the level
    assert method.routing_key == f"{base}.a%2Eb.c"


@pytest.mark.parametrize("protocol", [V311, V5])
def test_amqp_publish_reaches_mqtt_wildcard(peer: MakePeer, channel: Any,
                                            unique: Callable[[str], str],
                                            protocol: int) -> None:
    home = unique("home")
    sub = peer(unique("actuator"), protocol)
    sub.subscribe(f"{home}/+/cmd", 1)
    channel.basic_publish("amq.topic", f"{home}.kitchen.cmd", b"lights on",
                          pika.BasicProperties(delivery_mode=2, content_type="text/plain",
                                               headers={"origin": "amqp"}))
    msg = sub.message()
    assert (msg.topic, msg.payload, msg.qos) == (f"{home}/kitchen/cmd", b"lights on", 1)
    if protocol == V5:
        assert msg.properties.ContentType == "text/plain"
        assert msg.properties.UserProperty == [("origin", "amqp")]


def test_mqtt5_request_to_amqp_rpc_server(peer: MakePeer, channel: Any,
                                          unique: Callable[[str], str]) -> None:
    service = unique("rpc")
    q = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q, "amq.topic", f"{service}.echo")
    requester = peer(unique("requester"), V5)
    reply_topic = unique("replies") + "/me"
    requester.subscribe(reply_topic, 1)
    req_props = Properties(PacketTypes.PUBLISH)
    req_props.ResponseTopic = reply_topic
    req_props.CorrelationData = b"call-1"
    requester.publish(f"{service}/echo", b"ping", 1, properties=req_props)
    _, props, body = get(channel, q)
    assert body == b"ping" and props.correlation_id == "call-1" and props.reply_to
    # a plain AMQP RPC server: reply through the default exchange to reply_to
    channel.basic_publish("", props.reply_to, b"pong",
                          pika.BasicProperties(correlation_id=props.correlation_id))
    reply = requester.message()
    assert (reply.topic, reply.payload) == (reply_topic, b"pong")
    assert reply.properties.CorrelationData == b"call-1"


def test_amqp_rpc_client_to_mqtt5_responder(peer: MakePeer, channel: Any,
                                            unique: Callable[[str], str]) -> None:
    service = unique("svc")
    responder = peer(unique("responder"), V5)
    responder.subscribe(f"{service}/upper", 1)
    reply_q = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("amq.topic", f"{service}.upper", b"hello", pika.BasicProperties(
        reply_to=reply_q, correlation_id="c-42"))
    request = responder.message()
    p = request.properties
    assert p.ResponseTopic == f"$reply/{reply_q}" and p.CorrelationData == b"c-42"
    answer = Properties(PacketTypes.PUBLISH)
    answer.CorrelationData = p.CorrelationData
    responder.publish(p.ResponseTopic, request.payload.upper(), 1, properties=answer)
    _, props, body = get(channel, reply_q)
    assert body == b"HELLO" and props.correlation_id == "c-42"
