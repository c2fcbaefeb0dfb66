"""Queues: dispatch by credit, acknowledgements, requeue, priorities, TTL, expiry, limits."""

from __future__ import annotations

from core.helpers import CreditConsumer, drain, new_vhost, publish, ready_bodies
from gateway.core.queue import Queue
from gateway.core.vhost import VirtualHost


def _queue(vh: VirtualHost | None = None, name: str = "q", **kw: object) -> Queue:
    vh = vh or new_vhost()
    return vh.declare_queue(name, **kw)  # type: ignore[arg-type]


def _pub(q: Queue, *bodies: str, now: float = 0.0, **props: object) -> None:
    for b in bodies:
        assert publish(q.vhost, "", q.name, b, now=now, **props).routed


# -- dispatch -------------------------------------------------------------------------------

def test_round_robin_across_consumers() -> None:
    q = _queue()
    cs = [CreditConsumer(f"c{i}") for i in range(3)]
    for c in cs:
        q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, *(str(i) for i in range(9)))
    assert [c.bodies for c in cs] == [[b"0", b"3", b"6"], [b"1", b"4", b"7"],
                                      [b"2", b"5", b"8"]]
    assert q.message_count == 0
    assert len(q.unacked) == 9


def test_no_delivery_without_credit() -> None:
    q = _queue()
    c = CreditConsumer(credit=0)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "a", "b")
    assert c.received == []
    assert q.message_count == 2
    c.credit = 1
    q.dispatch(0)
    assert c.bodies == [b"a"]
    assert q.message_count == 1
    q.dispatch(0)  # no more credit: nothing moves
    assert c.bodies == [b"a"]


def test_prefetch_one_fair_dispatch() -> None:
    """basic_qos(prefetch_count=1): a busy worker gets nothing until it acks."""
    q = _queue()
    slow, fast = CreditConsumer("slow", credit=1), CreditConsumer("fast", credit=1)
    q.vhost.consume(q, slow, exclusive=False, now=0)
    q.vhost.consume(q, fast, exclusive=False, now=0)
    _pub(q, *(str(i) for i in range(6)))
    assert (slow.bodies, fast.bodies) == ([b"0"], [b"1"])
    for _ in range(4):  # the fast worker acks every time, the slow one never
        fast.ack(fast.received[-1])
    assert slow.bodies == [b"0"]
    assert fast.bodies == [b"1", b"2", b"3", b"4", b"5"]
    assert q.message_count == 0


def test_consumer_without_credit_is_skipped_not_blocking() -> None:
    q = _queue()
    full, free = CreditConsumer("full", credit=0), CreditConsumer("free")
    q.vhost.consume(q, full, exclusive=False, now=0)
    q.vhost.consume(q, free, exclusive=False, now=0)
    _pub(q, "a", "b", "c")
    assert free.bodies == [b"a", b"b", b"c"]
    assert full.received == []


def test_ack_settles_and_counts() -> None:
    q = _queue()
    c = CreditConsumer()
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "a", "b")
    c.ack(c.received[0])
    assert list(q.unacked) == [c.received[1].seq]
    c.ack(c.received[0])  # a second ack of the same entry is ignored
    assert q.stats_acked == 1
    assert q.stats_delivered == 2


def test_no_ack_consumer_settles_on_delivery() -> None:
    q = _queue(durable=True)
    c = CreditConsumer(no_ack=True)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "a", "b", delivery_mode=2)
    assert c.bodies == [b"a", b"b"]
    assert q.unacked == {}
    assert all(not e.persisted for e in c.received)


def test_basic_get() -> None:
    q = _queue()
    assert q.get(False, 0) is None
    _pub(q, "a", "b")
    e = q.get(False, 0)
    assert e is not None and e.message.body == b"a" and not e.redelivered
    assert e.seq in q.unacked
    e2 = q.get(True, 0)
    assert e2 is not None and e2.message.body == b"b"
    assert e2.seq not in q.unacked
    assert q.message_count == 0


