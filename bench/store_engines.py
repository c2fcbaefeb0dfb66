"""The store engine question: gateway's append-only log against SQLite in WAL mode.

    .venv/bin/python bench/store_engines.py [--messages 20000] [--size 100]

Both engines do what the broker's store task does with persistent messages: each batch
(group commit) writes the messages published meanwhile and deletes (acks) the previous
batch's, and is made durable before it is confirmed (log: one write + fsync; SQLite: one
transaction committed with `synchronous=FULL`, which fsyncs the WAL). The figure is
messages made durable per second, for several batch sizes (1 = no grouping at all).
In-process, no network: it isolates the engine's cost from the rest of the broker.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.core.message import Message, Properties  # noqa: E402
from gateway.store.base import PROPERTY_FIELDS  # noqa: E402
from gateway.store.disk import DiskStore  # noqa: E402
from gateway.store.serial import encode  # noqa: E402


def make_messages(n: int, size: int) -> list[Message]:
    """The messages as the broker holds them when it stores them (built outside the timing)."""
    body = b"x" * size
    return [Message(i + 1, "", "q", Properties(delivery_mode=2, content_type="text/plain"),
                    body) for i in range(n)]


def run_log(tmp: str, n: int, size: int, batch: int) -> float:
    store = DiskStore(Path(tmp) / "log", fsync=True)
    store.recover()
    messages = make_messages(n, size)
    t0 = time.perf_counter()
    prev: list[int] = []
    for start in range(0, n, batch):
        seqs = list(range(start, min(n, start + batch)))
        for seq in seqs:
            store.enqueue("/", "q", seq, messages[seq])
        for seq in prev:
            store.ack("/", "q", seq)
        b = store.take_batch()
        assert b is not None
        store.write_batch(b)
        store.committed(b)
        prev = seqs
    elapsed = time.perf_counter() - t0
    store.close()
    return n / elapsed


def run_sqlite(tmp: str, n: int, size: int, batch: int) -> float:
    path = Path(tmp) / f"sqlite-{batch}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, exchange TEXT, "
               "routing_key TEXT, properties BLOB, body BLOB, origin TEXT)")
    db.execute("CREATE TABLE entries (vhost TEXT, queue TEXT, seq INTEGER, message INTEGER, "
               "PRIMARY KEY (vhost, queue, seq)) WITHOUT ROWID")
    messages = make_messages(n, size)
    t0 = time.perf_counter()
    prev: list[int] = []
    for start in range(0, n, batch):
        seqs = list(range(start, min(n, start + batch)))
        rows: list[Any] = []
        for seq in seqs:
            m = messages[seq]
            rows.append((m.id, m.exchange, m.routing_key,
                         encode([getattr(m.properties, f) for f in PROPERTY_FIELDS]),
                         m.body, m.origin))
        db.execute("BEGIN")
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO entries VALUES ('/', 'q', ?, ?)",
                       [(seq, seq + 1) for seq in seqs])
        db.executemany("DELETE FROM entries WHERE vhost = '/' AND queue = 'q' AND seq = ?",
                       [(seq,) for seq in prev])
        db.executemany("DELETE FROM messages WHERE id = ?", [(seq + 1,) for seq in prev])
        db.execute("COMMIT")
        prev = seqs
    elapsed = time.perf_counter() - t0
    db.close()
    return n / elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--batches", default="1,10,100,1000")
    args = p.parse_args()
    print(f"{args.messages} persistent messages of {args.size} bytes, publish + ack, "
          f"fsync per batch; sqlite {sqlite3.sqlite_version}")
    print(f"{'batch':>6} {'log msg/s':>12} {'sqlite msg/s':>13} {'log/sqlite':>10}")
    for batch in (int(b) for b in args.batches.split(",")):
        n = min(args.messages, max(batch * 20, 2000)) if batch == 1 else args.messages
        with tempfile.TemporaryDirectory(prefix="bench-store-", dir=os.getcwd()) as tmp:
            log_rate = run_log(tmp, n, args.size, batch)
            sql_rate = run_sqlite(tmp, n, args.size, batch)
        print(f"{batch:>6} {log_rate:>12,.0f} {sql_rate:>13,.0f} {log_rate / sql_rate:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
