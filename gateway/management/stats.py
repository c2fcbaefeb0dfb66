"""Counters and rates for the management API and /metrics, read from the core.

The core keeps plain counters (per vhost: published, unroutable; per queue: published,
delivered, acknowledged, redelivered). `Stats.sample(now)` runs once a second from the
server: it records a short window of samples per queue and for the whole broker, from
which rates are computed (`<metric>_details.rate`, per second over the last few seconds),
and folds the counters of queues that went away into totals, so that broker-wide counters
never go down. It also notes the connections of every protocol as they come and go.

Nothing here is on a message's path: the cost is one pass over queues and sessions per
second while the HTTP listener runs.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.core.broker import Broker
    from gateway.core.queue import Queue

WINDOW = 5.0  # seconds a rate is averaged over
KEEP = 8  # samples kept per series

# per queue: publish, deliver_get, ack, redeliver, messages_ready, messages_unacknowledged
QUEUE_FIELDS = ("publish", "deliver_get", "ack", "redeliver", "messages_ready",
                "messages_unacknowledged")
# broker-wide: the queue fields summed, then publishes into exchanges and unroutable ones
TOTAL_FIELDS = (*QUEUE_FIELDS, "publish_in", "unroutable")

Sample = tuple[float, tuple[int, ...]]


def protocol_key(session: Any) -> str:
    """A short protocol label for a session: the package it comes from (`amqp`, `mqtt`,
    `stomp`, ...)."""
    parts = type(session).__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "protocols" else parts[-1]


def queue_counters(q: Queue) -> tuple[int, ...]:
    return (q.stats_published, q.stats_delivered, q.stats_acked, q.stats_redelivered,
            q.message_count, len(q.unacked))


def _rate(series: deque[Sample] | None, index: int) -> float:
    if not series or len(series) < 2:
        return 0.0
    t_last, last = series[-1]
    first_t, first = series[0]
    for t, values in series:
        if t_last - t <= WINDOW:
            first_t, first = t, values
            break
    dt = t_last - first_t
    if dt <= 0:
        return 0.0
    return round((last[index] - first[index]) / dt, 1)


class Stats:
    def __init__(self, broker: Broker, sessions: set[Any]) -> None:
        self.broker = broker
        self.sessions = sessions
        self._queues: dict[Queue, deque[Sample]] = {}
        self._totals: deque[Sample] = deque(maxlen=KEEP)
        self.retired = [0, 0, 0, 0]  # publish, deliver_get, ack, redeliver of gone queues
        self.seen: dict[Any, tuple[float, str]] = {}  # session -> (first seen, protocol)
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        # messages published, by origin protocol (counted by trace.Tracer's wrapper)
        self.received: dict[str, int] = {}
        self.unroutable: dict[str, int] = {}

    # -- sampling --------------------------------------------------------------------------

    def sample(self, now: float) -> None:
        alive: set[Queue] = set()
        for vh in self.broker.vhosts.values():
            for q in vh.queues.values():
                alive.add(q)
                series = self._queues.get(q)
                if series is None:
                    series = self._queues[q] = deque(maxlen=KEEP)
                series.append((now, queue_counters(q)))
        for q in [q for q in self._queues if q not in alive]:
            last = self._queues.pop(q)[-1][1]
            for i in range(4):
                self.retired[i] += last[i]
        self._totals.append((now, self.totals()))
        self.note_sessions(now)

    def note_sessions(self, now: float) -> None:
        current = set(self.sessions)
        for s in current:
            if s not in self.seen:
                proto = protocol_key(s)
                self.seen[s] = (now, proto)
                self.opened[proto] += 1
        for s in [s for s in self.seen if s not in current]:
            self.closed[self.seen.pop(s)[1]] += 1

    # -- reading ---------------------------------------------------------------------------

    def totals(self) -> tuple[int, ...]:
        sums = list(self.retired) + [0, 0]
        seen: set[Queue] = set()
        published = unroutable = 0
        for vh in self.broker.vhosts.values():
            published += vh.stats_published
            unroutable += vh.stats_unroutable
            for q in vh.queues.values():
                seen.add(q)
                for i, v in enumerate(queue_counters(q)):
                    sums[i] += v
        # queues deleted since the last sample still count
        for q, series in self._queues.items():
            if q not in seen:
                for i in range(4):
                    sums[i] += series[-1][1][i]
        return (*sums, published, unroutable)

    def queue_rate(self, q: Queue, field: str) -> float:
        return _rate(self._queues.get(q), QUEUE_FIELDS.index(field))

    def total_rate(self, field: str) -> float:
        return _rate(self._totals, TOTAL_FIELDS.index(field))

    def connected_at(self, session: Any, now: float) -> float:
        seen = self.seen.get(session)
        return seen[0] if seen is not None else now
