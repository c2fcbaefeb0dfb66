"""The sample history behind the UI's charts: `history.Series` and `Range` with chosen
times, `Stats` sampling a real core broker at chosen times, and the API serving the samples
in RabbitMQ's shape (`lengths_age`/`lengths_incr`, `msg_rates_age`/`msg_rates_incr`) to
httpx, with pika making the traffic. Channels' `message_stats` are checked here too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from mgmt_client import Api, api_for, q, wait_for

from gateway.core.message import Message, Properties
from gateway.management.answers import ApiError
from gateway.management.history import (
    INTERVAL,
    RETENTION,
    SLOTS,
    Range,
    Ranges,
    Series,
    add_overview_samples,
    add_queue_samples,
)
from gateway.management.stats import Stats
from gateway.store.base import MemoryStore

DEADLINE = 20.0  # seconds: a few of the broker's 5-second samples
T0 = 1_700_000_000  # a wall-clock time on a multiple of INTERVAL


# -- Series and Range ------------------------------------------------------------------------


def test_series_keeps_changes_only_and_answers_values_at_buckets() -> None:
    series = Series(10)
    for bucket, values in ((10, (0, 0)), (11, (0, 0)), (12, (3, 1)), (13, (3, 1)),
                           (14, (5, 0))):
        series.record(bucket, values)
    assert len(series) == 3  # equal neighbours are not stored again
    assert series.at([15, 14, 13, 12, 11, 10, 9], 2) == [
        (5, 0), (5, 0), (3, 1), (3, 1), (0, 0), (0, 0), (0, 0)]


def test_series_forgets_what_is_older_than_the_retention() -> None:
    series = Series(0)
    series.record(0, (1,))
    series.record(1, (2,))
    # an idle object keeps one change, however long it lives
    series.record(5 * SLOTS, (2,))
    assert len(series) == 1
    assert series.at([5 * SLOTS, 5 * SLOTS - SLOTS + 1], 1) == [(2,), (2,)]
    series.record(5 * SLOTS + 1, (7,))
    assert list(series.changes) == [(1, (2,)), (5 * SLOTS + 1, (7,))]


def test_series_before_its_start_is_zero() -> None:
    series = Series(20)
    series.record(20, (4, 4))
    assert series.at([21, 20, 19, 18], 2) == [(4, 4), (4, 4), (0, 0), (0, 0)]


def test_range_rounds_the_step_caps_the_age_and_aligns_the_buckets() -> None:
    assert Range.parse({"lengths_age": "60", "lengths_incr": "5"}, "lengths") == Range(60, 5)
    assert Range.parse({"lengths_age": "60", "lengths_incr": "7"}, "lengths") == Range(60, 10)
    assert Range.parse({"x_age": "86400", "x_incr": "60"}, "x") == Range(RETENTION, 60)
    assert Range.parse({}, "lengths") is None
    # newest first, on multiples of incr, one more than age / incr
    assert Range(60, 5).buckets(0, 100) == list(range(100, 87, -1))
    assert Range(20, 10).buckets(0, 101) == [100, 98, 96]
    # none before the history began, none before the kept window
    assert Range(60, 5).buckets(97, 100) == [100, 99, 98, 97]
    # 60 s is 12 buckets; 1005 - 120 = 885 is the oldest bucket kept, so 876 is left out
    assert SLOTS == 121
    assert Range(600, 60).buckets(0, 1005) == [996, 984, 972, 960, 948, 936, 924, 912,
                                               900, 888]
    assert Range(60, 5).buckets(-1, -1) == []


@pytest.mark.parametrize("query", [{"lengths_age": "60"}, {"lengths_incr": "5"},
                                   {"lengths_age": "a", "lengths_incr": "5"},
                                   {"lengths_age": "60", "lengths_incr": "0"},
                                   {"lengths_age": "-1", "lengths_incr": "5"}])
def test_range_refuses_what_it_cannot_answer(query: dict[str, str]) -> None:
    with pytest.raises(ApiError) as err:
        Ranges.of(query)
    assert err.value.status == 400 and "lengths_" in err.value.reason


# -- Stats over a real core broker -------------------------------------------------------------


def _publish(vh: Any, routing_key: str, count: int, now: float) -> None:
    exchange = vh.get_exchange("")
    for _ in range(count):
        msg = Message(vh.next_message_id(), "", routing_key, Properties(), b"x")
        vh.publish(exchange, routing_key, msg, now)


def test_stats_record_queue_and_vhost_samples_every_interval() -> None:
    from gateway.core.broker import Broker

    broker = Broker(MemoryStore())
    vh = broker.vhost("/")
    queue = vh.declare_queue("orders", durable=False, now=T0)
    stats = Stats(broker, set())
    stats.sample(T0 + 0.2)
    _publish(vh, "orders", 3, T0 + 1)
    stats.sample(T0 + 1.2)  # same 5-second bucket: no new history sample
    assert stats.last_bucket == T0 // INTERVAL
    stats.sample(T0 + 5.1)
    _publish(vh, "orders", 2, T0 + 6)
    entry = queue.get(False, T0 + 6)
    assert entry is not None
    queue.ack(entry)
    _publish(vh, "nowhere", 1, T0 + 6)
    stats.sample(T0 + 10.3)

    ranges = Ranges(Range(60, 5), Range(60, 5))
    out: dict[str, Any] = {"message_stats": {}}
    add_queue_samples(out, stats, queue, ranges)
    stamps = [s["timestamp"] for s in out["messages_details"]["samples"]]
    assert stamps == [(T0 + 10) * 1000, (T0 + 5) * 1000, T0 * 1000]
    ready = [s["sample"] for s in out["messages_ready_details"]["samples"]]
    assert ready == [4, 3, 0]
    assert [s["sample"] for s in out["message_stats"]["publish_details"]["samples"]] == \
        [5, 3, 0]
    assert [s["sample"] for s in out["message_stats"]["ack_details"]["samples"]] == [1, 0, 0]
    assert out["message_stats"]["publish_details"]["avg_rate"] == 0.5  # 5 in 10 s
    assert out["messages_ready_details"]["avg"] == pytest.approx(7 / 3)

    overview: dict[str, Any] = {}
    add_overview_samples(overview, stats, ["/"], ranges)
    rates = overview["message_stats"]
    assert [s["sample"] for s in rates["publish_details"]["samples"]] == [6, 3, 0]
    assert [s["sample"] for s in rates["return_unroutable_details"]["samples"]] == [1, 0, 0]
    assert [s["sample"] for s in overview["queue_totals"]["messages_details"]["samples"]] \
        == [4, 3, 0]
    # a vhost the user may not see adds nothing
    hidden: dict[str, Any] = {}
    add_overview_samples(hidden, stats, [], ranges)
    assert [s["sample"] for s in hidden["message_stats"]["publish_details"]["samples"]] == \
        [0, 0, 0]


def test_a_deleted_queue_still_counts_in_its_vhost_history() -> None:
    from gateway.core.broker import Broker

    broker = Broker(MemoryStore())
    vh = broker.vhost("/")
    vh.declare_queue("brief", durable=False, now=T0)
    stats = Stats(broker, set())
    _publish(vh, "brief", 4, T0)
    stats.sample(T0 + 0.5)
    vh.delete_queue("brief")
    stats.sample(T0 + 5.5)
    out: dict[str, Any] = {}
    add_overview_samples(out, stats, ["/"], Ranges(Range(10, 5), Range(10, 5)))
    # publishes never go down; the queue's messages went with it
    assert [s["sample"] for s in out["message_stats"]["publish_details"]["samples"]] == [4, 4]
    assert [s["sample"] for s in out["queue_totals"]["messages_details"]["samples"]] == [0, 4]


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


def poll(check: Callable[[], Any], what: str) -> Any:
    return wait_for(check, what, DEADLINE, 0.2)


HISTORY = {"lengths_age": 60, "lengths_incr": 5, "msg_rates_age": 60, "msg_rates_incr": 5}


def test_api_serves_samples_in_rabbitmq_shape(broker: Any, api: Api,
                                             unique: Callable[[str], str]) -> None:
    name = unique("history")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        for _ in range(6):
            ch.basic_publish("", name, b"sampled")
        after = time.time() * 1000

        def sampled() -> Any:
            queue = api.json(f"/queues/%2F/{q(name)}", **HISTORY)
            newest = queue["messages_details"]["samples"][0]
            return queue if newest["timestamp"] >= after else None

        queue = poll(sampled, "a sample after the publishes")
        for key in ("messages_details", "messages_ready_details",
                    "messages_unacknowledged_details"):
            details = queue[key]
            assert set(details) == {"rate", "samples", "avg", "avg_rate"}
        ready = queue["messages_ready_details"]["samples"]
        assert ready[0]["sample"] == 6
        stamps = [s["timestamp"] for s in ready]
        assert all(t % 5000 == 0 for t in stamps)
        assert all(a - b == 5000 for a, b in zip(stamps, stamps[1:], strict=False))
        assert 1 <= len(stamps) <= 13
        publish = queue["message_stats"]["publish_details"]
        assert publish["samples"][0]["sample"] == queue["message_stats"]["publish"] == 6
        # lists carry them too, and only what was asked for
        listed = api.json("/queues/%2F", name=name, lengths_age=30, lengths_incr=10)
        assert len(listed) == 1
        assert "samples" in listed[0]["messages_details"]
        assert "samples" not in listed[0]["message_stats"]["publish_details"]
        plain = api.json(f"/queues/%2F/{q(name)}")
        assert "samples" not in plain["messages_details"]

        overview = api.json("/overview", **HISTORY)
        totals = overview["queue_totals"]["messages_ready_details"]["samples"]
        assert totals[0]["sample"] >= 6
        assert overview["message_stats"]["publish_details"]["samples"][0]["sample"] >= 6
        assert overview["sample_retention_policies"]["basic"] == [RETENTION]
    finally:
        api.delete(f"/queues/%2F/{q(name)}")
        conn.close()


def test_api_refuses_half_a_range(api: Api) -> None:
    response = api.get("/overview", msg_rates_age=60)
    assert response.status_code == 400
    assert response.json()["reason"] == "msg_rates_age and msg_rates_incr go together"
    assert api.get("/queues", lengths_age="x", lengths_incr=5).status_code == 400


def test_channels_carry_message_stats(broker: Any, api: Api,
                                      unique: Callable[[str], str]) -> None:
    name = unique("chan-stats")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=17)
        ch.queue_declare(name, auto_delete=True)
        for _ in range(5):
            ch.basic_publish("", name, b"counted")
        got = []
        for _ in range(3):
            method, _props, _body = ch.basic_get(name)
            assert method is not None
            got.append(method.delivery_tag)
        ch.basic_ack(got[-1], multiple=True)
        rows = [c for c in api.json("/channels") if c["prefetch_count"] == 17]
        assert len(rows) == 1
        stats = rows[0]["message_stats"]
        assert (stats["publish"], stats["deliver_get"], stats["ack"]) == (5, 3, 3)
        assert set(stats["publish_details"]) == {"rate"}
        assert rows[0]["user"] == "guest" and rows[0]["vhost"] == "/"

        # rates: over the last seconds of the broker's once-a-second samples
        deadline = time.monotonic() + DEADLINE
        while True:
            ch.basic_publish("", name, b"again")
            method, _props, _body = ch.basic_get(name)
            assert method is not None
            ch.basic_ack(method.delivery_tag)
            row = next(c for c in api.json("/channels") if c["prefetch_count"] == 17)
            rates = [row["message_stats"][f"{k}_details"]["rate"]
                     for k in ("publish", "deliver_get", "ack")]
            if all(r > 0 for r in rates):
                break
            assert time.monotonic() < deadline, f"no rates: {row['message_stats']}"
            conn.sleep(0.1)

        ch.tx_select()
        ch.basic_publish("", name, b"uncommitted")
        ch.basic_ack(got[-1] + 100, multiple=False)  # held until commit
        row = poll(lambda: [c for c in api.json("/channels") if c["prefetch_count"] == 17
                            and c["messages_uncommitted"] == 1], "the uncommitted publish")[0]
        assert row["transactional"] is True and row["acks_uncommitted"] == 1
        ch.tx_rollback()
    finally:
        conn.close()
