"""The on-disk store: every record kind read back, group-commit counters, damaged tails,
compaction (alone and through the broker's snapshot)."""

from __future__ import annotations

from pathlib import Path

import pytest
from core.helpers import flush, open_disk_broker, publish, ready_bodies, restart

from gateway.core.exchange import Binding, Exchange
from gateway.core.message import Message, Properties
from gateway.core.queue import Queue
from gateway.core.vhost import VirtualHost
from gateway.store.base import PROPERTY_FIELDS, MemoryStore, Recovered
from gateway.store.disk import LOG_NAME, DiskStore
from gateway.store.records import read_records as _read_records


def _store(path: Path, **kw: object) -> DiskStore:
    s = DiskStore(path, fsync=False, **kw)  # type: ignore[arg-type]
    s.recover()
    return s


def _log(path: Path) -> Path:
    return path / LOG_NAME


def _records(path: Path) -> list[tuple[int, object]]:
    data = _log(path).read_bytes()
    records, valid = _read_records(data)
    assert valid == len(data)
    return records


def _msg(mid: int, body: bytes = b"b", **props: object) -> Message:
    return Message(mid, "ex", "rk", Properties(**props), body)  # type: ignore[arg-type]


def test_every_record_kind_round_trips(tmp_path: Path) -> None:
    s = _store(tmp_path)
    vh = VirtualHost("v", MemoryStore(), lambda: 0)  # only a home for the core objects
    x1 = Exchange("x1", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    x2 = Exchange("x2", "fanout", durable=True, auto_delete=True, internal=True)
    gone_x = Exchange("gone", "direct", durable=True)
    q1 = Queue(vh, "q1", durable=True, arguments={"x-message-ttl": 5})
    q2 = Queue(vh, "q2", durable=True, auto_delete=True)
    gone_q = Queue(vh, "gone-q", durable=True)
    b1 = Binding.make(x1, q1, "a.#", None)
    b2 = Binding.make(x1, x2, "b.*", {"k": [1, 2]})
    b3 = Binding.make(x2, q2, "", None)
    gone_b = Binding.make(x1, q2, "gone", None)
    for x in (x1, x2, gone_x):
        s.put_exchange("v", x)
    for q in (q1, q2, gone_q):
        s.put_queue("v", q)
    for b in (b1, b2, b3, gone_b):
        s.put_binding("v", b)
    s.delete_exchange("v", "gone")
    s.delete_queue("v", "gone-q")
    s.delete_binding("v", gone_b)
    m1 = _msg(11, b"one", headers={"h": 1}, delivery_mode=2)
    m2 = _msg(12, b"two")
    s.enqueue("v", "q1", 0, m1)
    s.enqueue("v", "q2", 0, m1)  # the same message in a second queue
    s.enqueue("v", "q1", 1, m2)
    s.enqueue("v", "q1", 2, _msg(13, b"acked"))
    s.enqueue("v", "gone-q", 0, _msg(14, b"lost"))  # its queue is deleted
    s.ack("v", "q1", 2)  # acked before written: its records are not written at all
    assert s.appended == 22  # one MESSAGE record for m1 in two queues
    assert s.durable == 0
    flush(s)
    assert s.durable == 22
    s.close()

    state = DiskStore(tmp_path, fsync=False).recover()
    assert [(x.vhost, x.name, x.type, x.auto_delete, x.internal, x.arguments)
            for x in state.exchanges] == [
        ("v", "x1", "topic", False, False, {"alternate-exchange": "ae"}),
        ("v", "x2", "fanout", True, True, {})]
    assert [(q.vhost, q.name, q.auto_delete, q.arguments) for q in state.queues] == [
        ("v", "q1", False, {"x-message-ttl": 5}), ("v", "q2", True, {})]
    assert [(b.vhost, b.source, b.dest_is_queue, b.destination, b.routing_key, b.arguments)
            for b in state.bindings] == [
        ("v", "x1", True, "q1", "a.#", {}), ("v", "x1", False, "x2", "b.*", {"k": [1, 2]}),
        ("v", "x2", True, "q2", "", {})]
    assert set(state.messages) == {("v", "q1"), ("v", "q2")}
    q1_msgs = state.messages[("v", "q1")]
    assert [(seq, m.id, m.body) for seq, m in q1_msgs] == [(0, 11, b"one"), (1, 12, b"two")]
    assert [(seq, m.id) for seq, m in state.messages[("v", "q2")]] == [(0, 11)]
    rec = q1_msgs[0][1]
    assert (rec.exchange, rec.routing_key, rec.origin) == ("ex", "rk", "amqp091")
    assert set(rec.properties) == set(PROPERTY_FIELDS)
    assert rec.properties["headers"] == {"h": 1} and rec.properties["delivery_mode"] == 2
    assert state.max_message_id == 14


def test_recover_rewrites_a_compact_log(tmp_path: Path) -> None:
    s = _store(tmp_path)
    for i in range(50):
        s.enqueue("v", "q", i, _msg(i + 1, b"x" * 100))
        flush(s)
        s.ack("v", "q", i)
    s.put_queue("v", _QueueStub("q"))
    s.enqueue("v", "q", 50, _msg(99, b"live"))
    flush(s)
    s.close()
    big = _log(tmp_path).stat().st_size
    state = DiskStore(tmp_path, fsync=False).recover()
    assert [m.body for _, m in state.messages[("v", "q")]] == [b"live"]
    assert _log(tmp_path).stat().st_size < big / 10
    kinds = [k for k, _ in _records(tmp_path)]
    assert kinds == [3, 7, 8]  # queue, message, enqueue
    # ids already used stay used, even those only seen in dropped records
    assert state.max_message_id == 99


class _QueueStub:
    def __init__(self, name: str) -> None:
        self.name = name
        self.auto_delete = False
        self.arguments: dict[str, object] = {}


def test_group_commit_counters(tmp_path: Path) -> None:
    s = _store(tmp_path)
    assert s.take_batch() is None
    s.put_queue("v", _QueueStub("q"))
    s.enqueue("v", "q", 0, _msg(1))
    b1 = s.take_batch()
    assert b1 is not None and b1.upto == 3  # queue + message + enqueue
    s.ack("v", "q", 0)
    b2 = s.take_batch()
    assert b2 is not None and b2.upto == 4
    assert s.take_batch() is None
    s.write_batch(b1)
    s.committed(b1)
    assert s.durable == 3
    s.write_batch(b2)
    s.committed(b2)
    assert (s.appended, s.durable) == (4, 4)
    s.close()
    assert DiskStore(tmp_path, fsync=False).recover().messages == {("v", "q"): []}


def test_fsync_enabled_path(tmp_path: Path) -> None:
    s = DiskStore(tmp_path)
    s.recover()
    s.put_queue("v", _QueueStub("q"))
    flush(s)
    s.compact(Recovered())
    s.close()
    assert DiskStore(tmp_path).recover().queues == []


def _three_batches(tmp_path: Path) -> list[int]:
    """Three persistent messages written in three batches; returns the log size after
    each batch."""
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    sizes = []
    for body in (b"first", b"second", b"third"):
        publish(vh, "", "q", body, delivery_mode=2)
        flush(broker.store)
        sizes.append(_log(tmp_path).stat().st_size)
    broker.store.close()
    return sizes


@pytest.mark.parametrize("cut", [1, 3, 8, 9])
def test_torn_tail_loses_only_the_torn_record(tmp_path: Path, cut: int) -> None:
    sizes = _three_batches(tmp_path)
    n_records = len(_records(tmp_path))
    with open(_log(tmp_path), "r+b") as f:
        f.truncate(sizes[-1] - cut)
    records, valid = _read_records(_log(tmp_path).read_bytes())
    assert len(records) == n_records - 1  # only the last record is gone
    assert valid < sizes[-1] - cut
    broker = open_disk_broker(tmp_path)
    # the torn record was the third message's enqueue: the third message is gone
    assert ready_bodies(broker.vhost("/").queues["q"]) == [b"first", b"second"]
    # the log was rewritten whole: appending after it and recovering again works
    publish(broker.vhost("/"), "", "q", b"fourth", delivery_mode=2)
    broker2 = restart(broker, tmp_path)
    assert ready_bodies(broker2.vhost("/").queues["q"]) == [b"first", b"second", b"fourth"]


def test_corrupt_crc_stops_replay_there(tmp_path: Path) -> None:
    sizes = _three_batches(tmp_path)
    data = bytearray(_log(tmp_path).read_bytes())
    # flip a byte inside the second batch (the second message's record)
    pos = data.index(b"second", sizes[0])
    assert sizes[0] < pos < sizes[1]
    data[pos] ^= 0xFF
    _log(tmp_path).write_bytes(bytes(data))
    broker = open_disk_broker(tmp_path)
    # nothing after the damaged record is replayed, even the intact third message
    assert ready_bodies(broker.vhost("/").queues["q"]) == [b"first"]


def test_zero_length_record_stops_replay(tmp_path: Path) -> None:
    sizes = _three_batches(tmp_path)
    with open(_log(tmp_path), "ab") as f:
        f.write(b"\x00" * 16)
    assert _log(tmp_path).stat().st_size == sizes[-1] + 16
    broker = open_disk_broker(tmp_path)
    assert ready_bodies(broker.vhost("/").queues["q"]) == [b"first", b"second", b"third"]


# -- compaction -------------------------------------------------------------------------------

def test_compaction_keeps_live_state_and_shrinks(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_exchange("x", "direct", durable=True)
    q = vh.declare_queue("q", durable=True)
    vh.bind(q, "x", "k")
    for i in range(200):
        publish(vh, "x", "k", f"m{i}" * 20, delivery_mode=2)
        e = q.get(False, 0)
        assert e is not None
        flush(broker.store)
        if i % 50:
            q.ack(e)  # every 50th stays unacked
        flush(broker.store)
    publish(vh, "x", "k", b"ready", delivery_mode=2)
    flush(broker.store)
    store = broker.store
    assert isinstance(store, DiskStore)
    big = _log(tmp_path).stat().st_size
    snap = broker.snapshot()
    store.compact(snap)
    small = _log(tmp_path).stat().st_size
    assert small < big / 10
    store.close()

    state = DiskStore(tmp_path, fsync=False).recover()
    assert [m.body for _, m in state.messages[("/", "q")]] == [
        f"m{i}".encode() * 20 for i in (0, 50, 100, 150)] + [b"ready"]
    assert [(b.source, b.destination, b.routing_key) for b in state.bindings] == [
        ("x", "q", "k")]
    assert [x.name for x in state.exchanges] == ["x"]


def test_records_appended_after_the_snapshot_survive_compaction(tmp_path: Path) -> None:
    """The store task takes the snapshot in the event loop, compacts in a worker thread
    while the broker goes on, then writes what was appended meanwhile on top."""
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("q", durable=True)
    vh.declare_queue("doomed", durable=True)
    publish(vh, "", "q", b"before", delivery_mode=2)
    publish(vh, "", "q", b"acked-after", delivery_mode=2)
    publish(vh, "", "doomed", b"d", delivery_mode=2)
    flush(broker.store)
    store = broker.store
    assert isinstance(store, DiskStore)
    snap = broker.snapshot()
    # meanwhile: a new message, an ack of a snapshotted one, a new queue, a deleted queue
    publish(vh, "", "q", b"after", delivery_mode=2)
    e1, e2 = q.get(False, 0), q.get(False, 0)
    assert e1 is not None and e2 is not None and e2.message.body == b"acked-after"
    q.ack(e2)
    vh.declare_queue("late", durable=True)
    publish(vh, "", "late", b"late", delivery_mode=2)
    vh.delete_queue("doomed")
    store.compact(snap)
    flush(store)
    broker2 = restart(broker, tmp_path)
    vh2 = broker2.vhost("/")
    assert set(vh2.queues) == {"q", "late"}
    # "before" was delivered but not acked: back, ahead of "after"
    assert ready_bodies(vh2.queues["q"]) == [b"before", b"after"]
    assert ready_bodies(vh2.queues["late"]) == [b"late"]


def test_batch_written_after_compaction_is_kept(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_queue("q", durable=True)
    publish(vh, "", "q", b"one", delivery_mode=2)
    flush(broker.store)
    store = broker.store
    assert isinstance(store, DiskStore)
    snap = broker.snapshot()
    publish(vh, "", "q", b"two", delivery_mode=2)  # appended after the snapshot
    store.compact(snap)
    flush(store)  # written after compaction
    broker2 = restart(broker, tmp_path)
    assert ready_bodies(broker2.vhost("/").queues["q"]) == [b"one", b"two"]


def test_needs_compaction(tmp_path: Path) -> None:
    s = _store(tmp_path, compact_min_bytes=1000)
    assert not s.needs_compaction()
    s.put_queue("v", _QueueStub("q"))
    for i in range(40):
        s.enqueue("v", "q", i, _msg(i + 1, b"y" * 50))
        flush(s)
        s.ack("v", "q", i)
    flush(s)
    assert s.needs_compaction()
    state = Recovered()
    s.compact(state)
    assert not s.needs_compaction()
    s.close()


def test_keyed_values_round_trip_and_follow_their_vhost(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.put_value("space", ("v", "a", 1), [b"payload", {"k": (1, 2)}])
    s.put_value("space", ("v", "a", 1), "replaced")
    s.put_value("space", ("v", "b", 2), 0)
    s.delete_value("space", ("v", "b", 2))
    s.put_value("other", ("gone", "x"), 1)
    s.put_vhost("gone")
    s.delete_vhost("gone")
    flush(s)
    s.close()
    s = DiskStore(tmp_path, fsync=False)
    state = s.recover()
    assert state.values == {"space": {("v", "a", 1): "replaced"}}
    s.close()


def test_unclaimed_values_survive_compaction_until_claimed(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    broker.store.put_value("space", ("/", "k"), 1)
    broker = restart(broker, tmp_path)
    broker.store.compact(broker.snapshot())  # type: ignore[attr-defined]
    broker = restart(broker, tmp_path)
    assert broker.claim_values("space") == {("/", "k"): 1}
    # claimed: from now on the owner's snapshot hook must add them; none here
    broker.store.compact(broker.snapshot())  # type: ignore[attr-defined]
    broker = restart(broker, tmp_path)
    assert broker.claim_values("space") == {}


def test_settled_before_written_is_not_written(tmp_path: Path) -> None:
    """An entry acked while its enqueue record is still pending costs no write: its enqueue
    record goes, its message record too once no pending enqueue needs it, and no ack record
    is added; an ack after its batch was taken is a record as before."""
    s = _store(tmp_path)
    s.put_queue("v", _QueueStub("q1"))
    s.put_queue("v", _QueueStub("q2"))
    flush(s)
    size = _log(tmp_path).stat().st_size
    both = _msg(1, b"in two queues")
    s.enqueue("v", "q1", 0, both)
    s.enqueue("v", "q2", 0, both)
    s.enqueue("v", "q1", 1, _msg(2, b"consumed at once"))
    s.ack("v", "q1", 1)
    s.ack("v", "q1", 0)  # still wanted by q2: the message record stays
    before = s.appended
    batch = s.take_batch()
    assert batch is not None and batch.upto == before
    assert [kind for kind, _ in _read_records(batch.data)[0]] == [7, 8]  # message, enqueue
    s.write_batch(batch)
    s.committed(batch)
    s.ack("v", "q2", 0)  # its batch is written: an ack record
    s.enqueue("v", "q1", 2, _msg(3, b"gone before the disk"))
    s.ack("v", "q1", 2)
    batch = s.take_batch()
    assert batch is not None
    assert [kind for kind, _ in _read_records(batch.data)[0]] == [9]
    s.write_batch(batch)
    s.committed(batch)
    s.enqueue("v", "q2", 1, _msg(4, b"nothing left"))
    s.ack("v", "q2", 1)
    batch = s.take_batch()
    assert batch is not None and batch.data == b"" and batch.upto == s.appended
    s.write_batch(batch)  # nothing to write
    s.committed(batch)
    assert s.durable == s.appended
    s.close()
    assert [kind for kind, _ in _records(tmp_path)][-3:] == [7, 8, 9]
    assert _log(tmp_path).stat().st_size > size
    state = DiskStore(tmp_path, fsync=False).recover()
    assert state.messages == {("v", "q1"): [], ("v", "q2"): []}


def test_settle_and_a_snapshot_in_between(tmp_path: Path) -> None:
    """`settle` makes everything durable at once only when nothing is left to write and no
    batch is being written; after a snapshot was taken for compaction, an ack of an entry
    in it is written (the snapshot holds the entry) instead of dropping its records."""
    broker = open_disk_broker(tmp_path)
    s = broker.store
    assert isinstance(s, DiskStore)
    vh = broker.vhost("/")
    q = vh.declare_queue("q", durable=True)
    flush(s)
    publish(vh, "", "q", b"consumed at once", delivery_mode=2)
    entry = q.get(False, 0)
    assert entry is not None
    q.ack(entry)
    assert s.durable < s.appended
    s.settle()  # nothing to write: durable now, without a batch
    assert s.durable == s.appended and s.take_batch() is None

    publish(vh, "", "q", b"in flight", delivery_mode=2)
    batch = s.take_batch()  # being written ...
    publish(vh, "", "q", b"acked while the other batch is written", delivery_mode=2)
    entry = q.get(False, 0)
    assert entry is not None and entry.message.body == b"in flight"
    second = q.get(False, 0)
    assert second is not None
    q.ack(second)
    s.settle()
    assert s.durable < s.appended  # ... so not durable before that batch is
    s.write_batch(batch)
    s.committed(batch)
    flush(s)

    publish(vh, "", "q", b"in the snapshot", delivery_mode=2)
    snapshot = broker.snapshot()
    s.snapshot_taken()
    third = q.get(False, 0)
    assert third is not None and third.message.body == b"in the snapshot"
    q.ack(third)
    q.ack(entry)
    s.compact(snapshot)
    flush(s)
    broker = restart(broker, tmp_path)
    assert ready_bodies(broker.vhost("/").queues["q"]) == []


def test_records_written_into_a_batch_are_the_framed_records() -> None:
    from gateway.store.records import ENQUEUE, MESSAGE
    from gateway.store.records import encode_record as _frame
    from gateway.store.records import encode_record_into as _frame_into

    out = bytearray(b"before")
    payloads = [(MESSAGE, (7, "ex", "rk", [None, {"h": [1, "x"]}], b"\x00body" * 99, "mqtt")),
                (ENQUEUE, ("v", "q", 3, 7))]
    for kind, payload in payloads:
        _frame_into(out, kind, payload)
    assert bytes(out) == b"before" + b"".join(_frame(k, p) for k, p in payloads)
