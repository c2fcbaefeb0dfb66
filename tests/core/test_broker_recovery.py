"""A broker restarted on the same data directory: durable exchanges, queues, bindings and
persistent messages come back through `Broker.recover` and the real `DiskStore`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from core.helpers import (
    CreditConsumer,
    Owner,
    flush,
    open_disk_broker,
    publish,
    ready_bodies,
    restart,
    routed_names,
)
from gateway.core.broker import Broker
from gateway.core.message import Properties
from gateway.store.base import PROPERTY_FIELDS, Recovered
from gateway.store.disk import LOG_NAME, DiskStore


def test_persistent_message_in_durable_queue_survives(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("jobs", durable=True)
    headers = {"s": "x", "n": 7, "big": 2**64 - 1, "f": 1.5, "d": Decimal("1.25"),
               "b": b"\x00\x01", "t": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
               "nested": {"l": [1, "two", None, True]}}
    res = publish(vh, "", "jobs", b"\x00body\xff", delivery_mode=2, content_type="app/json",
                  content_encoding="gzip", headers=headers, priority=3, correlation_id="c-1",
                  reply_to="replies", expiration="60000", message_id="m-1",
                  timestamp=datetime(2024, 1, 1, tzinfo=UTC), type="job", user_id="guest",
                  app_id="app", cluster_id="cl")
    assert res.routed
    before = next(iter(vh.queues["jobs"].iter_ready())).message
    assert broker.store.durable < broker.store.appended
    flush(broker.store)
    assert broker.store.durable == broker.store.appended

    broker2 = restart(broker, tmp_path, now=100.0)
    q = broker2.vhost("/").queues["jobs"]
    assert q.durable and q.message_count == 1
    e = next(iter(q.iter_ready()))
    m = e.message
    assert not e.redelivered  # never delivered before the restart
    assert m.body == b"\x00body\xff"
    assert (m.id, m.exchange, m.routing_key) == (before.id, "", "jobs")
    assert m.properties == before.properties
    assert m.properties.headers == headers
    assert m.properties.delivery_mode == 2 and m.properties.priority == 3
    # new ids do not collide with recovered ones
    assert broker2.next_message_id() > m.id


def test_acked_transient_and_non_durable_do_not_come_back(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("durable", durable=True)
    vh.declare_queue("transient-q")
    publish(vh, "", "durable", b"acked", delivery_mode=2)
    publish(vh, "", "durable", b"transient", delivery_mode=1)
    publish(vh, "", "durable", b"kept", delivery_mode=2)
    publish(vh, "", "durable", b"no-ack-get", delivery_mode=2)
    publish(vh, "", "durable", b"unacked", delivery_mode=2)
    publish(vh, "", "transient-q", b"lost", delivery_mode=2)
    q = vh.queues["durable"]
    e = q.get(False, 0)
    assert e is not None and e.message.body == b"acked"
    flush(broker.store)  # the enqueue and the ack land in different batches
    q.ack(e)
    rest = [q.get(False, 0) for _ in range(4)]
    assert [x.message.body for x in rest if x] == [b"transient", b"kept", b"no-ack-get",
                                                   b"unacked"]
    q.requeue([x for x in rest if x and x.message.body == b"kept"], 0)
    q.get(True, 0)  # "kept" is delivered again, but no_ack this time: settled
    e2 = q.get(True, 0)
    assert e2 is None
    publish(vh, "", "durable", b"kept2", delivery_mode=2)

    broker2 = restart(broker, tmp_path)
    vh2 = broker2.vhost("/")
    assert "transient-q" not in vh2.queues
    # "unacked" and "no-ack-get" were handed out with ack pending: they come back
    assert ready_bodies(vh2.queues["durable"]) == [b"no-ack-get", b"unacked", b"kept2"]


def test_exclusive_durable_queue_does_not_come_back(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("excl", durable=True, exclusive=True, owner=Owner("c"))
    vh.bind(q, "amq.direct", "k")
    publish(vh, "", "excl", b"m", delivery_mode=2)
    broker2 = restart(broker, tmp_path)
    assert "excl" not in broker2.vhost("/").queues
    assert not broker2.vhost("/").get_exchange("amq.direct").bindings


def test_topology_survives(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    broker.add_vhost("other")
    vh.declare_exchange("events", "topic", durable=True)
    vh.declare_exchange("ae", "fanout", durable=True, internal=True)
    vh.declare_exchange("main", "direct", durable=True, auto_delete=True,
                        arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("transient-x", "fanout")
    vh.declare_exchange("gone", "fanout", durable=True)
    q = vh.declare_queue("q", durable=True, arguments={"x-max-length": 10,
                                                       "x-dead-letter-exchange": "ae"})
    q_ad = vh.declare_queue("q-ad", durable=True, auto_delete=True)
    vh.declare_queue("q-gone", durable=True)
    h = vh.declare_queue("h", durable=True)
    vh.bind(q, "events", "a.#")
    vh.bind(q, "events", "*.b")
    vh.bind(q, "main", "k")
    vh.bind(q_ad, "ae", "")
    vh.bind(h, "amq.headers", "", {"x-match": "any", "a": 1, "b": "two"})
    vh.bind(vh.get_exchange("main"), "events", "to-main.#")  # exchange to exchange
    vh.bind(vh.get_exchange("amq.fanout"), "events", "fan.#")  # to a predeclared one
    vh.bind(q, "amq.topic", "t.*")  # from a predeclared one
    vh.bind(q, "transient-x", "")  # not durable: not stored
    vh.bind(vh.get_exchange("gone"), "events", "x")
    vh.delete_exchange("gone")
    vh.delete_queue("q-gone")
    vh.unbind(q, "events", "*.b")
    broker.vhost("other").declare_queue("oq", durable=True)

    before = broker.snapshot()
    broker2 = restart(broker, tmp_path)
    vh2 = broker2.vhost("/")
    assert set(broker2.vhosts) == {"/", "other"}
    assert "oq" in broker2.vhost("other").queues
    assert set(vh2.exchanges) == {"", "amq.direct", "amq.fanout", "amq.topic",
                                  "amq.headers", "amq.match", "amq.rabbitmq.trace",
                                  "amq.rabbitmq.event", "events", "ae",
                                  "main"}
    main = vh2.exchanges["main"]
    assert (main.type, main.durable, main.auto_delete, main.internal) == (
        "direct", True, True, False)
    assert main.alternate_exchange == "ae"
    assert vh2.exchanges["ae"].internal
    assert set(vh2.queues) == {"q", "q-ad", "h"}
    q2 = vh2.queues["q"]
    assert q2.args.max_length == 10 and q2.args.dlx == "ae"
    assert vh2.queues["q-ad"].auto_delete
    events = vh2.exchanges["events"]
    assert routed_names(vh2.route(events, "a.x", None)) == {"q"}
    assert routed_names(vh2.route(events, "x.b", None)) == set()
    # events -> main (no binding for the key) -> main's alternate exchange -> q-ad
    assert routed_names(vh2.route(events, "to-main.1", None)) == {"q-ad"}
    assert routed_names(vh2.route(main, "k", None)) == {"q"}
    assert routed_names(vh2.route(main, "nope", None)) == {"q-ad"}  # via the AE
    assert routed_names(vh2.route(vh2.exchanges["amq.topic"], "t.1", None)) == {"q"}
    assert routed_names(vh2.route(vh2.exchanges["amq.headers"], "", {"b": "two"})) == {"h"}
    assert {(b.source.name, b.destination.name, b.routing_key)
            for b in vh2.bindings()} == {
        ("events", "q", "a.#"), ("main", "q", "k"), ("ae", "q-ad", ""), ("amq.headers", "h", ""),
        ("events", "main", "to-main.#"), ("events", "amq.fanout", "fan.#"),
        ("amq.topic", "q", "t.*")}
    assert q2.bound_by  # the queue knows its bindings again (for delete)
    _same_state(before, broker2.snapshot())


def _same_state(a: Recovered, b: Recovered) -> None:
    def norm(s: Recovered) -> tuple[object, ...]:
        return (
            sorted(map(repr, s.exchanges)), sorted(map(repr, s.queues)),
            sorted(map(repr, s.bindings)),
            {k: [(seq, repr(m)) for seq, m in v] for k, v in s.messages.items() if v},
        )
    assert norm(a) == norm(b)


def test_unbind_with_arguments_in_another_order_is_durable(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("h", durable=True)
    vh.bind(q, "amq.headers", "", {"x-match": "all", "a": 1, "b": 2})
    vh.unbind(q, "amq.headers", "", {"b": 2, "a": 1, "x-match": "all"})
    assert not vh.get_exchange("amq.headers").bindings
    broker2 = restart(broker, tmp_path)
    assert not broker2.vhost("/").get_exchange("amq.headers").bindings


def test_deleting_a_queue_forgets_its_messages(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    publish(vh, "", "q", b"old", delivery_mode=2)
    flush(broker.store)
    vh.delete_queue("q")
    vh.declare_queue("q", durable=True)
    publish(vh, "", "q", b"new", delivery_mode=2)
    broker2 = restart(broker, tmp_path)
    assert ready_bodies(broker2.vhost("/").queues["q"]) == [b"new"]


def test_purge_is_durable(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    for i in range(3):
        publish(vh, "", "q", str(i), delivery_mode=2)
    flush(broker.store)
    assert vh.purge_queue("q") == 3
    broker2 = restart(broker, tmp_path)
    assert broker2.vhost("/").queues["q"].message_count == 0


def test_one_message_in_many_queues_is_stored_once_and_shared(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    for n in ("a", "b", "c"):
        vh.bind(vh.declare_queue(n, durable=True), "amq.fanout", "")
    publish(vh, "amq.fanout", "", b"x" * 10_000, delivery_mode=2)
    size = flush(broker.store)
    assert 10_000 < size < 20_000  # the body is written once
    qa = vh.queues["a"]
    e = qa.get(False, 0)
    assert e is not None
    qa.ack(e)
    flush(broker.store)
    broker.store.close()
    broker2 = Broker(DiskStore(tmp_path, fsync=False))
    assert broker2.recover(0.0) == 2  # entries restored, one message
    vh2 = broker2.vhost("/")
    assert [vh2.queues[n].message_count for n in "abc"] == [0, 1, 1]
    mb = next(iter(vh2.queues["b"].iter_ready())).message
    mc = next(iter(vh2.queues["c"].iter_ready())).message
    assert mb.body == b"x" * 10_000
    assert mb is mc


def test_restored_queue_keeps_order_priority_and_takes_new_messages(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("p", durable=True, arguments={"x-max-priority": 3})
    for body, prio in (("a", 0), ("b", 2), ("c", 0), ("d", 2)):
        publish(vh, "", "p", body, delivery_mode=2, priority=prio)
    broker2 = restart(broker, tmp_path)
    vh2 = broker2.vhost("/")
    q = vh2.queues["p"]
    assert ready_bodies(q) == [b"b", b"d", b"a", b"c"]
    publish(vh2, "", "p", b"e", delivery_mode=2, priority=2)
    assert ready_bodies(q) == [b"b", b"d", b"e", b"a", b"c"]
    c = CreditConsumer(credit=2)
    vh2.consume(q, c, exclusive=False, now=0)
    # never delivered before the restart: not redelivered
    assert c.bodies == [b"b", b"d"] and not any(e.redelivered for e in c.received)
    c.ack_all()
    assert c.bodies == [b"b", b"d", b"e", b"a"]
    broker3 = restart(broker2, tmp_path)
    # the two acked are gone; "e" and "a" were delivered but not acked; "c" was ready
    q3 = broker3.vhost("/").queues["p"]
    assert ready_bodies(q3) == [b"e", b"a", b"c"]
    assert [e.redelivered for e in q3.iter_ready()] == [True, True, False]


def test_dead_lettered_persistent_message_moves_durably(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_exchange("dlx", "fanout", durable=True)
    dead = vh.declare_queue("dead", durable=True)
    vh.bind(dead, "dlx", "")
    work = vh.declare_queue("work", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    publish(vh, "", "work", b"m", delivery_mode=2, headers={"k": "v"})
    flush(broker.store)
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 50.0)
    broker2 = restart(broker, tmp_path)
    vh2 = broker2.vhost("/")
    assert vh2.queues["work"].message_count == 0
    d = next(iter(vh2.queues["dead"].iter_ready()))
    assert d.message.body == b"m"
    headers = d.message.properties.headers
    assert headers is not None and headers["k"] == "v"
    assert headers["x-death"][0]["reason"] == "rejected"
    assert headers["x-death"][0]["time"] == datetime.fromtimestamp(50, UTC)


def test_recovery_is_repeatable(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    publish(vh, "", "q", b"m", delivery_mode=2)
    b2 = restart(broker, tmp_path)
    b3 = restart(b2, tmp_path)  # recovered but never touched: the same again
    b4 = restart(b3, tmp_path)
    assert ready_bodies(b4.vhost("/").queues["q"]) == [b"m"]
    _same_state(b2.snapshot(), b4.snapshot())


def test_fresh_directory_recovers_empty(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "dir"
    broker = Broker(DiskStore(data_dir, fsync=False))
    assert broker.recover(0.0) == 0
    assert set(broker.vhosts) == {"/"}
    assert (data_dir / LOG_NAME).exists()
    assert broker.snapshot().queues == []


def test_property_fields_match_the_message_model() -> None:
    assert set(PROPERTY_FIELDS) == set(Properties.__slots__)


def test_snapshot_lists_persisted_entries_only(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    publish(vh, "", "q", b"p", delivery_mode=2)
    publish(vh, "", "q", b"t")
    e = vh.queues["q"].get(False, 0)  # unacked entries are still in the snapshot
    assert e is not None
    snap = broker.snapshot()
    assert [m.body for _, m in snap.messages[("/", "q")]] == [b"p"]
    assert snap.messages[("/", "q")][0][1].properties == {
        f: getattr(Properties(delivery_mode=2), f) for f in Properties.__slots__}
