"""The redelivered flag across a restart, seen by pika: a persistent message that had been
delivered (and not acknowledged) before the broker stopped comes back `redelivered=True`;
one that was never delivered comes back `redelivered=False` (RabbitMQ keeps a "delivered"
mark in its queue index for the same reason). Both after a clean stop (SIGTERM) and after
SIGKILL.

A delivered mark is written with the next group commit, so it is on disk once anything
appended after it is: the tests publish one more message with a confirm after the
deliveries ("fence") before stopping the broker.
"""

from __future__ import annotations

from contextlib import closing, suppress

import pika
import pika.exceptions
import pytest

QUEUE = "redelivered-jobs"


def connect(broker) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def publish(ch, bodies: list[str]) -> None:
    for body in bodies:
        ch.basic_publish("", QUEUE, body.encode(),
                         properties=pika.BasicProperties(delivery_mode=2))


def drain(broker) -> dict[str, bool]:
    """Every message in the queue with its redelivered flag (basic.get, then requeue-free:
    the connection closes with them unacked, so they stay)."""
    out: dict[str, bool] = {}
    with closing(connect(broker)) as connection:
        ch = connection.channel()
        for _ in range(1000):
            method, _, body = ch.basic_get(QUEUE, auto_ack=False)
            if method is None:
                break
            assert body.decode() not in out, "a message came twice"
            out[body.decode()] = method.redelivered
    return out


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_only_delivered_messages_come_back_redelivered(fresh_broker, kill: bool) -> None:
    connection = connect(fresh_broker)
    ch = connection.channel()
    ch.queue_declare(QUEUE, durable=True)
    ch.confirm_delivery()
    publish(ch, [f"m{n}" for n in range(6)])
    # m0 delivered and acked, m1 and m2 delivered and held, m3.. never delivered
    got = []
    for _ in range(3):
        method, _, body = ch.basic_get(QUEUE, auto_ack=False)
        assert method is not None and method.redelivered is False
        got.append((method.delivery_tag, body.decode()))
    assert [b for _, b in got] == ["m0", "m1", "m2"]
    ch.basic_ack(got[0][0])
    # a consumer takes one more and holds it: deliveries to consumers are marked too
    consumer_ch = connection.channel()
    consumer_ch.basic_qos(prefetch_count=1)
    held: list[str] = []
    consumer_ch.basic_consume(QUEUE, lambda c, m, p, b: held.append(b.decode()))
    for _ in range(50):  # bounded: up to 10 s on a loaded machine
        if held:
            break
        connection.process_data_events(time_limit=0.2)
    assert held == ["m3"]
    consumer_ch.basic_cancel(consumer_ch.consumer_tags[0])  # m3 stays unacked on the channel
    publish(ch, ["fence"])  # confirmed: every mark before it is on disk

    fresh_broker.restart(kill=kill)
    with suppress(pika.exceptions.AMQPError, OSError):  # its broker is gone
        connection.close()

    first = drain(fresh_broker)
    assert first == {"m1": True, "m2": True, "m3": True,
                     "m4": False, "m5": False, "fence": False}

    # drain() delivered everything (and left it unacked): after another restart, all of
    # it comes back marked; a message published now comes back unmarked
    with closing(connect(fresh_broker)) as connection:
        ch = connection.channel()
        ch.confirm_delivery()
        publish(ch, ["after"])
    fresh_broker.restart(kill=kill)
    second = drain(fresh_broker)
    assert second == {**dict.fromkeys(first, True), "after": False}


def test_never_delivered_backlog_stays_unmarked_through_repeated_kills(fresh_broker) -> None:
    """A backlog nobody consumes, killed twice (the second time right after the restart,
    while the recovered log is fresh): no message gains the flag."""
    with closing(connect(fresh_broker)) as connection:
        ch = connection.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.confirm_delivery()
        publish(ch, [f"b{n}" for n in range(200)])
    fresh_broker.restart(kill=True)
    fresh_broker.restart(kill=True)
    back = drain(fresh_broker)
    assert set(back) == {f"b{n}" for n in range(200)}
    assert not any(back.values())
