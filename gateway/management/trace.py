"""Where did my message go: a per-vhost trace of publishes, from any protocol, through
exchanges to the queues and consumers they reached, and what became of them there.

The tracer is an observer of the core (`gateway.core.observe`): for a vhost whose tracing
is on it asks for the exchange hops of each publish and keeps a record made of what the
core announced: the routing result, then per queue each step in order (delivered, to which
consumer; acked, rejected, requeued, dead-lettered and where the copy went, dropped and
why). A dead-lettered copy is followed into the queues it reached, in the same record.
The tracer is registered only while some vhost is traced; then an untraced message costs
a set lookup at its publish and a dict lookup at each later step.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.core.observe import (
    Acked,
    ConsumerRef,
    DeadLettered,
    Delivered,
    Dropped,
    Observer,
    Observers,
    Published,
    Rejected,
    Requeued,
)
from gateway.core.vhost import TRACE_EXCHANGE

KEEP = 200  # traced publishes kept per vhost
MAX_HOPS = 256  # hops recorded for one publish
MAX_STEPS = 64  # steps recorded per queue of one publish

# a message in a queue: (vhost, message id, queue)
Key = tuple[str, int, str]


class Tracer(Observer):
    def __init__(self, observers: Observers, describe: Callable[[ConsumerRef], dict[str, Any]],
                 clock: Callable[[], float]) -> None:
        """`observers`: the broker's, which the tracer joins while some vhost is traced;
        `describe`: the consumer's connection (or session) and channel, for a record."""
        self.observers = observers
        self.describe = describe
        self.clock = clock
        self._on: set[str] = set()
        self.records: dict[str, deque[dict[str, Any]]] = {}
        # the queue outcome entries of the records kept, by message in queue
        self._entries: dict[Key, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._keys: dict[int, list[Key]] = {}  # record id -> its keys in `_entries`
        self._ids = itertools.count(1)
        # told when a vhost's tracing is switched (the firehose follows the same switch)
        self.switches: list[Callable[[str, bool], None]] = []

    # -- switching -------------------------------------------------------------------------

    def enabled(self, vhost: str) -> bool:
        return vhost in self._on

    def enable(self, vhost: str, on: bool) -> None:
        for switch in self.switches:
            switch(vhost, on)
        if on:
            self._on.add(vhost)
            self.records.setdefault(vhost, deque())
            self.observers.add(self)
        else:
            self._on.discard(vhost)
            if not self._on:
                self.observers.remove(self)

    def clear(self, vhost: str) -> None:
        for record in self.records.pop(vhost, ()):
            self._forget(record)
        if vhost in self._on:
            self.records[vhost] = deque()

    def list(self, vhost: str) -> list[dict[str, Any]]:
        return list(reversed(self.records.get(vhost, ())))

    # -- what the core tells ---------------------------------------------------------------

    def wants_hops(self, vhost: str) -> bool:
        return vhost in self._on

    def published(self, event: Published) -> None:
        if event.vhost not in self._on or event.exchange == TRACE_EXCHANGE:
            return  # the firehose's own messages are not traced
        message = event.message
        props = message.properties
        record: dict[str, Any] = {
            "id": next(self._ids), "vhost": event.vhost, "origin": message.origin,
            "exchange": event.exchange, "routing_key": event.routing_key,
            "message_id": props.message_id, "correlation_id": props.correlation_id,
            "content_type": props.content_type, "size": len(message.body),
            "payload_preview": message.body[:64].decode("utf-8", "replace"),
            "hops": [{"from": h.source, "to": h.destination,
                      "to_type": "queue" if h.to_queue else "exchange",
                      "via": h.via, "key": h.key} for h in event.hops[:MAX_HOPS]],
            "time": event.now, "routed": event.routed, "queues": [],
        }
        self._keys[record["id"]] = []
        for q in event.queues:
            self._add_queue(record, event.vhost, message.id, q.name, "routed")
        kept = self.records.setdefault(event.vhost, deque())
        kept.append(record)
        while len(kept) > KEEP:
            self._forget(kept.popleft())

    def delivered(self, event: Delivered) -> None:
        view = self._view(event.vhost, event.message.id, event.queue)
        if view is None:
            return
        step: dict[str, Any] = {"event": "delivered", "redelivered": event.redelivered,
                                "no_ack": event.no_ack, "consumer": None}
        if event.consumer is None:
            view["outcome"] = "fetched"  # basic.get, or a session resuming it
            view.pop("consumer", None)
        else:
            view["outcome"] = "delivered"
            step["consumer"] = view["consumer"] = self.describe(event.consumer)
        self._step(view, step)

    def acked(self, event: Acked) -> None:
        self._settled(event.vhost, event.message.id, event.queue, "acked")

    def rejected(self, event: Rejected) -> None:
        self._settled(event.vhost, event.message.id, event.queue, "rejected")

    def requeued(self, event: Requeued) -> None:
        self._settled(event.vhost, event.message.id, event.queue, "requeued")

    def dead_lettered(self, event: DeadLettered) -> None:
        key = (event.vhost, event.message.id, event.queue)
        found = self._entries.get(key)
        if found is None:
            return
        view, record = found
        view["outcome"] = "dead-lettered"
        self._step(view, {"event": "dead-lettered", "reason": event.reason,
                          "exchange": event.exchange, "queues": list(event.queues)})
        for name in event.queues:
            self._add_queue(record, event.vhost, event.copy_id, name,
                            f"dead-lettered from {event.queue}")

    def dropped(self, event: Dropped) -> None:
        view = self._view(event.vhost, event.message.id, event.queue)
        if view is None:
            return
        view["outcome"] = "refused (queue full)" if event.reason == "refused" else "dropped"
        self._step(view, {"event": "dropped", "reason": event.reason})

    # -- records ---------------------------------------------------------------------------

    def _view(self, vhost: str, message_id: int, queue: str) -> dict[str, Any] | None:
        found = self._entries.get((vhost, message_id, queue))
        return found[0] if found is not None else None

    def _add_queue(self, record: dict[str, Any], vhost: str, message_id: int, queue: str,
                   via: str) -> None:
        view: dict[str, Any] = {"queue": queue, "outcome": "queued", "via": via,
                                "steps": []}
        record["queues"].append(view)
        key = (vhost, message_id, queue)
        self._entries[key] = (view, record)
        self._keys[record["id"]].append(key)

    def _settled(self, vhost: str, message_id: int, queue: str, what: str) -> None:
        view = self._view(vhost, message_id, queue)
        if view is not None:
            view["outcome"] = what
            self._step(view, {"event": what})

    @staticmethod
    def _step(view: dict[str, Any], step: dict[str, Any]) -> None:
        if len(view["steps"]) < MAX_STEPS:
            view["steps"].append(step)

    def _forget(self, record: dict[str, Any]) -> None:
        for key in self._keys.pop(record["id"], ()):
            self._entries.pop(key, None)