def test_requeue_restores_order_and_sets_redelivered() -> None:
    q = _queue()
    c = CreditConsumer(credit=3)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "1", "2", "3", "4", "5")
    assert c.bodies == [b"1", b"2", b"3"]
    got = list(c.received)
    q.vhost.cancel(q, c, 0)
    q.requeue(reversed(got), 0)  # order of the call does not matter
    assert ready_bodies(q) == [b"1", b"2", b"3", b"4", b"5"]
    entries = list(q.iter_ready())
    assert [e.redelivered for e in entries] == [True, True, True, False, False]
    # requeueing an entry that is not unacked does nothing
    q.requeue(got, 0)
    assert q.message_count == 5
    c2 = CreditConsumer("c2")
    q.vhost.consume(q, c2, exclusive=False, now=0)
    assert c2.bodies == [b"1", b"2", b"3", b"4", b"5"]
    assert c2.received[0].redelivered and c2.received[0].delivery_count == 2
    assert q.stats_redelivered == 3


def test_requeue_with_consumer_redelivers_at_once() -> None:
    q = _queue()
    c = CreditConsumer(credit=2)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "1", "2", "3")
    first = c.received[0]
    q.requeue([first], 0)
    c.credit += 1
    q.dispatch(0)
    assert c.bodies == [b"1", b"2", b"1"]
    assert c.received[-1].redelivered


def test_requeue_into_deleted_queue_drops() -> None:
    q = _queue()
    _pub(q, "a")
    e = q.get(False, 0)
    assert e is not None
    q.vhost.delete_queue("q")
    q.requeue([e], 0)
    assert q.message_count == 0


def test_reject_without_dlx_drops() -> None:
    q = _queue()
    _pub(q, "a")
    e = q.get(False, 0)
    assert e is not None
    q.reject(e, 0)
    assert q.unacked == {} and q.message_count == 0


# -- priorities -----------------------------------------------------------------------------

def test_message_priorities_higher_first_fifo_within() -> None:
    q = _queue(arguments={"x-max-priority": 5})
    for body, prio in (("a0", 0), ("b3", 3), ("c9", 9), ("d3", 3), ("e", None), ("f5", 5),
                       ("g9", 9)):
        _pub(q, body, priority=prio)
    # 9 is capped at the maximum 5 and stays FIFO with the other 5
    assert ready_bodies(q) == [b"c9", b"f5", b"g9", b"b3", b"d3", b"a0", b"e"]
    taken = drain(q)
    assert [e.message.body for e in taken] == [b"c9", b"f5", b"g9", b"b3", b"d3", b"a0", b"e"]
    assert q.message_count == 0 and q.ready_bytes == 0


def test_priorities_ignored_without_x_max_priority() -> None:
    q = _queue()
    _pub(q, "low", priority=0)
    _pub(q, "high", priority=9)
    assert ready_bodies(q) == [b"low", b"high"]


def test_requeue_keeps_priority_level() -> None:
    q = _queue(arguments={"x-max-priority": 2})
    _pub(q, "lo", priority=0)
    _pub(q, "hi", priority=2)
    hi = q.get(False, 0)
    assert hi is not None and hi.message.body == b"hi"
    _pub(q, "hi2", priority=2)
    q.requeue([hi], 0)
    assert ready_bodies(q) == [b"hi", b"hi2", b"lo"]


def test_consumer_priorities() -> None:
    q = _queue()
    low = CreditConsumer("low", priority=0)
    high = CreditConsumer("high", credit=2, priority=10)
    q.vhost.consume(q, low, exclusive=False, now=0)
    q.vhost.consume(q, high, exclusive=False, now=0)
    _pub(q, "1", "2", "3", "4")
    assert high.bodies == [b"1", b"2"]  # first while it has credit
    assert low.bodies == [b"3", b"4"]  # then the lower one
    high.ack(high.received[0])
    _pub(q, "5")
    assert high.bodies == [b"1", b"2", b"5"]


