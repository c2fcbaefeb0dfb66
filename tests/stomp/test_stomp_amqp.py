"""STOMP <-> AMQP 0-9-1 through the one core: stomp.py on one side, pika on the other. The
header <-> property table of `protocols/stomp/mapping.py` is checked both ways here, on
real clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
from test_stomp_clientkit import Peer, open_peers

Peers = Callable[..., Peer]


@pytest.fixture
def peers(broker: Any) -> Iterator[Peers]:
    yield from open_peers(broker)


@pytest.fixture
def channel(broker: Any) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        yield conn.channel()
    finally:
        conn.close()


def get_one(channel: Any, queue: str, timeout: float = 10.0) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        channel.connection.process_data_events(time_limit=0.05)
    raise AssertionError(f"nothing arrived in {queue} within {timeout} s")


def test_stomp_headers_become_amqp_properties(peers: Peers, channel: Any,
                                              unique: Callable[[str], str]) -> None:
    name = unique("s2a")
    channel.queue_declare(name, durable=True)
    p = peers("1.2")
    p.conn.send(f"/amq/queue/{name}", b"\x00payload", headers={
        "content-type": "application/json", "content-encoding": "gzip",
        "persistent": "true", "priority": "7", "expiration": "60000",
        "reply-to": "/queue/replies", "correlation-id": "corr", "amqp-message-id": "mid-1",
        "type": "order", "app-id": "shop", "user-id": "guest", "timestamp": "1700000000",
        "x-custom": "value", "plain": "text", "receipt": "r"})
    p.receipt("r")
    method, props, body = get_one(channel, name)
    assert body == b"\x00payload"
    assert method.routing_key == name and method.exchange == ""
    assert props.content_type == "application/json" and props.content_encoding == "gzip"
    assert props.delivery_mode == 2 and props.priority == 7 and props.expiration == "60000"
    assert props.reply_to == "/queue/replies" and props.correlation_id == "corr"
    assert props.message_id == "mid-1" and props.type == "order" and props.app_id == "shop"
    assert props.user_id == "guest"
    assert props.timestamp == 1700000000
    assert props.headers == {"x-custom": "value", "plain": "text"}


def test_amqp_properties_become_stomp_headers(peers: Peers, channel: Any,
                                              unique: Callable[[str], str]) -> None:
    name = unique("a2s")
    p = peers("1.1")
    p.subscribe(f"/queue/{name}", "s")
    channel.basic_publish("", name, b"from amqp", pika.BasicProperties(
        content_type="text/plain", delivery_mode=2, priority=2, correlation_id="c",
        reply_to="amqp-replies", message_id="m", type="t", app_id="a",
        timestamp=int(datetime(2024, 1, 2, tzinfo=UTC).timestamp()),
        headers={"str": "s", "int": 42, "bool": True, "nested": {"x": 1}}))
    msg = p.message()
    h = msg.headers
    assert msg.body == b"from amqp"
    assert h["destination"] == f"/queue/{name}"
    assert h["content-type"] == "text/plain" and h["persistent"] == "true"
    assert h["priority"] == "2" and h["correlation-id"] == "c" and h["type"] == "t"
    assert h["reply-to"] == "/reply-queue/amqp-replies"
    assert h["amqp-message-id"] == "m" and h["app-id"] == "a"
    assert h["timestamp"] == str(int(datetime(2024, 1, 2, tzinfo=UTC).timestamp()))
    assert h["str"] == "s" and h["int"] == "42" and h["bool"] == "true"
    assert "nested" not in h


def test_amqp_topic_publish_reaches_stomp_topic_subscription(
        peers: Peers, channel: Any, unique: Callable[[str], str]) -> None:
    key = unique("t").replace("-", "")
    p = peers("1.2")
    p.subscribe(f"/topic/{key}.*", "t")
    channel.basic_publish("amq.topic", f"{key}.x", b"hello")
    msg = p.message()
    assert msg.body == b"hello" and msg.headers["destination"] == f"/topic/{key}.x"


def test_stomp_exchange_send_reaches_amqp_binding(peers: Peers, channel: Any,
                                                  unique: Callable[[str], str]) -> None:
    exchange, name = unique("x"), unique("bound")
    channel.exchange_declare(exchange, "direct")
    channel.queue_declare(name, exclusive=True)
    channel.queue_bind(name, exchange, "rk")
    p = peers("1.0")
    p.conn.send(f"/exchange/{exchange}/rk", "routed", headers={"receipt": "r"})
    p.receipt("r")
    method, _, body = get_one(channel, name)
    assert body == b"routed" and method.exchange == exchange and method.routing_key == "rk"


def test_stomp_requester_amqp_responder(peers: Peers, channel: Any,
                                        unique: Callable[[str], str]) -> None:
    service = unique("rpc")
    channel.queue_declare(service, exclusive=True)
    p = peers("1.2")
    p.conn.send(f"/amq/queue/{service}", "2+2", headers={
        "reply-to": "/temp-queue/rpc", "correlation-id": "q1", "receipt": "r"})
    p.receipt("r")
    _, props, body = get_one(channel, service)
    assert body == b"2+2" and props.reply_to.startswith("amq.gen-")
    channel.basic_publish("", props.reply_to, b"4",
                          pika.BasicProperties(correlation_id=props.correlation_id))
    reply = p.message()
    assert reply.body == b"4" and reply.headers["correlation-id"] == "q1"
    assert reply.headers["subscription"] == "/temp-queue/rpc"


def test_amqp_requester_stomp_responder(peers: Peers, channel: Any,
                                        unique: Callable[[str], str]) -> None:
    service = unique("svc")
    reply_queue = channel.queue_declare("", exclusive=True).method.queue
    p = peers("1.1")
    p.subscribe(f"/queue/{service}", "svc")
    channel.basic_publish("", service, b"question", pika.BasicProperties(
        reply_to=reply_queue, correlation_id="k"))
    request = p.message()
    assert request.headers["reply-to"] == f"/reply-queue/{reply_queue}"
    p.conn.send(request.headers["reply-to"], "answer",
                headers={"correlation-id": request.headers["correlation-id"]})
    _, props, body = get_one(channel, reply_queue)
    assert body == b"answer" and props.correlation_id == "k"


def test_stomp_nack_without_requeue_dead_letters(peers: Peers, channel: Any,
                                                 unique: Callable[[str], str]) -> None:
    name, dead = unique("dlq-src"), unique("dlq")
    channel.queue_declare(dead, exclusive=True)
    p = peers("1.2")
    p.subscribe(f"/queue/{name}", "s", ack="client-individual",
                **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
                   "durable": "false", "auto-delete": "true"})
    p.conn.send(f"/queue/{name}", "bad")
    msg = p.message()
    p.conn.nack(msg.headers["ack"], requeue="false")
    _, props, body = get_one(channel, dead)
    assert body == b"bad" and props.headers["x-death"][0]["reason"] == "rejected"
