"""Queues larger than memory: past the paging threshold, new messages' bodies live in the
page file and come back in order (gateway.core.paging)."""

from __future__ import annotations

from pathlib import Path

from core.helpers import CreditConsumer, drain, flush, new_broker, publish

from durability.helpers_dur import restart, start, stop
from gateway.core.paging import PAGE_ENTRIES
from gateway.store.spill import PAGE_FILE

BODY = 4096


def body(n: int) -> bytes:
    return f"{n:08d}".encode() * (BODY // 8)


def test_order_and_content_survive_paging() -> None:
    broker = new_broker()
    broker.meter.paging_threshold = 64 * 1024
    vh = broker.vhost("/")
    q = vh.declare_queue("big")
    total = 3 * PAGE_ENTRIES // 2 + 7
    for n in range(total):
        publish(vh, "", "big", body(n), headers={"n": n}, content_type="x/y")
    assert q.message_count == total
    assert broker.meter.paged_bytes > 0
    # memory holds the threshold plus at most one page being filled
    assert broker.meter.held_bytes <= 64 * 1024 + 512 * 1024 + BODY
    got = drain(q)
    assert [e.message.body for e in got] == [body(n) for n in range(total)]
    assert [e.message.properties.headers["n"] for e in got] == list(range(total))
    assert got[-1].message.properties.content_type == "x/y"
    assert q.message_count == 0 and broker.meter.paged_bytes == 0
    assert broker.meter.held_bytes == 0


def test_consumer_catching_up_and_requeue_keep_order() -> None:
    broker = new_broker()
    broker.meter.paging_threshold = 0  # page everything
    vh = broker.vhost("/")
    q = vh.declare_queue("q")
    for n in range(PAGE_ENTRIES + 10):
        publish(vh, "", "q", body(n))
    c = CreditConsumer(credit=3)
    vh.consume(q, c, exclusive=False, now=0.0)
    assert c.bodies == [body(0), body(1), body(2)]
    q.requeue(list(c.received), 0.0)  # back to the head, in order, marked redelivered
    c.received.clear()
    c.credit = 10**6
    q.dispatch(0.0)
    assert c.bodies == [body(n) for n in range(PAGE_ENTRIES + 10)]
    assert [e.redelivered for e in c.received[:4]] == [True, True, True, False]
    c.ack_all()
    assert broker.meter.held_bytes == 0


def test_priority_levels_page_separately() -> None:
    broker = new_broker()
    broker.meter.paging_threshold = 0
    vh = broker.vhost("/")
    q = vh.declare_queue("prio", arguments={"x-max-priority": 2})
    for n in range(PAGE_ENTRIES + 5):
        publish(vh, "", "prio", body(n), priority=n % 3)
    got = [e.message for e in drain(q)]
    prios = [m.priority for m in got]
    assert prios == sorted(prios, reverse=True)
    for p in range(3):
        ns = [int(m.body[:8]) for m in got if m.priority == p]
        assert ns == sorted(ns)


def test_drop_head_and_purge_with_pages() -> None:
    broker = new_broker()
    broker.meter.paging_threshold = 0
    vh = broker.vhost("/")
    q = vh.declare_queue("capped", arguments={"x-max-length": 100})
    for n in range(PAGE_ENTRIES + 50):
        publish(vh, "", "capped", body(n))
    assert q.message_count == 100
    assert [int(e.message.body[:8]) for e in drain(q)] == list(
        range(PAGE_ENTRIES - 50, PAGE_ENTRIES + 50))
    q2 = vh.declare_queue("purged")
    for n in range(PAGE_ENTRIES * 2):
        publish(vh, "", "purged", body(n))
    assert q2.purge() == PAGE_ENTRIES * 2
    assert broker.meter.paged_bytes == 0 and broker.meter.held_bytes == 0


def test_paged_persistent_messages_recover_and_purged_ones_do_not(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    broker.meter.paging_threshold = 0
    vh = broker.vhost("/")
    vh.declare_queue("keep", durable=True)
    vh.declare_queue("purge-me", durable=True)
    n_msgs = PAGE_ENTRIES + 100
    for n in range(n_msgs):
        publish(vh, "", "keep", body(n), delivery_mode=2)
        publish(vh, "", "purge-me", body(n), delivery_mode=2)
        if n == 5:
            publish(vh, "", "keep", b"transient", delivery_mode=1)
    assert (tmp_path / PAGE_FILE).stat().st_size > 0
    assert vh.queues["purge-me"].purge() == n_msgs
    flush(broker.store)
    broker, auth = restart(broker, tmp_path)
    vh = broker.vhost("/")
    assert vh.queues["purge-me"].message_count == 0
    got = drain(vh.queues["keep"])
    assert [e.message.body for e in got] == [body(n) for n in range(n_msgs)]
    assert not any(e.redelivered for e in got)  # none had been delivered before
    stop(broker)


def test_page_file_is_truncated_once_drained(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    broker.meter.paging_threshold = 0
    vh = broker.vhost("/")
    q = vh.declare_queue("q")
    for n in range(PAGE_ENTRIES * 2):
        publish(vh, "", "q", body(n))
    assert (tmp_path / PAGE_FILE).stat().st_size > 0
    assert not broker.store.needs_compaction()  # deferred while pages are live
    drain(q)
    assert (tmp_path / PAGE_FILE).stat().st_size == 0
    vh.declare_queue("gone")
    for n in range(PAGE_ENTRIES * 2):
        publish(vh, "", "gone", body(n))
    vh.delete_queue("gone")
    assert (tmp_path / PAGE_FILE).stat().st_size == 0
    assert broker.meter.paged_bytes == 0
    stop(broker)
