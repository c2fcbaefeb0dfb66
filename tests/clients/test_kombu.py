"""kombu (py-amqp transport) against the broker: the Exchange/Queue/Producer/Consumer pattern
from kombu's documentation, and SimpleQueue. Every wait has a timeout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

TIMEOUT = 10.0


def kombu_url(broker) -> str:
    # amqp://user:password@host:port/<vhost>: vhost "/" makes the familiar "...//".
    return f"amqp://{broker.user}:{broker.password}@{broker.host}:{broker.amqp_port}/{broker.vhost}"


@pytest.fixture
def connection(broker) -> Iterator[Connection]:
    with Connection(kombu_url(broker), connect_timeout=5, transport_options={}) as conn:
        conn.ensure_connection(max_retries=1)
        yield conn


def test_media_exchange_producer_and_consumer(connection, unique):
    media = Exchange(unique("media"), "direct", durable=True)
    video = Queue(unique("video"), exchange=media, routing_key="video")
    received = []

    def on_message(body, message):
        received.append((body, message.delivery_info["routing_key"], message.content_type))
        message.ack()

    try:
        producer = Producer(connection)
        producer.publish(
            {"name": "/tmp/lolcat1.avi", "size": 1301013},
            exchange=media,
            routing_key="video",
            declare=[video],  # declares the exchange, the queue and their binding
            serializer="json",
        )
        with Consumer(connection, queues=[video], callbacks=[on_message], accept=["json"]):
            connection.drain_events(timeout=TIMEOUT)
        assert received == [
            ({"name": "/tmp/lolcat1.avi", "size": 1301013}, "video", "application/json")
        ]
        # Acked: nothing left in the queue.
        assert video(connection.default_channel).queue_declare(passive=True).message_count == 0
    finally:
        channel = connection.default_channel
        video(channel).delete()
        media(channel).delete()


def test_consumer_drains_several_messages_in_order(connection, unique):
    exchange = Exchange(unique("events"), "topic", durable=False, auto_delete=False)
    queue = Queue(unique("events"), exchange=exchange, routing_key="user.*", auto_delete=False)
    received = []

    def on_message(body, message):
        received.append(body)
        message.ack()

    try:
        producer = Producer(connection, exchange=exchange)
        for n, key in enumerate(["user.created", "order.created", "user.deleted"]):
            producer.publish({"n": n}, routing_key=key, declare=[queue], serializer="json")
        with Consumer(connection, queues=[queue], callbacks=[on_message], accept=["json"]):
            while len(received) < 2:
                connection.drain_events(timeout=TIMEOUT)
        assert received == [{"n": 0}, {"n": 2}]
    finally:
        channel = connection.default_channel
        queue(channel).delete()
        exchange(channel).delete()


def test_simple_queue_put_and_get(connection, unique):
    name = unique("simple")
    queue = connection.SimpleQueue(name)
    try:
        queue.put({"hello": "world"}, serializer="json")
        queue.put(b"raw bytes", serializer=None, content_type="application/data")
        message = queue.get(block=True, timeout=TIMEOUT)
        assert message.payload == {"hello": "world"}
        message.ack()
        message = queue.get(block=True, timeout=TIMEOUT)
        assert message.body == b"raw bytes"
        message.ack()
        with pytest.raises(queue.Empty):
            queue.get(block=False)
    finally:
        declared = queue.queue
        queue.close()  # cancels its consumer first, so deleting the queue cancels nothing
        declared(connection.default_channel).delete()
        declared.exchange(connection.default_channel).delete()  # SimpleQueue made one too