def test_consumer_priorities_round_robin_among_equals() -> None:
    q = _queue()
    a = CreditConsumer("a", priority=5)
    b = CreditConsumer("b", priority=5)
    low = CreditConsumer("low", priority=1)
    for c in (a, b, low):
        q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "1", "2", "3", "4")
    assert sorted([len(a.received), len(b.received)]) == [2, 2]
    assert low.received == []


def test_single_active_consumer() -> None:
    q = _queue(arguments={"x-single-active-consumer": True})
    first, second = CreditConsumer("first", credit=2), CreditConsumer("second")
    q.vhost.consume(q, first, exclusive=False, now=0)
    q.vhost.consume(q, second, exclusive=False, now=0)
    _pub(q, "1", "2", "3")
    assert first.bodies == [b"1", b"2"]
    assert second.received == []  # waits although it has credit
    assert q.message_count == 1
    # the channel of the active consumer closes: its deliveries go back, then it goes
    q.requeue(first.received, 0)
    assert second.received == [] and q.message_count == 3
    q.vhost.cancel(q, first, 0)
    assert second.bodies == [b"1", b"2", b"3"]
    assert [e.redelivered for e in second.received] == [True, True, False]


# -- TTL ------------------------------------------------------------------------------------

def test_queue_ttl_expires_at_head_by_now() -> None:
    q = _queue(arguments={"x-message-ttl": 1000})
    _pub(q, "a", now=0.0)
    _pub(q, "b", now=0.5)
    assert q.expire(0.999) == 0
    assert q.expire(1.0) == 1  # expiry is inclusive
    assert ready_bodies(q) == [b"b"]
    e = q.get(True, 1.4)
    assert e is not None and e.message.body == b"b"


def test_per_message_expiration_and_lower_wins() -> None:
    q = _queue(arguments={"x-message-ttl": 5000})
    _pub(q, "short", expiration="100")
    _pub(q, "long", expiration="60000")  # the queue's 5 s is lower
    _pub(q, "none")
    _pub(q, "junk", expiration="soon")  # unparseable: queue TTL applies
    entries = list(q.iter_ready())
    assert [e.expires_at for e in entries] == [0.1, 5.0, 5.0, 5.0]
    q2 = _queue(q.vhost, "q2")
    _pub(q2, "m", expiration="250")
    _pub(q2, "forever")
    assert [e.expires_at for e in q2.iter_ready()] == [0.25, None]


def test_expired_messages_are_not_delivered() -> None:
    q = _queue(arguments={"x-message-ttl": 1000})
    c = CreditConsumer(credit=0)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "old", now=0)
    _pub(q, "new", now=2.0)
    c.credit = 5
    q.dispatch(2.5)
    assert c.bodies == [b"new"]
    assert q.get(False, 100.0) is None


def test_expiry_only_at_head() -> None:
    """Like RabbitMQ, a short-lived message behind a long-lived one waits for the head."""
    q = _queue()
    _pub(q, "long", expiration="10000")
    _pub(q, "short", expiration="10")
    assert q.expire(1.0) == 0
    assert q.message_count == 2
    assert q.expire(10.0) == 2


def test_tick_expires_messages() -> None:
    vh = new_vhost()
    q = _queue(vh, arguments={"x-message-ttl": 100})
    _pub(q, "a", "b", now=0)
    vh.tick(0.05)
    assert q.message_count == 2
    vh.tick(0.1)
    assert q.message_count == 0


def test_ttl_zero_delivers_to_a_waiting_consumer_or_drops() -> None:
    q = _queue(arguments={"x-message-ttl": 0})
    c = CreditConsumer(credit=1)
    q.vhost.consume(q, c, exclusive=False, now=0)
    _pub(q, "a", "b", now=5.0)
    assert c.bodies == [b"a"]  # delivered at once: it had not expired yet
    assert q.message_count == 0  # "b" found no consumer and expired
    q2 = _queue(q.vhost, "q2")
    c2 = CreditConsumer()
    q2.vhost.consume(q2, c2, exclusive=False, now=0)
    _pub(q2, "m", expiration="0", now=3.0)
    assert c2.bodies == [b"m"]


