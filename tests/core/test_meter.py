"""The broker's count of message bytes held in queues, which the memory alarm reads."""

from __future__ import annotations

from core.helpers import CreditConsumer, new_broker, publish


def test_held_bytes_follow_messages_in_and_out() -> None:
    broker = new_broker()
    vh = broker.vhost("/")
    meter = broker.meter
    q = vh.declare_queue("m")
    publish(vh, "", "m", b"x" * 100)
    publish(vh, "", "m", b"y" * 50)
    publish(vh, "", "m", b"z" * 25)
    assert meter.held_bytes == 175
    consumer = CreditConsumer(credit=2)
    vh.consume(q, consumer, exclusive=False, now=0.0)
    assert len(consumer.received) == 2
    assert meter.held_bytes == 175  # delivered but unacked still counts
    consumer.ack(consumer.received[0])
    assert meter.held_bytes == 75
    q.requeue([consumer.received[1]], 0.0)  # back to ready: still held
    assert meter.held_bytes == 75
    vh.cancel(q, consumer, 0.0)
    assert vh.purge_queue("m") == 1
    # the third message, delivered once the first was acked, is still unacked
    assert [e.message.body for e in q.unacked.values()] == [b"z" * 25]
    assert meter.held_bytes == 25


def test_reject_expire_and_delete_release_bytes() -> None:
    broker = new_broker()
    vh = broker.vhost("/")
    meter = broker.meter
    q = vh.declare_queue("t", arguments={"x-message-ttl": 10})
    publish(vh, "", "t", b"a" * 10, now=0.0)
    assert meter.held_bytes == 10
    vh.tick(100.0)
    assert meter.held_bytes == 0
    q2 = vh.declare_queue("d")
    consumer = CreditConsumer(credit=5)
    vh.consume(q2, consumer, exclusive=False, now=0.0)
    for _ in range(3):
        publish(vh, "", "d", b"b" * 7)
    publish(vh, "", "d", b"c" * 7)
    assert meter.held_bytes == 28
    q2.reject(consumer.received[0], 0.0)
    assert meter.held_bytes == 21
    vh.delete_queue("d")
    assert meter.held_bytes == 0
    assert q.message_count == 0
