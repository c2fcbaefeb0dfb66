"""Delivered marks: a persisted entry handed to a consumer that must acknowledge it comes
back `redelivered` after a restart; one never delivered comes back without the flag. The
mark is one small record in the group-commit batch, dropped when the entry is acked before
the batch is taken. Also: the log's file name, and the renaming of an old data directory's."""

from __future__ import annotations

from pathlib import Path

from core.helpers import CreditConsumer, flush, open_disk_broker, publish, restart

from gateway.store.disk import LOG_NAME, OLD_LOG_NAMES, DiskStore
from gateway.store.records import ACK, DELIVERED
from gateway.store.records import read_records as _read_records


def _kinds(data: bytes | bytearray) -> list[int]:
    records, valid = _read_records(data)
    assert valid == len(data)
    return [kind for kind, _ in records]


def _redelivered(broker: object, queue: str) -> dict[bytes, bool]:
    q = broker.vhost("/").queues[queue]  # type: ignore[attr-defined]
    return {e.message.body: e.redelivered for e in q.iter_ready()}


def test_delivered_unacked_comes_back_redelivered_never_delivered_does_not(
        tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    for body in (b"a", b"b", b"c", b"d"):
        publish(vh, "", "jobs", body, delivery_mode=2)
    flush(broker.store)  # the messages are on disk before anyone takes them
    c = CreditConsumer(credit=2)
    vh.consume(q, c, exclusive=False, now=0)
    assert c.bodies == [b"a", b"b"]
    # "a" settled (no credit given back); "b" delivered and held; "c", "d" never delivered
    q.ack(c.received[0])
    broker2 = restart(broker, tmp_path)
    assert _redelivered(broker2, "jobs") == {b"b": True, b"c": False, b"d": False}
    # the marks are copied into the fresh log: a second restart (nothing delivered in
    # between) gives the same answer
    broker3 = restart(broker2, tmp_path)
    assert _redelivered(broker3, "jobs") == {b"b": True, b"c": False, b"d": False}


def test_delivery_with_automatic_ack_and_transient_messages_write_no_mark(
        tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    publish(vh, "", "jobs", b"persistent", delivery_mode=2)
    publish(vh, "", "jobs", b"transient", delivery_mode=1)
    flush(broker.store)
    assert q.get(False, 0.0) is not None  # persistent, manual ack: marked
    assert q.get(False, 0.0) is not None  # transient: nothing in the store to mark
    batch = broker.store.take_batch()
    assert batch is not None and _kinds(batch.data) == [DELIVERED]
    broker.store.write_batch(batch)
    broker.store.committed(batch)
    publish(vh, "", "jobs", b"auto", delivery_mode=2)
    flush(broker.store)
    assert q.get(True, 0.0) is not None  # automatic ack: settled at once, an ack record
    batch = broker.store.take_batch()
    assert batch is not None and DELIVERED not in _kinds(batch.data)


def test_ack_before_the_batch_is_taken_drops_the_mark(tmp_path: Path) -> None:
    """A consumer keeping up with manual acks: publish, delivery and ack in one batch
    cost no write at all (the mark is dropped with the enqueue and message records)."""
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    flush(broker.store)
    c = CreditConsumer(credit=10)
    vh.consume(q, c, exclusive=False, now=0)
    for n in range(5):
        publish(vh, "", "jobs", f"m{n}", delivery_mode=2)
    assert len(c.received) == 5
    c.ack_all()
    assert flush(broker.store) == 0  # nothing left to write
    # acked after its enqueue record reached the disk but before its mark did: the mark
    # goes, the ack record stays
    q2 = vh.declare_queue("other", durable=True)
    publish(vh, "", "other", b"late", delivery_mode=2)
    flush(broker.store)
    entry = q2.get(False, 0.0)
    assert entry is not None and broker.store.dirty()
    q2.ack(entry)
    batch = broker.store.take_batch()
    assert batch is not None and _kinds(batch.data) == [ACK]


def test_marks_are_one_record_per_queue_and_batch(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    for n in range(50):
        publish(vh, "", "jobs", f"m{n}", delivery_mode=2)
    flush(broker.store)
    for _ in range(50):
        assert q.get(False, 0.0) is not None
    assert broker.store.dirty()  # marks alone wake the store task
    batch = broker.store.take_batch()
    assert batch is not None and _kinds(batch.data) == [DELIVERED]
    assert len(batch.data) < 50 * 10  # 8 bytes a mark, plus one record's framing


def test_a_clean_close_writes_the_marks_still_waiting(tmp_path: Path) -> None:
    """The server's store task stops once every record is durable; marks gathered after
    that are written by `close`."""
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    publish(vh, "", "jobs", b"a", delivery_mode=2)
    publish(vh, "", "jobs", b"b", delivery_mode=2)
    flush(broker.store)
    assert q.get(False, 0.0) is not None
    assert broker.store.appended == broker.store.durable  # nothing counted as pending
    broker.store.close()
    broker2 = open_disk_broker(tmp_path)
    assert _redelivered(broker2, "jobs") == {b"a": True, b"b": False}


def test_marks_survive_compaction_and_a_deleted_queue_forgets_them(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    q = vh.declare_queue("jobs", durable=True)
    for body in (b"a", b"b"):
        publish(vh, "", "jobs", body, delivery_mode=2)
    assert q.get(False, 0.0) is not None  # "a" delivered, held
    flush(broker.store)
    broker.store.snapshot_taken()
    broker.store.compact(broker.snapshot())
    broker2 = restart(broker, tmp_path)
    assert _redelivered(broker2, "jobs") == {b"a": True, b"b": False}
    # a queue deleted and declared again under the same name starts its seqs anew: the old
    # queue's marks must not touch the new queue's entries
    vh2 = broker2.vhost("/")
    q2 = vh2.queues["jobs"]
    assert q2.get(False, 0.0) is not None
    vh2.delete_queue("jobs")
    vh2.declare_queue("jobs", durable=True)
    publish(vh2, "", "jobs", b"new", delivery_mode=2)
    broker3 = restart(broker2, tmp_path)
    assert _redelivered(broker3, "jobs") == {b"new": False}


def test_store_log_is_named_for_what_it_is_and_an_old_name_is_migrated(
        tmp_path: Path) -> None:
    old_dir = tmp_path / "old"
    broker = open_disk_broker(old_dir)
    vh = broker.vhost("/")
    vh.declare_queue("kept", durable=True)
    publish(vh, "", "kept", b"from before", delivery_mode=2)
    flush(broker.store)
    broker.store.close()
    assert LOG_NAME == "messages.log" and (old_dir / LOG_NAME).is_file()
    # a data directory as an older version left it: the log under its old name
    (old_dir / LOG_NAME).rename(old_dir / OLD_LOG_NAMES[0])
    assert OLD_LOG_NAMES[0] == "gateway.log"
    broker2 = open_disk_broker(old_dir)
    assert _redelivered(broker2, "kept") == {b"from before": False}
    assert (old_dir / LOG_NAME).is_file()
    assert not (old_dir / "gateway.log").exists()
    broker2.store.close()
    # the store's files are all it keeps in the directory: no text log among them
    names = {p.name for p in old_dir.iterdir()}
    assert "gateway.log" not in names and LOG_NAME in names


def test_a_fresh_directory_never_gets_the_old_name(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, fsync=False)
    store.recover()
    store.close()
    assert (tmp_path / LOG_NAME).exists()
    assert not any((tmp_path / old).exists() for old in OLD_LOG_NAMES)
