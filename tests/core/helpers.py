"""Shared helpers for the core and store tests: a credit-counting consumer, message
factories and a store flush that does what the server's store task does.

The core and the stores are always the real ones; only the consumer (the part a protocol
session plays) is a test double.
"""

from __future__ import annotations

import itertools
from typing import Any

from gateway.core.broker import Broker
from gateway.core.message import Message, Properties
from gateway.core.queue import Entry, Queue
from gateway.core.vhost import VirtualHost
from gateway.store.base import MemoryStore, Store

_ids = itertools.count(1_000_000)


class Owner:
    """Stands for a connection owning exclusive queues."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Owner({self.name!r})"


class CreditConsumer:
    """A consumer with a credit counter, as a session with a prefetch window would be.

    `credit` is decremented on every delivery; `settle` acks (or rejects/requeues) an entry,
    gives the credit back and asks the queue to dispatch again, as a session does.
    """

    def __init__(self, tag: str = "c", *, credit: int = 1_000_000, no_ack: bool = False,
                 exclusive: bool = False, priority: int = 0) -> None:
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.credit = credit
        self.received: list[Entry] = []
        self.was_cancelled = False

    def __repr__(self) -> str:
        return f"CreditConsumer({self.tag!r})"

    def can_take(self) -> bool:
        return self.credit > 0

    def deliver(self, entry: Entry) -> None:
        assert self.credit > 0, "delivered to a consumer without credit"
        self.credit -= 1
        self.received.append(entry)

    def cancelled(self) -> None:
        self.was_cancelled = True

    @property
    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.received]

    def ack(self, entry: Entry, now: float = 0.0) -> None:
        entry.queue.ack(entry)
        self.credit += 1
        entry.queue.dispatch(now)

    def ack_all(self, now: float = 0.0) -> None:
        for e in list(self.received):
            if e.seq in e.queue.unacked:
                self.ack(e, now)


def props(**kw: Any) -> Properties:
    return Properties(**kw)


def message(body: bytes | str = b"x", routing_key: str = "", exchange: str = "",
            **properties: Any) -> Message:
    if isinstance(body, str):
        body = body.encode()
    return Message(next(_ids), exchange, routing_key, Properties(**properties), body)


def new_broker(store: Store | None = None) -> Broker:
    return Broker(store if store is not None else MemoryStore())


def new_vhost() -> VirtualHost:
    return new_broker().vhost("/")


def publish(vh: VirtualHost, exchange: str, routing_key: str, body: bytes | str = b"x",
            now: float = 0.0, **properties: Any) -> Any:
    """Publish as a session does: a fresh message with the broker's next id."""
    if isinstance(body, str):
        body = body.encode()
    msg = Message(vh.next_message_id(), exchange, routing_key, Properties(**properties), body)
    return vh.publish(vh.get_exchange(exchange), routing_key, msg, now)


def ready_bodies(q: Queue) -> list[bytes]:
    return [e.message.body for e in q.iter_ready()]


def drain(q: Queue, now: float = 0.0) -> list[Entry]:
    """basic.get with no_ack until empty."""
    out: list[Entry] = []
    while True:
        e = q.get(True, now)
        if e is None:
            return out
        out.append(e)


def routed_names(queues: Any) -> set[str]:
    return {q.name for q in queues}


def flush(store: Any) -> int:
    """One round of the server's store task: take, write, commit. Returns bytes written."""
    batch = store.take_batch()
    if batch is None:
        return 0
    store.write_batch(batch)
    store.committed(batch)
    return len(batch.data)


def open_disk_broker(data_dir: Any, now: float = 0.0) -> Broker:
    """A broker on a real DiskStore in `data_dir`, recovered as the server starts it."""
    from gateway.store.disk import DiskStore

    broker = Broker(DiskStore(data_dir, fsync=False))
    broker.recover(now)
    return broker


def restart(broker: Broker, data_dir: Any, now: float = 0.0) -> Broker:
    """Write what is pending, close the store, and start a new broker on the same dir."""
    flush(broker.store)
    broker.store.close()
    return open_disk_broker(data_dir, now)
