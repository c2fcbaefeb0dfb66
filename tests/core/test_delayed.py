"""Delayed messages in the core (`gateway.core.delayed`): the x-delayed-message exchange
type, holding by `x-delay`, release by the tick in due order, limits, and the store's
records across a restart and a compaction. Time is the `now` passed in."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.helpers import drain, flush, new_vhost, open_disk_broker, publish, ready_bodies, restart
from gateway.core.delayed import MAX_DELAY_MS, delay_of
from gateway.core.errors import CommandInvalid, PreconditionFailed
from gateway.core.vhost import VirtualHost

T0 = 1_700_000_000.0  # wall-clock seconds, as the server passes time.time()


def _delayed(vh: VirtualHost, name: str = "dx", kind: str = "direct",
             durable: bool = False) -> None:
    vh.declare_exchange(name, "x-delayed-message", durable=durable,
                        arguments={"x-delayed-type": kind})


def _bound(vh: VirtualHost, queue: str, exchange: str = "dx", key: str = "k",
           durable: bool = False) -> None:
    vh.declare_queue(queue, durable=durable)
    vh.bind(vh.queues[queue], exchange, key)


@pytest.mark.parametrize(("value", "expected"), [
    (5000, 5000), ("250", 250), (1500.9, 1500), (Decimal("12.5"), 12), (0, None), (-5, None),
    (True, None), ("soon", None), ("", None), (None, None), (MAX_DELAY_MS, MAX_DELAY_MS),
    (MAX_DELAY_MS + 1, None), (float("nan"), None), (b"40", 40),
])
def test_delay_header_is_read_as_the_plugin_reads_it(value: Any, expected: int | None) -> None:
    assert delay_of({"x-delay": value}) == expected
    assert delay_of(None) is None and delay_of({}) is None


def test_declare_checks_x_delayed_type_as_the_plugin() -> None:
    vh = new_vhost()
    with pytest.raises(PreconditionFailed) as missing:
        vh.declare_exchange("a", "x-delayed-message")
    assert missing.value.text == ("PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' "
                                  "must be an existing exchange type")
    with pytest.raises(PreconditionFailed):
        vh.declare_exchange("a", "x-delayed-message", arguments={"x-delayed-type": 5})
    with pytest.raises(PreconditionFailed):
        vh.declare_exchange("a", "x-delayed-message",
                            arguments={"x-delayed-type": "x-delayed-message"})
    with pytest.raises(CommandInvalid) as unknown:
        vh.declare_exchange("a", "x-delayed-message", arguments={"x-delayed-type": "foo"})
    assert unknown.value.code == 503 and "unknown exchange type 'foo'" in unknown.value.text
    for kind in ("direct", "fanout", "topic", "headers"):
        ex = vh.declare_exchange(f"x-{kind}", "x-delayed-message",
                                 arguments={"x-delayed-type": kind})
        assert ex.type == "x-delayed-message" and ex.kind == kind
    # a redeclare compares alternate-exchange alone, as RabbitMQ's assert_equivalence
    assert vh.declare_exchange("x-topic", "x-delayed-message").kind == "topic"


def test_held_until_due_then_routed_with_negative_x_delay() -> None:
    vh = new_vhost()
    _delayed(vh)
    _bound(vh, "q")
    res = publish(vh, "dx", "k", b"later", now=T0, headers={"x-delay": 2000, "h": 1},
                  content_type="text/plain")
    assert res.held and not res.routed and not res.rejected
    assert len(vh.delayed) == 1 and vh.delayed.by_exchange == {"dx": 1}
    assert vh.meter.held_bytes == len(b"later")  # the memory alarm counts held bodies
    vh.tick(T0 + 1.999)
    assert ready_bodies(vh.queues["q"]) == []
    vh.tick(T0 + 2.0)
    [entry] = drain(vh.queues["q"])
    assert entry.message.body == b"later"
    assert entry.message.properties.headers == {"x-delay": -2000, "h": 1}
    assert entry.message.properties.content_type == "text/plain"
    assert len(vh.delayed) == 0 and vh.delayed.by_exchange == {}
    assert vh.meter.held_bytes == 0


def test_no_or_bad_x_delay_is_routed_at_once() -> None:
    vh = new_vhost()
    _delayed(vh)
    _bound(vh, "q")
    for headers in (None, {"x-delay": 0}, {"x-delay": -10}, {"x-delay": "abc"}):
        assert publish(vh, "dx", "k", b"now", now=T0, headers=headers).routed
    assert ready_bodies(vh.queues["q"]) == [b"now"] * 4
    # not delayed: the header stays as it was (the plugin swaps it only when it delays)
    assert [e.message.properties.headers for e in drain(vh.queues["q"])][2] == {"x-delay": -10}


def test_released_in_due_order_ties_in_arrival_order() -> None:
    vh = new_vhost()
    _delayed(vh, kind="fanout")
    _bound(vh, "q", key="")
    for body, delay in ((b"c", 3000), (b"a", 1000), (b"b1", 2000), (b"b2", 2000)):
        publish(vh, "dx", "", body, now=T0, headers={"x-delay": delay})
    assert vh.release_due(T0 + 0.5) == 0
    assert vh.release_due(T0 + 10) == 4
    assert ready_bodies(vh.queues["q"]) == [b"a", b"b1", b"b2", b"c"]


def test_topic_delayed_type_routes_by_pattern() -> None:
    vh = new_vhost()
    _delayed(vh, kind="topic")
    _bound(vh, "eu", key="orders.eu.*")
    _bound(vh, "all", key="orders.#")
    publish(vh, "dx", "orders.eu.fr", b"1", now=T0, headers={"x-delay": 100})
    publish(vh, "dx", "orders.us.ny", b"2", now=T0, headers={"x-delay": 100})
    vh.tick(T0 + 1)
    assert ready_bodies(vh.queues["eu"]) == [b"1"]
    assert ready_bodies(vh.queues["all"]) == [b"1", b"2"]


def test_limits_refuse_with_406() -> None:
    vh = new_vhost()
    _delayed(vh)
    vh.delayed.max_messages = 2
    for _ in range(2):
        publish(vh, "dx", "k", b"x", now=T0, headers={"x-delay": 1000})
    with pytest.raises(PreconditionFailed) as err:
        publish(vh, "dx", "k", b"x", now=T0, headers={"x-delay": 1000})
    assert err.value.code == 406 and "delayed message limit" in err.value.text
    vh.delayed.max_messages = 0
    vh.delayed.max_bytes = 10
    with pytest.raises(PreconditionFailed):
        publish(vh, "dx", "k", b"x" * 9, now=T0, headers={"x-delay": 1000})
    assert len(vh.delayed) == 2
    vh.tick(T0 + 2)  # released: room again
    publish(vh, "dx", "k", b"x" * 9, now=T0, headers={"x-delay": 1000})


def test_deleting_the_exchange_drops_what_it_holds() -> None:
    vh = new_vhost()
    _delayed(vh)
    _delayed(vh, "other")
    _bound(vh, "q")
    vh.bind(vh.queues["q"], "other", "k")
    publish(vh, "dx", "k", b"gone", now=T0, headers={"x-delay": 1000})
    publish(vh, "other", "k", b"kept", now=T0, headers={"x-delay": 1000})
    vh.delete_exchange("dx")
    assert len(vh.delayed) == 1
    vh.tick(T0 + 5)
    assert ready_bodies(vh.queues["q"]) == [b"kept"]


def test_tick_pops_only_what_is_due() -> None:
    """The heap: a tick with nothing due touches only its top."""
    vh = new_vhost()
    _delayed(vh)
    _bound(vh, "q")
    for i in range(1000):
        publish(vh, "dx", "k", b"x", now=T0, headers={"x-delay": 1000 + i})
    assert vh.delayed.next_due() == T0 + 1.0
    assert vh.release_due(T0 + 1.0105) == 11
    assert len(vh.delayed) == 989


def test_held_messages_survive_a_restart(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    _delayed(vh, durable=True)
    _bound(vh, "q", durable=True)
    vh.declare_exchange("tx", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    publish(vh, "dx", "k", b"p1", now=T0, delivery_mode=2, headers={"x-delay": 1000})
    publish(vh, "dx", "k", b"p5", now=T0, delivery_mode=2, headers={"x-delay": 5000})
    publish(vh, "dx", "k", b"transient", now=T0, delivery_mode=1, headers={"x-delay": 1000})
    flush(broker.store)
    broker = restart(broker, tmp_path, now=T0 + 3)
    vh = broker.vhost("/")
    assert len(vh.delayed) == 2 and "tx" not in vh.exchanges
    vh.tick(T0 + 3)  # p1 fell due while the broker was down
    assert ready_bodies(vh.queues["q"]) == [b"p1"]
    [e] = drain(vh.queues["q"])
    assert e.message.properties.headers == {"x-delay": -1000}
    # routed: its record is gone, and it is not held again after another restart
    broker = restart(broker, tmp_path, now=T0 + 3)
    vh = broker.vhost("/")
    assert len(vh.delayed) == 1
    vh.tick(T0 + 4.9)
    assert ready_bodies(vh.queues["q"]) == []
    vh.tick(T0 + 5)
    assert ready_bodies(vh.queues["q"]) == [b"p5"]
    assert broker.next_message_id() > e.message.id


def test_held_messages_survive_a_compaction(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    _delayed(vh, durable=True)
    _bound(vh, "q", durable=True)
    publish(vh, "dx", "k", b"a", now=T0, delivery_mode=2, headers={"x-delay": 2000})
    publish(vh, "dx", "k", b"b", now=T0, delivery_mode=2, headers={"x-delay": 1000})
    flush(broker.store)
    store: Any = broker.store
    store.compact(broker.snapshot())
    broker = restart(broker, tmp_path, now=T0)
    vh = broker.vhost("/")
    vh.tick(T0 + 10)
    assert ready_bodies(vh.queues["q"]) == [b"b", b"a"]


def test_deleted_exchange_and_vhost_drop_records(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    _delayed(vh, durable=True)
    publish(vh, "dx", "k", b"a", now=T0, delivery_mode=2, headers={"x-delay": 2000})
    vh.delete_exchange("dx")
    broker.add_vhost("v2")
    _delayed(broker.vhost("v2"), durable=True)
    publish(broker.vhost("v2"), "dx", "k", b"b", now=T0, delivery_mode=2,
            headers={"x-delay": 2000})
    broker.delete_vhost("v2")
    assert broker.meter.held_bytes == 0
    broker = restart(broker, tmp_path, now=T0)
    assert len(broker.vhost("/").delayed) == 0 and "v2" not in broker.vhosts