def test_x_expires_deletes_unused_queue_on_tick() -> None:
    vh = new_vhost()
    q = vh.declare_queue("temp", arguments={"x-expires": 1000}, now=10.0)
    vh.tick(10.9)
    assert "temp" in vh.queues
    vh.declare_queue("temp", arguments={"x-expires": 1000}, now=10.5)  # redeclare: used
    vh.tick(11.4)
    assert "temp" in vh.queues
    c = CreditConsumer()
    vh.consume(q, c, exclusive=False, now=11.4)
    vh.tick(100.0)
    assert "temp" in vh.queues  # a consumer keeps it alive
    vh.cancel(q, c, 100.0)
    vh.tick(100.5)
    assert "temp" in vh.queues
    q.get(True, 100.8)  # basic.get counts as use
    vh.tick(101.5)
    assert "temp" in vh.queues
    vh.tick(101.8)
    assert "temp" not in vh.queues and q.deleted


# -- length limits --------------------------------------------------------------------------

def test_max_length_drop_head() -> None:
    q = _queue(arguments={"x-max-length": 2})
    _pub(q, "1", "2", "3", "4")
    assert ready_bodies(q) == [b"3", b"4"]


def test_max_length_counts_ready_only() -> None:
    q = _queue(arguments={"x-max-length": 1})
    _pub(q, "1")
    assert q.get(False, 0) is not None
    _pub(q, "2")
    assert ready_bodies(q) == [b"2"] and len(q.unacked) == 1


def test_max_length_bytes_drop_head() -> None:
    q = _queue(arguments={"x-max-length-bytes": 10})
    _pub(q, "aaaa", "bbbb", "cccc")
    assert ready_bodies(q) == [b"bbbb", b"cccc"]
    assert q.ready_bytes == 8
    _pub(q, "dddddddddd")  # exactly the limit: everything else goes
    assert ready_bodies(q) == [b"dddddddddd"]


def test_drop_head_message_larger_than_the_limit_is_dropped_not_rejected() -> None:
    vh = new_vhost()
    q = _queue(vh, arguments={"x-max-length-bytes": 3})
    _pub(q, "ab")
    res = publish(vh, "", "q", b"too long")
    assert res.routed and not res.rejected  # drop-head never refuses a publish
    assert q.message_count == 0
    q0 = _queue(vh, "zero", arguments={"x-max-length": 0})
    res = publish(vh, "", "zero", b"m")
    assert res.routed and not res.rejected
    assert q0.message_count == 0


def test_reject_publish_overflow() -> None:
    vh = new_vhost()
    q = _queue(vh, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    other = _queue(vh, "other")
    vh.bind(q, "amq.fanout", "")
    vh.bind(other, "amq.fanout", "")
    assert not publish(vh, "amq.fanout", "", b"1").rejected
    assert not publish(vh, "amq.fanout", "", b"2").rejected
    res = publish(vh, "amq.fanout", "", b"3")
    assert res.routed and res.rejected
    assert ready_bodies(q) == [b"1", b"2"]
    assert ready_bodies(other) == [b"1", b"2", b"3"]  # the other queue still took it
    q.get(True, 0)
    assert not publish(vh, "amq.fanout", "", b"4").rejected
    assert ready_bodies(q) == [b"2", b"4"]


def test_reject_publish_bytes() -> None:
    vh = new_vhost()
    q = _queue(vh, arguments={"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    assert not publish(vh, "", "q", b"abc").rejected
    assert publish(vh, "", "q", b"abc").rejected
    assert not publish(vh, "", "q", b"ab").rejected
    assert q.ready_bytes == 5
