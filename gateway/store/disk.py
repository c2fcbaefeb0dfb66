"""The embedded on-disk store: one append-only log with group commit and compaction.

File format: a sequence of records `[u32 length][u32 crc32][u8 kind][payload]`, the payload
a tuple in `gateway.store.serial` encoding (`gateway.store.records`). Every record is an
idempotent set operation (put/delete an exchange, queue or binding; write a message;
enqueue a message at a queue position; ack a queue position; put/delete a protocol's keyed
value), so replaying any suffix of records over a state that already contains them gives
the same state. Recovery replays the log, stops at the first torn or corrupt record (the
tail of a write cut off by a crash, which was never reported durable), and writes the live
state into a fresh log (`gateway.store.replay` builds the state).

Recovery streams: the old log is read in chunks, and of a message record replay keeps only
where it lies, not its body. The fresh log copies each live message record byte for byte
from the old one, and the recovered state's message lists (`RecoveredEntries`) read a
message back from the fresh log only when the broker takes it, so the queues' paging sees
one body at a time. A restart with a backlog larger than memory thus costs an index (a few
hundred bytes per message while the log is replayed, 24 per message after), not the log's
size.

Group commit: the core appends encoded records to `_pending`; the server's store task
takes the batch, writes it and fsyncs it in a worker thread, then marks it durable. While
a batch is being written the next one fills up, so one fsync covers every publish that
arrived meanwhile.

Settled before written: a queue entry acked while its enqueue record still waits in
`_pending` (a consumer keeping up, above all with automatic acknowledgement) is not written
at all: its enqueue record, and its message record once no pending enqueue needs it, are
dropped, and no ack record is added. So that dropping costs nothing, message and enqueue
records wait in `_pending` unencoded and are encoded when the batch is taken (a message is
not changed once it is enqueued). Its publisher is confirmed when the batch it was in
commits, with nothing left to write for it (as RabbitMQ confirms a persistent message
consumed and acknowledged before it reached the disk). A batch left empty commits without
a write or an fsync; when nothing pending is left to write and no batch is being written,
`settle` makes it all durable at once, so a session's confirms need not wait for the store
task. A snapshot for compaction ends the dropping of what is pending (`snapshot_taken`):
the entries in it are then on disk in the snapshot, and their acks must be written.

Compaction: when the log has grown well past the live state, the store task asks the
broker for a snapshot of the durable state (in the event loop, so it is consistent), writes
it to a new file in a worker thread, swaps the files, then writes the batch that filled up
in the meantime on top (idempotent records make the overlap harmless).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gateway.store.base import (
    PROPERTY_FIELDS,
    DelayedRecord,
    LimitsRecord,
    PermissionRecord,
    PolicyRecord,
    Recovered,
    StoredMessage,
    TopicPermissionRecord,
    UserRecord,
)
from gateway.store.records import (
    ACK,
    DEL_BINDING,
    DEL_DELAYED,
    DEL_EXCHANGE,
    DEL_LIMITS,
    DEL_PERMISSION,
    DEL_POLICY,
    DEL_QUEUE,
    DEL_TOPIC_PERMISSION,
    DEL_USER,
    DEL_VALUE,
    DEL_VHOST,
    DELIVERED,
    ENQUEUE,
    MESSAGE,
    PUT_BINDING,
    PUT_DELAYED,
    PUT_EXCHANGE,
    PUT_LIMITS,
    PUT_PERMISSION,
    PUT_POLICY,
    PUT_QUEUE,
    PUT_TOPIC_PERMISSION,
    PUT_USER,
    PUT_VALUE,
    PUT_VHOST,
    SEEDED,
    LogReader,
    encode_record,
    encode_record_into,
    pread_all,
)
from gateway.store.replay import RecoveredEntries, replay
from gateway.store.spill import PageFile

log = logging.getLogger("gateway.store")

LOG_NAME = "messages.log"  # the store's append-only log (records, not text)
OLD_LOG_NAMES = ("gateway.log",)  # what the log was called before; renamed at start
WRITE_CHUNK = 1024 * 1024  # bytes of records joined into one write of a new log

def return_large_buffers_to_the_system() -> bool:
    """Have glibc's malloc serve allocations of 1 MiB and more (log batches, spill pages,
    the socket reads of a fast publisher) from mmap, so that freeing one gives its memory
    back. Left to itself, glibc raises that threshold after such frees and the big buffers
    then come from the heap, where freed space stays resident (measured with a 1,000,000 x
    4 KiB persistent backlog: 432 MiB peak RSS without, 304 MiB with). False where the C
    library has no `mallopt` (not glibc)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-3, 1024 * 1024))  # M_MMAP_THRESHOLD


