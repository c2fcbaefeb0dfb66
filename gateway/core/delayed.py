"""Delayed messages: held by their vhost until due, then routed.

Two fronts use this: the `x-delayed-message` exchange type of RabbitMQ's community plugin
(rabbitmq-delayed-message-exchange; a publish with an `x-delay` header of N ms is held and
routed by the exchange's `x-delayed-type` N ms later) and MQTT's `$delayed/SECONDS/topic`
prefix (EMQX's convention), which holds a publish to amq.topic.

Theory of operation
-------------------
A held message is a `Held`: the exchange it will be routed through, its due time (wall
clock, seconds: the `now` the server passes in is `time.time()`) and the message itself. A
vhost keeps its held messages in one `Delayed` heap ordered by (due, arrival), so a tick
pops what is due in O(due * log held), never scanning what is not, and messages due at the
same time go out in the order they came. A held message of a durable exchange that is
persistent is also written to the store (`Store.put_delayed`, its due time as ms since the
epoch) and removed from it once routed (`Store.delete_delayed`, appended after the enqueue
records of its routing, so a crash in between repeats a delivery rather than losing one);
after a restart `Broker.restore` holds them again, and those whose time passed while the
broker was down go out at the first tick. Deleting an exchange drops what it holds (the
plugin would route them through an exchange that no longer exists: nowhere).

Limits: at most `max_messages` held messages and `max_bytes` of their bodies per vhost
(0: no limit); a publish past either is refused with 406 PRECONDITION_FAILED, as RabbitMQ
refuses a publish over its own limits (the plugin itself has none).

Nothing here does I/O: the store only appends records.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.core.errors import PreconditionFailed

if TYPE_CHECKING:
    from gateway.core.message import Message
    from gateway.core.meter import Meter
    from gateway.store.base import DelayedRecord, Store

# the plugin's largest delay, Erlang's largest timer (ms); a longer x-delay is not delayed
MAX_DELAY_MS = 4294967295
DELAY_HEADER = "x-delay"


def delay_of(headers: dict[str, Any] | None) -> int | None:
    """The delay (ms) an `x-delay` header asks for, as the plugin reads it
    (`rabbit_delayed_message_utils:get_delay/1` and the range check of
    `rabbit_exchange_type_delayed_message:delay_message/2`): an integer, a string of one, or
    a float truncated; None when absent, unreadable, not positive or over `MAX_DELAY_MS`
    (the message is then routed at once)."""
    if not headers:
        return None
    value = headers.get(DELAY_HEADER)
    delay: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        delay = value
    elif isinstance(value, (float, Decimal)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        delay = int(value)  # trunc, as the plugin
    elif isinstance(value, (str, bytes)):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if not text or not text.lstrip("+-").isdigit() or not text.isascii():
            return None
        delay = int(text)
    if delay is None or delay <= 0 or delay > MAX_DELAY_MS:
        return None
    return delay


@dataclass(slots=True, eq=False)
class Held:
    due: float  # wall clock, seconds
    exchange: str  # routed through this exchange of the vhost when due
    message: Message
    persisted: bool  # a record in the store waits for its removal
    dropped: bool = False  # its exchange was deleted: skipped when popped


class Delayed:
    """One vhost's held messages: a heap by due time, counts and limits."""

    __slots__ = ("_arrival", "_heap", "bytes", "by_exchange", "count", "max_bytes",
                 "max_messages", "meter", "store", "vhost")

    def __init__(self, vhost: str, store: Store, meter: Meter, max_messages: int = 0,
                 max_bytes: int = 0) -> None:
        self.vhost = vhost
        self.store = store
        # held bodies count as bytes the broker holds in memory (the memory alarm sees them)
        self.meter = meter
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._heap: list[tuple[float, int, Held]] = []
        self._arrival = itertools.count()
        self.count = 0
        self.bytes = 0
        self.by_exchange: dict[str, int] = {}  # held messages per exchange name

    def __len__(self) -> int:
        return self.count

    def check_room(self, size: int, exchange: str) -> None:
        """Refuse (406) a message of `size` bytes that would take the vhost over a limit."""
        if self.max_messages and self.count + 1 > self.max_messages:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - cannot delay message published to exchange "
                f"'{exchange}' in vhost '{self.vhost}': delayed message limit of the vhost "
                f"({self.max_messages} messages) is reached")
        if self.max_bytes and self.bytes + size > self.max_bytes:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - cannot delay message published to exchange "
                f"'{exchange}' in vhost '{self.vhost}': delayed message limit of the vhost "
                f"({self.max_bytes} bytes) is reached")

    def hold(self, exchange: str, message: Message, due: float, persist: bool) -> Held:
        """Hold `message` until `due`; `persist`: write it to the store too (a durable
        exchange and a persistent message). The caller checked the room first."""
        if persist:
            self.store.put_delayed(self.vhost, exchange, int(round(due * 1000)), message)
        return self._add(Held(due, exchange, message, persist))

    def _add(self, held: Held) -> Held:
        heapq.heappush(self._heap, (held.due, next(self._arrival), held))
        size = len(held.message.body)
        self.count += 1
        self.bytes += size
        self.meter.held_bytes += size
        self.by_exchange[held.exchange] = self.by_exchange.get(held.exchange, 0) + 1
        return held

    def restore(self, exchange: str, message: Message, due: float) -> None:
        """Hold again a message the store kept (its record is still there)."""
        self._add(Held(due, exchange, message, True))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Held]:
        """Take the held messages due at `now`, earliest first (ties in arrival order)."""
        out: list[Held] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            held = heapq.heappop(heap)[2]
            if held.dropped:
                continue
            self._forget(held)
            out.append(held)
        return out

    def _forget(self, held: Held) -> None:
        size = len(held.message.body)
        self.count -= 1
        self.bytes -= size
        self.meter.held_bytes -= size
        n = self.by_exchange[held.exchange] - 1
        if n:
            self.by_exchange[held.exchange] = n
        else:
            del self.by_exchange[held.exchange]

    def drop_exchange(self, exchange: str) -> int:
        """Drop what an exchange being deleted holds (removing its store records); the
        heap entries are skipped when they come up. Returns how many were dropped."""
        if exchange not in self.by_exchange:
            return 0
        n = 0
        for _, _, held in self._heap:
            if held.exchange == exchange and not held.dropped:
                held.dropped = True
                self._forget(held)
                if held.persisted:
                    self.store.delete_delayed(self.vhost, held.message.id)
                n += 1
        return n

    def clear(self) -> None:
        """Forget everything held (the vhost is deleted; the store drops its records)."""
        for _, _, held in self._heap:
            if not held.dropped:
                held.dropped = True
                self._forget(held)
        self._heap.clear()

    def persisted(self) -> list[Held]:
        """The held messages the store keeps, in due order (for a snapshot)."""
        return [h for _, _, h in sorted(self._heap, key=lambda e: (e[0], e[1]))
                if h.persisted and not h.dropped]


def record_due(record: DelayedRecord) -> float:
    return record.due / 1000.0
