"""What the store's delivered marks cost on the persistent path, in process (no sockets).

    .venv/bin/python bench/delivered_marks.py [--messages 50000] [--runs 5]

The core and a real DiskStore (fsync on) do what the server does for a durable queue and
persistent messages consumed with manual acknowledgements, once with the marks and once
with `DiskStore.delivered` replaced by a no-op (the store as it was before the marks):

- keeping-up: each message is published, delivered and acked before the batch is taken
  (the mark is dropped with the enqueue record: nothing is written for it);
- backlog: the messages reach the disk first, then a consumer drains them with manual acks
  in windows of 100, the acks arriving before the next group commit (the marks are dropped
  again, the acks written);
- backlog-slow: the same, with a group commit between the deliveries and their acks (as
  when the consumer's acks take longer than a commit): every delivery writes a mark, every
  ack an ack record.

Reports CPU microseconds per message (median of the runs; fsync off unless --fsync, since
the disk's latency varies more than the effect), bytes written per message and writes
(non-empty group commits) per 1000 messages.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.broker import Broker  # noqa: E402
from gateway.core.message import Message, Properties  # noqa: E402
from gateway.core.queue import Entry  # noqa: E402
from gateway.store.disk import DiskStore  # noqa: E402

WINDOW = 100


class NoMarks(DiskStore):
    def delivered(self, vhost: str, queue: str, seq: int) -> None:
        return None


class Window:
    """A consumer with a prefetch window that the loop acks in one go."""

    no_ack = False
    exclusive = False
    priority = 0
    tag = "bench"

    def __init__(self) -> None:
        self.held: list[Entry] = []

    def can_take(self) -> bool:
        return len(self.held) < WINDOW

    def deliver(self, entry: Entry) -> None:
        self.held.append(entry)

    def cancelled(self) -> None:
        return None


WRITES = [0]


def flush(store: Any) -> int:
    batch = store.take_batch()
    if batch is None:
        return 0
    store.write_batch(batch)
    store.committed(batch)
    WRITES[0] += bool(batch.data)
    return len(batch.data)


def run(store_cls: type[DiskStore], mode: str, n: int, fsync: bool
        ) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = store_cls(Path(tmp), fsync=fsync)
        broker = Broker(store)
        broker.recover(0.0)
        vh = broker.vhost("/")
        q = vh.declare_queue("q", durable=True)
        props = Properties(delivery_mode=2)
        body = b"x" * 100
        exchange = vh.get_exchange("")
        written = flush(store)
        consumer = Window()
        if mode.startswith("backlog"):
            for _ in range(n):
                vh.publish(exchange, "q", Message(vh.next_message_id(), "", "q", props, body),
                           0.0)
            flush(store)
            written = 0
            WRITES[0] = 0
            start = time.process_time()
            vh.consume(q, consumer, exclusive=False, now=0.0)
            while consumer.held:
                if mode == "backlog-slow":
                    written += flush(store)
                for e in consumer.held:
                    q.ack(e)
                consumer.held.clear()
                written += flush(store)
                q.dispatch(0.0)
            elapsed = time.process_time() - start
        else:
            vh.consume(q, consumer, exclusive=False, now=0.0)
            WRITES[0] = 0
            start = time.process_time()
            for i in range(n):
                vh.publish(exchange, "q", Message(vh.next_message_id(), "", "q", props, body),
                           0.0)
                if len(consumer.held) == WINDOW or i == n - 1:
                    for e in consumer.held:
                        q.ack(e)
                    consumer.held.clear()
                    written += flush(store)
            elapsed = time.process_time() - start
        store.close()
        return elapsed / n * 1e6, written / n, WRITES[0] * 1000 / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=50000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fsync", action="store_true", help="fsync each group commit")
    args = p.parse_args()
    for mode in ("keeping-up", "backlog", "backlog-slow"):
        results: dict[str, list[tuple[float, float, float]]] = {"marks": [], "no marks": []}
        for _ in range(args.runs):  # alternate, so drift on the machine hits both alike
            results["marks"].append(run(DiskStore, mode, args.messages, args.fsync))
            results["no marks"].append(run(NoMarks, mode, args.messages, args.fsync))
        for name, rows in results.items():
            us = statistics.median(r[0] for r in rows)
            b = statistics.median(r[1] for r in rows)
            w = statistics.median(r[2] for r in rows)
            print(f"{mode:<12} {name:<9} {us:7.2f} us/msg  {b:6.1f} bytes/msg  "
                  f"{w:5.1f} writes/1000 msg")


if __name__ == "__main__":
    main()