@dataclass
class Batch:
    data: bytes | bytearray
    upto: int  # the `appended` count this batch makes durable


class DiskStore:
    def __init__(self, data_dir: Path, *, fsync: bool = True,
                 compact_min_bytes: int = 64 * 1024 * 1024) -> None:
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self.compact_min_bytes = compact_min_bytes
        self.appended = 0
        self.durable = 0
        # encoded records, message / enqueue records still to encode (tuples), None dropped
        self._pending: list[bytes | tuple[Any, ...] | None] = []
        # what of `_pending` an ack can still cancel: (vhost, queue, seq) -> (index of the
        # enqueue record, message id); message id -> [index of its record, pending enqueues]
        self._pending_enqueues: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._pending_messages: dict[int, list[int]] = {}
        # delivered marks to write with the next batch, per queue (an ack drops its seq);
        # apart from `_pending` and not counted in `appended`: nobody waits for a mark
        self._pending_delivered: dict[tuple[str, str], set[int]] = {}
        self._live = 0  # records in `_pending` not dropped
        self._taken = 0  # the `appended` count of the last batch taken
        self._last_message_id = -1
        self._file: BinaryIO | None = None
        self._size = 0
        self._base_size = 0
        self._pages: PageFile | None = None
        self._recovered_fd = -1  # the log as recovery wrote it, read by RecoveredEntries

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read the log back, then start a fresh compacted log holding just that state. The
        state's message lists read their messages from the fresh log when iterated."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / LOG_NAME
        _migrate_log_name(self.data_dir, self.fsync)
        if not path.exists():
            path.touch()
        with open(path, "rb") as old:
            size = os.fstat(old.fileno()).st_size
            reader = LogReader(old)
            state, queued, located = replay(reader)
            delivered = state.delivered
            if reader.valid != size:
                log.warning("store: ignored %d bytes of an incomplete write at the end of the "
                            "log", size - reader.valid)
            placed: dict[int, int] = {}  # message id -> offset in the fresh log
            self._write_file(self._recovery_frames(state, queued, located, old.fileno(),
                                                   placed, delivered))
        self._close_recovered()
        self._recovered_fd = os.open(path, os.O_RDONLY)
        for key, seqs in queued.items():
            entries = RecoveredEntries(self._recovered_fd)
            for seq, mid in sorted(seqs.items()):
                offset = placed.get(mid)
                if offset is not None:
                    entries.add(seq, offset, located[mid][1])
            state.messages[key] = entries
        if self._pages is None:
            self._pages = PageFile(self.data_dir)
        return state

    def _recovery_frames(self, state: Recovered, queued: dict[tuple[str, str], dict[int, int]],
                         located: dict[int, tuple[int, int]], old_fd: int,
                         placed: dict[int, int], delivered: dict[tuple[str, str], set[int]]
                         ) -> Iterator[bytes]:
        """The fresh log's records: the state without messages, then each live message
        record copied from the old log (noting where it lands in `placed`), its enqueue
        records and the delivered marks of those entries that have them."""
        offset = 0
        for frame in self._snapshot_frames(state):
            offset += len(frame)
            yield frame
        for (vhost, queue), seqs in queued.items():
            marks = delivered.get((vhost, queue), set())
            for seq, mid in sorted(seqs.items()):
                where = located.get(mid)
                if where is None:
                    marks.discard(seq)
                    continue
                if mid not in placed:
                    frame = pread_all(old_fd, where[1], where[0])
                    placed[mid] = offset
                    offset += len(frame)
                    yield frame
                frame = encode_record(ENQUEUE, (vhost, queue, seq, mid))
                offset += len(frame)
                yield frame
            if marks:
                frame = _marks_frame(vhost, queue, marks)
                offset += len(frame)
                yield frame

    def _close_recovered(self) -> None:
        if self._recovered_fd >= 0:
            os.close(self._recovered_fd)
            self._recovered_fd = -1

    def _snapshot_frames(self, state: Recovered) -> Iterator[bytes]:
        if state.seeded:
            yield encode_record(SEEDED, ())
        for u in state.users:
            yield encode_record(PUT_USER, (u.name, u.password_hash, list(u.tags), u.wampcra))
        for v in state.vhosts:
            yield encode_record(PUT_VHOST, (v,))
        for p in state.permissions:
            yield encode_record(PUT_PERMISSION, (p.user, p.vhost, p.configure, p.write, p.read))
        for t in state.topic_permissions:
            yield encode_record(PUT_TOPIC_PERMISSION,
                                (t.user, t.vhost, t.exchange, t.write, t.read))
        for lim in state.limits:
            yield encode_record(PUT_LIMITS, (lim.scope, lim.name, dict(lim.limits)))
        for pol in state.policies:
            yield encode_record(PUT_POLICY, (pol.vhost, pol.name, pol.pattern, pol.definition,
                                             pol.priority, pol.apply_to))
        for x in state.exchanges:
            yield encode_record(PUT_EXCHANGE, (x.vhost, x.name, x.type, x.auto_delete, x.internal,
                                               x.arguments))
        for q in state.queues:
            yield encode_record(PUT_QUEUE, (q.vhost, q.name, q.auto_delete, q.arguments))
        for b in state.bindings:
            yield encode_record(PUT_BINDING, (b.vhost, b.source, b.dest_is_queue, b.destination,
                                              b.routing_key, b.arguments))
        written: set[int] = set()
        for (vhost, queue), entries in state.messages.items():
            for seq, m in entries:
                if m.id not in written:
                    written.add(m.id)
                    yield encode_record(MESSAGE, (m.id, m.exchange, m.routing_key,
                                                  [m.properties.get(f) for f in PROPERTY_FIELDS],
                                                  m.body, m.origin))
                yield encode_record(ENQUEUE, (vhost, queue, seq, m.id))
            marks = state.delivered.get((vhost, queue))
            if marks:
                yield _marks_frame(vhost, queue, marks)
        for space, values in state.values.items():
            for key, value in values.items():
                yield encode_record(PUT_VALUE, (space, list(key), value))
        for d in state.delayed:
            yield _delayed_frame(d)

    def _write_file(self, frames: Iterable[bytes]) -> None:
        """Write a whole new log next to the old one, fsync it, and swap it in."""
        tmp = self.data_dir / (LOG_NAME + ".new")
        size = 0
        with open(tmp, "wb") as f:
            chunk: list[bytes] = []
            chunk_bytes = 0
            for fr in frames:
                chunk.append(fr)
                size += len(fr)
                chunk_bytes += len(fr)
                if chunk_bytes >= WRITE_CHUNK:
                    f.write(b"".join(chunk))
                    chunk.clear()
                    chunk_bytes = 0
            f.write(b"".join(chunk))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.data_dir / LOG_NAME)
        if self.fsync:
            dir_fd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._file is not None:
            self._file.close()
        self._file = open(self.data_dir / LOG_NAME, "ab")  # noqa: SIM115 - kept open
        self._size = size
        self._base_size = size

    # -- appends (event loop) --------------------------------------------------------------

    def _append(self, frame: bytes | tuple[Any, ...]) -> None:
        self._pending.append(frame)
        self.appended += 1
        self._live += 1

    def put_exchange(self, vhost: str, exchange: Any) -> None:
        self._append(encode_record(PUT_EXCHANGE, (vhost, exchange.name, exchange.type,
                                                  exchange.auto_delete, exchange.internal,
                                                  exchange.arguments)))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._append(encode_record(DEL_EXCHANGE, (vhost, name)))

    def put_queue(self, vhost: str, queue: Any) -> None:
        self._append(encode_record(PUT_QUEUE, (vhost, queue.name, queue.auto_delete,
                                               queue.arguments)))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._pending_delivered.pop((vhost, name), None)  # a queue of that name may follow
        self._append(encode_record(DEL_QUEUE, (vhost, name)))

    def put_binding(self, vhost: str, binding: Any) -> None:
        self._append(encode_record(PUT_BINDING, _binding_tuple(vhost, binding)))

    def delete_binding(self, vhost: str, binding: Any) -> None:
        self._append(encode_record(DEL_BINDING, _binding_tuple(vhost, binding)))

    def enqueue(self, vhost: str, queue: str, seq: int, message: StoredMessage) -> None:
        mid = message.id
        pending = self._pending
        # a publish enqueues one message in its queues one after another: write it once
        if mid != self._last_message_id:
            self._last_message_id = mid
            self._pending_messages[mid] = [len(pending), 0]
            self._append((MESSAGE, message))
        counted = self._pending_messages.get(mid)
        if counted is not None:
            counted[1] += 1
        self._pending_enqueues[(vhost, queue, seq)] = (len(pending), mid)
        self._append((ENQUEUE, vhost, queue, seq, mid))

    def put_delayed(self, vhost: str, exchange: str, due: int, message: StoredMessage) -> None:
        props = message.properties
        self._append(encode_record(PUT_DELAYED, (
            vhost, exchange, due, message.id, message.exchange, message.routing_key,
            [getattr(props, f) for f in PROPERTY_FIELDS], message.body, message.origin)))

    def delete_delayed(self, vhost: str, message_id: int) -> None:
        self._append(encode_record(DEL_DELAYED, (vhost, message_id)))

    def delivered(self, vhost: str, queue: str, seq: int) -> None:
        """A persisted entry went to a consumer that must acknowledge it, for the first
        time: after a restart it comes back `redelivered` (as RabbitMQ's queue index keeps
        a "delivered" mark). Marks are gathered per queue and written as one record per
        queue with the next batch (after its enqueue records); an ack of the entry before
        then drops its mark."""
        marks = self._pending_delivered.get((vhost, queue))
        if marks is None:
            marks = self._pending_delivered[(vhost, queue)] = set()
        marks.add(seq)

    def ack(self, vhost: str, queue: str, seq: int) -> None:
        key = (vhost, queue, seq)
        if self._pending_delivered:
            marks = self._pending_delivered.get((vhost, queue))
            if marks is not None:  # settled: its mark is not needed any more
                marks.discard(seq)
                if not marks:
                    del self._pending_delivered[(vhost, queue)]
        cancel = self._pending_enqueues.pop(key, None)
        if cancel is None:
            self._append(encode_record(ACK, (vhost, queue, seq)))
            return
        # settled before written: neither its enqueue nor (if now unused) its message goes
        index, mid = cancel
        self._pending[index] = None
        self._live -= 1
        counted = self._pending_messages.get(mid)
        if counted is not None:
            counted[1] -= 1
            if not counted[1]:
                self._pending[counted[0]] = None
                self._live -= 1
                del self._pending_messages[mid]

    def settle(self) -> None:
        """When every pending record was dropped and no batch is being written, there is
        nothing to wait for: what was appended is durable now (a confirm need not wait for
        the store task)."""
        if self._pending and not self._live and self.durable >= self._taken:
            self._pending.clear()
            self._pending_enqueues.clear()
            self._pending_messages.clear()
            self._taken = self.durable = self.appended

    def put_user(self, user: UserRecord) -> None:
        self._append(encode_record(PUT_USER, (user.name, user.password_hash, list(user.tags),
                                              user.wampcra)))

    def delete_user(self, name: str) -> None:
        self._append(encode_record(DEL_USER, (name,)))

    def put_vhost(self, name: str) -> None:
        self._append(encode_record(PUT_VHOST, (name,)))

    def delete_vhost(self, name: str) -> None:
        for key in [k for k in self._pending_delivered if k[0] == name]:
            del self._pending_delivered[key]
        self._append(encode_record(DEL_VHOST, (name,)))

    def put_permission(self, perm: PermissionRecord) -> None:
        self._append(encode_record(PUT_PERMISSION, (perm.user, perm.vhost, perm.configure,
                                                    perm.write, perm.read)))

    def delete_permission(self, user: str, vhost: str) -> None:
        self._append(encode_record(DEL_PERMISSION, (user, vhost)))

    def put_topic_permission(self, perm: TopicPermissionRecord) -> None:
        self._append(encode_record(PUT_TOPIC_PERMISSION, (perm.user, perm.vhost, perm.exchange,
                                                          perm.write, perm.read)))

    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None:
        self._append(encode_record(DEL_TOPIC_PERMISSION, (user, vhost, exchange)))

    def put_limits(self, limits: LimitsRecord) -> None:
        self._append(encode_record(PUT_LIMITS, (limits.scope, limits.name, dict(limits.limits))))

    def delete_limits(self, scope: str, name: str) -> None:
        self._append(encode_record(DEL_LIMITS, (scope, name)))

    def put_policy(self, policy: PolicyRecord) -> None:
        self._append(encode_record(PUT_POLICY, (policy.vhost, policy.name, policy.pattern,
                                                policy.definition, policy.priority,
                                                policy.apply_to)))

    def delete_policy(self, vhost: str, name: str) -> None:
        self._append(encode_record(DEL_POLICY, (vhost, name)))

    def mark_seeded(self) -> None:
        self._append(encode_record(SEEDED, ()))

    def put_value(self, space: str, key: tuple[Any, ...], value: Any) -> None:
        self._append(encode_record(PUT_VALUE, (space, list(key), value)))

    def delete_value(self, space: str, key: tuple[Any, ...]) -> None:
        self._append(encode_record(DEL_VALUE, (space, list(key))))

    # -- paging (event loop; see gateway.store.spill) ---------------------------------------

    def _page_file(self) -> PageFile:
        if self._pages is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._pages = PageFile(self.data_dir)
        return self._pages

    def spill_write(self, data: bytes) -> Any:
        return self._page_file().write(data)

    def spill_read(self, ref: Any) -> bytes:
        return self._page_file().read(ref)

    def spill_free(self, ref: Any) -> None:
        self._page_file().free(ref)

    @property
    def paged_bytes(self) -> int:
        return self._pages.live_bytes if self._pages is not None else 0

    # -- group commit ----------------------------------------------------------------------

    def take_batch(self) -> Batch | None:
        """The pending records as one batch (its data empty when acks cancelled them all:
        it commits without a write), or None when nothing is pending. The delivered marks
        gathered since the last batch go last, after the enqueue records they refer to."""
        if not self._pending and not self._pending_delivered:
            return None
        data = _encoded(self._pending)
        for (vhost, queue), marks in self._pending_delivered.items():
            if marks:
                data += _marks_frame(vhost, queue, marks)
        self._pending.clear()
        self._pending_enqueues.clear()
        self._pending_messages.clear()
        self._pending_delivered.clear()
        self._live = 0
        self._taken = self.appended
        return Batch(data, self.appended)

    def write_batch(self, batch: Batch) -> None:
        """Runs in a worker thread; touches only the file."""
        assert self._file is not None
        if not batch.data:
            return
        self._file.write(batch.data)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def dirty(self) -> bool:
        """Something waits to be written: records not yet durable, or delivered marks."""
        return self.appended != self.durable or bool(self._pending_delivered)

    def committed(self, batch: Batch) -> None:
        self._size += len(batch.data)
        self.durable = max(self.durable, batch.upto)

    # -- compaction ------------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        # not while queues are paged out: a snapshot would have to read every page back
        # into memory; the log is compacted once they drain (or at the next start)
        if self._pages is not None and self._pages.live_pages:
            return False
        return self._size > self.compact_min_bytes and self._size > 2 * self._base_size

    def snapshot_taken(self) -> None:
        """The broker's state was just copied for a compaction: the entries in it are
        written there, so from now on acking one of them must add an ack record, even if
        its enqueue record is still pending (it cannot be dropped any more)."""
        self._pending_enqueues.clear()
        self._pending_messages.clear()

    def compact(self, state: Recovered) -> None:
        """Runs in a worker thread: replace the log by `state` (taken in the event loop)."""
        self._write_file(self._snapshot_frames(state))
        # the broker took the recovered messages at start; let the replaced file go
        self._close_recovered()

    def close(self) -> None:
        self._close_recovered()
        if self._file is not None and self._pending_delivered:
            # marks of deliveries since the last batch (the store task stopped once every
            # record was durable): a clean stop keeps them too
            batch = self.take_batch()
            if batch is not None:
                self.write_batch(batch)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._pages is not None:
            self._pages.close()
            self._pages = None


