"""Durability across broker restarts, seen by a pika client.

Each test has a broker process of its own (`fresh_broker`) and restarts it on the same port
and data directory: by SIGKILL, where only what was confirmed may be relied on, or by
SIGTERM, where the broker shuts down cleanly. As with RabbitMQ, an ack is only sure to be
remembered across a clean shutdown: after a SIGKILL, RabbitMQ 3.10 delivers again messages
that were acked just before (even in a committed transaction), which at-least-once allows.
These tests skip when the suite runs against an external broker (GATEWAY_TEST_AMQP_URL),
which the suite cannot restart.
"""

from __future__ import annotations

from contextlib import closing

import pika
import pika.exceptions
import pytest

DURABLE_QUEUE = "orders"
TRANSIENT_QUEUE = "scratchpad"
EXCHANGE = "orders-in"


def connect(broker) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


def persistent(**fields) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, **fields)


def get_all(channel, queue: str, limit: int = 1000) -> list[tuple]:
    """(method, properties, body) of every ready message in `queue`, removed (auto-ack)."""
    messages = []
    for _ in range(limit):
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return messages
        messages.append((method, properties, body))
    raise AssertionError(f"more than {limit} messages in {queue}")


def declare_topology(channel) -> None:
    channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
    channel.queue_declare(DURABLE_QUEUE, durable=True, arguments={"x-max-length": 1000})
    channel.queue_bind(DURABLE_QUEUE, EXCHANGE, routing_key="new")
    channel.queue_declare(TRANSIENT_QUEUE, durable=False)


def assert_queue_missing(connection, queue: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        connection.channel().queue_declare(queue, passive=True)
    assert closed.value.reply_code == 404


def test_confirmed_persistent_messages_survive_kill_9(fresh_broker):
    bodies = [f"order {n}".encode() for n in range(50)]
    with closing(connect(fresh_broker)) as connection:
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()
        for n, body in enumerate(bodies):
            # confirm mode: basic_publish returns once the broker has confirmed the message
            channel.basic_publish(
                EXCHANGE,
                "new",
                body,
                properties=persistent(
                    content_type="text/plain",
                    correlation_id=f"c{n}",
                    message_id=f"m{n}",
                    headers={"n": n, "tags": ["a", "b"]},
                    priority=3,
                ),
            )
        channel.basic_publish("", TRANSIENT_QUEUE, b"lost with its queue", properties=persistent())

    fresh_broker.restart(kill=True)

    with closing(connect(fresh_broker)) as connection:
        assert_queue_missing(connection, TRANSIENT_QUEUE)
        channel = connection.channel()
        recovered = get_all(channel, DURABLE_QUEUE)
        assert [body for _, _, body in recovered] == bodies
        for n, (_, properties, _) in enumerate(recovered):
            assert properties.delivery_mode == 2
            assert properties.content_type == "text/plain"
            assert (properties.correlation_id, properties.message_id) == (f"c{n}", f"m{n}")
            assert properties.headers == {"n": n, "tags": ["a", "b"]}
            assert properties.priority == 3

        # The durable exchange, its binding and the queue's arguments came back too.
        channel.queue_declare(DURABLE_QUEUE, durable=True, arguments={"x-max-length": 1000})
        channel.confirm_delivery()
        channel.basic_publish(EXCHANGE, "new", b"after restart", properties=persistent())
        assert [body for _, _, body in get_all(channel, DURABLE_QUEUE)] == [b"after restart"]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            connection.channel().queue_declare(DURABLE_QUEUE, durable=True)
        assert closed.value.reply_code == 406  # x-max-length is remembered


def test_acked_messages_do_not_come_back_after_restart(fresh_broker):
    bodies = [f"job {n}".encode() for n in range(10)]
    connection = connect(fresh_broker)
    try:
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", DURABLE_QUEUE, body, properties=persistent())
        # A non-persistent message in a durable queue does not outlive the broker process.
        channel.basic_publish("", DURABLE_QUEUE, b"transient", properties=pika.BasicProperties())

        worker = connection.channel()
        for _ in range(4):
            method, _, _ = worker.basic_get(DURABLE_QUEUE)
            worker.basic_ack(method.delivery_tag)
        held = [worker.basic_get(DURABLE_QUEUE)[2] for _ in range(2)]  # delivered, not acked
        assert held == bodies[4:6]
        # A synchronous round trip on the same channel: the acks before it were processed.
        assert worker.queue_declare(DURABLE_QUEUE, passive=True).method.message_count == 5

        fresh_broker.restart(kill=False)  # SIGTERM: a clean shutdown
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # the broker closed it when it stopped

    with closing(connect(fresh_broker)) as connection:
        channel = connection.channel()
        recovered = get_all(channel, DURABLE_QUEUE)
        # The four acked messages are gone; the two held unacked are back, in their place.
        assert [body for _, _, body in recovered] == bodies[4:]
        assert_queue_missing(connection, TRANSIENT_QUEUE)
