"""Recovery streams the log: records that straddle the reader's chunks come back whole, and
a restart over a log much larger than memory's share of it does not read the bodies in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from core.helpers import flush

from gateway.core.message import Message, Properties
from gateway.core.queue import Queue
from gateway.core.vhost import VirtualHost
from gateway.store.base import MemoryStore
from gateway.store.disk import LOG_NAME, DiskStore
from gateway.store.records import READ_CHUNK

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _open(path: Path, *queues: str) -> DiskStore:
    store = DiskStore(path, fsync=False)
    store.recover()
    vhost = VirtualHost("/", MemoryStore(), lambda: 0)  # only a home for the queue objects
    for name in queues:
        store.put_queue("/", Queue(vhost, name, durable=True))
    return store


def _msg(mid: int, body: bytes) -> Message:
    return Message(mid, "ex", f"rk.{mid}", Properties(delivery_mode=2), body)


def test_records_across_chunk_boundaries_and_larger_than_a_chunk(tmp_path: Path) -> None:
    store = _open(tmp_path, "q", "other")
    bodies: dict[int, bytes] = {}
    sizes = [1000, 3, READ_CHUNK + 12345, 7, 70_001] * 20  # many records end mid-chunk
    for i, size in enumerate(sizes):
        bodies[i] = bytes([i % 251]) * size
        store.enqueue("/", "q", i, _msg(i, bodies[i]))
        if i % 3 == 0:
            store.enqueue("/", "other", i, _msg(i, bodies[i]))  # one record, two queues
    flush(store)
    for i in range(0, len(sizes), 4):
        store.ack("/", "q", i)
    flush(store)
    store.close()
    with open(tmp_path / LOG_NAME, "ab") as log:
        log.write(b"\x00\x00\x10\x00torn")  # a write cut off by a crash

    state = DiskStore(tmp_path, fsync=False).recover()
    kept = [(i, bodies[i]) for i in range(len(sizes)) if i % 4]
    assert [(seq, m.body) for seq, m in state.messages[("/", "q")]] == kept
    assert [(m.id, m.routing_key) for _, m in state.messages[("/", "q")]] == [
        (i, f"rk.{i}") for i, _ in kept]
    assert [(seq, m.body) for seq, m in state.messages[("/", "other")]] == [
        (i, bodies[i]) for i in range(0, len(sizes), 3)]

    # the fresh log holds each live message once, and reads back the same a second time
    again = DiskStore(tmp_path, fsync=False).recover()
    assert list(again.messages[("/", "q")]) == list(state.messages[("/", "q")])
    live = {i for i in range(len(sizes)) if i % 4 or i % 3 == 0}
    assert (tmp_path / LOG_NAME).stat().st_size < sum(len(bodies[i]) for i in live) + 200 * len(
        sizes)


RECOVER_AND_TAKE = textwrap.dedent("""
    import resource, sys
    from gateway.store.disk import DiskStore
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state = DiskStore(sys.argv[1], fsync=False).recover()
    count = total = 0
    for _, message in state.messages[("/", "backlog")]:  # one body at a time, as restore does
        count += 1
        total += len(message.body)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(count, total, peak - before)
""")


def test_restart_over_a_large_backlog_does_not_read_it_into_memory(tmp_path: Path) -> None:
    count, size = 24_000, 4096  # a log of ~100 MB
    store = _open(tmp_path, "backlog")
    for i in range(count):
        store.enqueue("/", "backlog", i, _msg(i, i.to_bytes(4, "big") * (size // 4)))
        if i % 1000 == 999:
            flush(store)
    flush(store)
    store.close()
    log_bytes = (tmp_path / LOG_NAME).stat().st_size
    assert log_bytes > count * size

    out = subprocess.run([sys.executable, "-c", RECOVER_AND_TAKE, str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    recovered, total, grown_kib = map(int, out.split())
    assert (recovered, total) == (count, count * size)
    # an index of a few dozen bytes per message, not the log (reading it whole took > 2x)
    assert grown_kib * 1024 < log_bytes / 4, (grown_kib, log_bytes)
