"""Sample history for charts, kept and served as RabbitMQ's management plugin does.

Every INTERVAL seconds (on the wall clock's multiples of INTERVAL) `Stats` records the
counters of each queue (publish, deliver_get, ack, redeliver, ready, unacknowledged) and of
each vhost (the same summed over its queues, plus publishes into its exchanges and
unroutable ones) in a `Series`, which keeps RETENTION seconds of them. A sample equal to the
one before is not stored again, so an idle queue holds one sample, not SLOTS.

The API hands them out as RabbitMQ's does: a GET of `/api/overview`, `/api/queues...` with
`lengths_age` and `lengths_incr` (queue lengths) or `msg_rates_age` and `msg_rates_incr`
(message counters), in seconds, adds to each `<field>_details` object

    "samples": [{"sample": 12, "timestamp": 1700000005000}, ...]   (newest first)
    "avg": <mean of the samples>, "avg_rate": <change per second over the range>

with one sample every `incr` seconds (rounded up to a multiple of INTERVAL), timestamps on
multiples of `incr`, going back `age` seconds (at most RETENTION) but not before the
history began. Counters are cumulative, as in RabbitMQ: a chart draws the rate between two
samples as their difference over the time between them. Before a queue (or vhost) existed
its samples are 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.management.answers import ApiError

if TYPE_CHECKING:
    from gateway.core.queue import Queue

INTERVAL = 5  # seconds between kept samples (RabbitMQ's finest retention step)
RETENTION = 600  # seconds of samples kept (RabbitMQ's basic policy keeps 605 s at 5 s)
SLOTS = RETENTION // INTERVAL + 1

Values = tuple[int, ...]


class Series:
    """The samples of one object: the changes, oldest first, as (bucket, values), where a
    bucket is a wall-clock time divided by INTERVAL. The value at bucket b is that of the
    last change at or before b; before `start` (the object's first sample) it is zeros."""

    __slots__ = ("changes", "start")

    def __init__(self, bucket: int) -> None:
        self.start = bucket
        self.changes: deque[tuple[int, Values]] = deque()

    def record(self, bucket: int, values: Values) -> None:
        changes = self.changes
        if not changes or changes[-1][1] != values:
            changes.append((bucket, values))
        oldest = bucket - SLOTS + 1
        # keep the last change at or before the window's start: it is the value there
        while len(changes) >= 2 and changes[1][0] <= oldest:
            changes.popleft()

    def at(self, buckets: Sequence[int], width: int) -> list[Values]:
        """The values at each of `buckets` (newest first)."""
        zeros = (0,) * width
        out: list[Values] = []
        changes = self.changes
        i = len(changes) - 1
        for b in buckets:
            while i >= 0 and changes[i][0] > b:
                i -= 1
            out.append(changes[i][1] if i >= 0 and b >= self.start else zeros)
        return out

    def __len__(self) -> int:
        return len(self.changes)


@dataclass(frozen=True, slots=True)
class Range:
    """What a request asked for: `age` seconds back, one sample every `incr` seconds."""

    age: int
    incr: int

    @staticmethod
    def parse(query: dict[str, str], prefix: str) -> Range | None:
        age, incr = query.get(f"{prefix}_age"), query.get(f"{prefix}_incr")
        if age is None and incr is None:
            return None
        if age is None or incr is None:
            raise ApiError(400, f"{prefix}_age and {prefix}_incr go together")
        try:
            age_s, incr_s = int(age), int(incr)
        except ValueError:
            raise ApiError(400, f"{prefix}_age and {prefix}_incr must be integers "
                                "(seconds)") from None
        if age_s < 0 or incr_s <= 0:
            raise ApiError(400, f"{prefix}_age must be >= 0 and {prefix}_incr > 0")
        step = -(-incr_s // INTERVAL) * INTERVAL  # rounded up to a multiple of INTERVAL
        return Range(min(age_s, RETENTION), step)

    def buckets(self, first: int, last: int) -> list[int]:
        """The buckets to sample, newest first: on multiples of `incr`, none before
        `first` (when the history began) nor before the kept window."""
        if first < 0 or last < first:
            return []
        oldest = max(first, last - SLOTS + 1)
        per = self.incr // INTERVAL
        newest = last - last % per
        count = self.age // self.incr + 1
        return [b for b in range(newest, newest - count * per, -per) if b >= oldest]


@dataclass(frozen=True, slots=True)
class Ranges:
    lengths: Range | None
    msg_rates: Range | None

    @staticmethod
    def of(query: dict[str, str]) -> Ranges:
        return Ranges(Range.parse(query, "lengths"), Range.parse(query, "msg_rates"))

    def __bool__(self) -> bool:
        return self.lengths is not None or self.msg_rates is not None


def samples(values: Sequence[Values], buckets: Sequence[int], fields: Iterable[int]
            ) -> dict[str, Any]:
    """`samples`, `avg` and `avg_rate` of one field (or the sum of several) of a
    `_details` object."""
    idx = tuple(fields)
    points = [sum(v[i] for i in idx) for v in values]
    out: dict[str, Any] = {
        "samples": [{"sample": p, "timestamp": b * INTERVAL * 1000}
                    for p, b in zip(points, buckets, strict=True)],
        "avg": sum(points) / len(points) if points else 0.0,
        "avg_rate": 0.0,
    }
    if len(points) >= 2:
        seconds = (buckets[0] - buckets[-1]) * INTERVAL
        out["avg_rate"] = round((points[0] - points[-1]) / seconds, 2)
    return out


def add_samples(target: dict[str, Any], what: Sequence[tuple[str, Sequence[int]]],
                values: Sequence[Values], buckets: Sequence[int]) -> None:
    """Fill `target[<name>_details]` for each (name, field indexes) of `what`."""
    for name, fields in what:
        target.setdefault(f"{name}_details", {}).update(samples(values, buckets, fields))


def summed(rows: Iterable[Sequence[Values]], count: int, width: int) -> list[Values]:
    """Elementwise sums of several objects' sampled values (each `count` long)."""
    total = [[0] * width for _ in range(count)]
    for values in rows:
        for acc, v in zip(total, values, strict=True):
            for i in range(width):
                acc[i] += v[i]
    return [tuple(row) for row in total]


# which `_details` get samples, as (name, indexes summed) into stats.QUEUE_FIELDS /
# stats.VHOST_FIELDS
QUEUE_LENGTHS = (("messages", (4, 5)), ("messages_ready", (4,)),
                 ("messages_unacknowledged", (5,)))
QUEUE_RATES = (("publish", (0,)), ("deliver_get", (1,)), ("ack", (2,)), ("redeliver", (3,)))
OVERVIEW_RATES = (("publish", (6,)), ("deliver_get", (1,)), ("ack", (2,)),
                  ("redeliver", (3,)), ("return_unroutable", (7,)))


def _at(series: Series | None, buckets: Sequence[int], width: int) -> list[Values]:
    if series is None:
        return [(0,) * width for _ in buckets]
    return series.at(buckets, width)


class Recorded(Protocol):
    """Where the samples are read from (`stats.Stats` records them)."""

    queue_history: dict[Queue, Series]
    vhost_history: dict[str, Series]
    first_bucket: int
    last_bucket: int


def add_queue_samples(out: dict[str, Any], stats: Recorded, q: Queue, ranges: Ranges) -> None:
    """A queue's `messages*_details` and `message_stats.*_details` get their samples."""
    series = stats.queue_history.get(q)
    if ranges.lengths is not None:
        buckets = ranges.lengths.buckets(stats.first_bucket, stats.last_bucket)
        add_samples(out, QUEUE_LENGTHS, _at(series, buckets, 6), buckets)
    if ranges.msg_rates is not None:
        buckets = ranges.msg_rates.buckets(stats.first_bucket, stats.last_bucket)
        add_samples(out.setdefault("message_stats", {}), QUEUE_RATES,
                    _at(series, buckets, 6), buckets)


def add_overview_samples(out: dict[str, Any], stats: Recorded, vhosts: Iterable[str],
                         ranges: Ranges) -> None:
    """The overview's `queue_totals.*_details` and `message_stats.*_details` get the
    samples of the vhosts the user may see, summed."""
    names = list(vhosts)
    for rng, target, what in ((ranges.lengths, "queue_totals", QUEUE_LENGTHS),
                              (ranges.msg_rates, "message_stats", OVERVIEW_RATES)):
        if rng is None:
            continue
        buckets = rng.buckets(stats.first_bucket, stats.last_bucket)
        values = summed((_at(stats.vhost_history.get(n), buckets, 8) for n in names),
                        len(buckets), 8)
        add_samples(out.setdefault(target, {}), what, values, buckets)