def _encoded(pending: list[bytes | tuple[Any, ...] | None]) -> bytearray:
    out = bytearray()
    for item in pending:
        if item is None:
            continue
        if isinstance(item, bytes):
            out += item
        elif item[0] == MESSAGE:
            m = item[1]
            props = m.properties
            encode_record_into(out, MESSAGE, (m.id, m.exchange, m.routing_key,
                                              [getattr(props, f) for f in PROPERTY_FIELDS], m.body,
                                              m.origin))
        else:
            encode_record_into(out, ENQUEUE, item[1:])
    return out


def _delayed_frame(d: DelayedRecord) -> bytes:
    m = d.message
    return encode_record(PUT_DELAYED, (
        d.vhost, d.exchange, d.due, m.id, m.exchange, m.routing_key,
        [m.properties.get(f) for f in PROPERTY_FIELDS], m.body, m.origin))


def _marks_frame(vhost: str, queue: str, seqs: Iterable[int]) -> bytes:
    """One DELIVERED record: a queue's marked seqs as big-endian int64s (cheap to encode)."""
    ordered = sorted(seqs)
    return encode_record(DELIVERED, (vhost, queue, struct.pack(f">{len(ordered)}q", *ordered)))


def _migrate_log_name(data_dir: Path, fsync: bool) -> None:
    """A data directory written before the log was named `LOG_NAME` has it under an old
    name: rename it (once; the old name is never written again)."""
    path = data_dir / LOG_NAME
    for old in OLD_LOG_NAMES:
        old_path = data_dir / old
        if old_path.is_file() and not path.exists():
            os.replace(old_path, path)
            log.info("store: renamed %s to %s in %s", old, LOG_NAME, data_dir)
            if fsync:
                dir_fd = os.open(data_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)


def _binding_tuple(vhost: str, b: Any) -> tuple[Any, ...]:
    from_queue = not hasattr(b.destination, "type")
    return (vhost, b.source.name, from_queue, b.destination.name, b.routing_key, b.arguments)


