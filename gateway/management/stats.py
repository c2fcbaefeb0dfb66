"""Counters and rates for the management API and /metrics, read from the core.

The core keeps plain counters (per vhost: published, unroutable; per queue: published,
delivered, acknowledged, redelivered; broker-wide, in its `Meter`: messages received and
unroutable by origin protocol). Counting is not an observer: an event made per publish for
a counter cost about a tenth of AMQP's whole per-message path.

`Stats.sample(now)` runs once a second from the server: it records a short window of
samples per queue and for the whole broker, from which rates are computed
(`<metric>_details.rate`, per second over the last few seconds), and folds the counters of
queues that went away into totals, so that broker-wide counters never go down. It also
notes the connections of every protocol as they come and go.

Every `history.INTERVAL` seconds it also records each queue's and each vhost's counters in
a `history.Series` (RETENTION seconds kept), which the API serves as RabbitMQ's `samples`
for the UI's charts; see `gateway/management/history.py`. Channels get rates too (publish,
deliver_get, ack), from counters the AMQP channel keeps.

Nothing here is on a message's path: the cost is one pass over queues and sessions per
second while the HTTP listener runs.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Set
from typing import TYPE_CHECKING

from gateway.info import ChannelInfo, Connected
from gateway.management.history import INTERVAL, Series

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
# per vhost in the history: as TOTAL_FIELDS (ready and unacknowledged of visible queues)
VHOST_FIELDS = TOTAL_FIELDS
# per AMQP channel
CHANNEL_FIELDS = ("publish", "deliver_get", "ack")

Sample = tuple[float, tuple[int, ...]]
ChannelKey = tuple["Connected", int]  # a channel: its connection and number


def protocol_key(session: Connected) -> str:
    """A short protocol label for a session (`amqp`, `mqtt`, `stomp`, ...)."""
    return session.info().key


def queue_counters(q: Queue) -> tuple[int, ...]:
    return (q.stats_published, q.stats_delivered, q.stats_acked, q.stats_redelivered,
            q.message_count, len(q.unacked))


def channel_counters(ch: ChannelInfo) -> tuple[int, ...]:
    """publish, deliver_get, ack."""
    return (ch.publish, ch.deliver_get, ch.ack)


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
    """Rates and history from the core's counters, sampled once a second."""

    def __init__(self, broker: Broker, sessions: Set[Connected]) -> None:
        self.broker = broker
        self.sessions = sessions
        self._queues: dict[Queue, deque[Sample]] = {}
        self._totals: deque[Sample] = deque(maxlen=KEEP)
        self.retired = [0, 0, 0, 0]  # publish, deliver_get, ack, redeliver of gone queues
        self.seen: dict[Connected, tuple[float, str]] = {}  # -> (first seen, protocol)
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        # messages published, by origin protocol: the core's counters (Meter)
        self.received = broker.meter.received
        self.unroutable = broker.meter.unroutable
        self._channels: dict[ChannelKey, deque[Sample]] = {}
        # the history (see history.py): buckets are wall-clock seconds // INTERVAL
        self.queue_history: dict[Queue, Series] = {}
        self.vhost_history: dict[str, Series] = {}
        self.first_bucket = -1  # when the history began (-1: not yet)
        self.last_bucket = -1
        self._vhost_retired: dict[str, list[int]] = {}  # like `retired`, per vhost

    # -- sampling --------------------------------------------------------------------------

    def sample(self, now: float) -> None:
        bucket = int(now // INTERVAL)
        record = bucket > self.last_bucket  # a new history sample is due
        alive: set[Queue] = set()
        sums: dict[str, list[int]] = {}
        for vh in self.broker.vhosts.values():
            acc = sums[vh.name] = [0] * 6
            for q in vh.queues.values():
                alive.add(q)
                values = queue_counters(q)
                series = self._queues.get(q)
                if series is None:
                    series = self._queues[q] = deque(maxlen=KEEP)
                series.append((now, values))
                if record:
                    history = self.queue_history.get(q)
                    if history is None:
                        history = self.queue_history[q] = Series(bucket)
                    history.record(bucket, values)
                    for i in range(4):
                        acc[i] += values[i]
                    if not q.hidden:
                        acc[4] += values[4]
                        acc[5] += values[5]
        for q in [q for q in self._queues if q not in alive]:
            last = self._queues.pop(q)[-1][1]
            self.queue_history.pop(q, None)
            gone = self._vhost_retired.setdefault(q.vhost.name, [0, 0, 0, 0])
            for i in range(4):
                self.retired[i] += last[i]
                gone[i] += last[i]
        self._totals.append((now, self.totals()))
        if record:
            self._record_vhosts(bucket, sums)
        self.note_sessions(now)
        self._sample_channels(now)

    def _record_vhosts(self, bucket: int, sums: dict[str, list[int]]) -> None:
        for vh in self.broker.vhosts.values():
            acc = sums[vh.name]
            gone = self._vhost_retired.get(vh.name, (0, 0, 0, 0))
            values = (acc[0] + gone[0], acc[1] + gone[1], acc[2] + gone[2], acc[3] + gone[3],
                      acc[4], acc[5], vh.stats_published, vh.stats_unroutable)
            history = self.vhost_history.get(vh.name)
            if history is None:
                history = self.vhost_history[vh.name] = Series(bucket)
            history.record(bucket, values)
        for name in [n for n in self.vhost_history if n not in sums]:
            del self.vhost_history[name]
            self._vhost_retired.pop(name, None)
        if self.first_bucket < 0:
            self.first_bucket = bucket
        self.last_bucket = bucket

    def _sample_channels(self, now: float) -> None:
        alive: set[ChannelKey] = set()
        for s in self.sessions:
            for ch in s.info().channels:
                key = (s, ch.number)
                alive.add(key)
                values = channel_counters(ch)
                series = self._channels.get(key)
                if series is None or any(a < b for a, b in zip(values, series[-1][1],
                                                                strict=True)):
                    # new, or a new channel under a number closed since the last sample
                    series = self._channels[key] = deque(maxlen=KEEP)
                series.append((now, values))
        for gone in [k for k in self._channels if k not in alive]:
            del self._channels[gone]

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

    def channel_rate(self, ch: ChannelKey, field: str) -> float:
        return _rate(self._channels.get(ch), CHANNEL_FIELDS.index(field))

    def total_rate(self, field: str) -> float:
        return _rate(self._totals, TOTAL_FIELDS.index(field))

    def connected_at(self, session: Connected, now: float) -> float:
        seen = self.seen.get(session)
        return seen[0] if seen is not None else now
