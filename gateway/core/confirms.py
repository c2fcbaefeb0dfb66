"""Answers that wait for the disk: one tracker serves AMQP publisher confirms, MQTT
PUBACK/PUBREC/PUBCOMP (and the QoS 2 PUBLISH/PUBREL whose session records must be durable
first) and STOMP receipts.

As RabbitMQ's `rabbit_mqtt_confirms` keeps what a connection owes its client until the
queues confirm it, a `Confirms` keeps a session's answers, in the order they were given,
each with the store position it waits for (`Durable.position` after the work it answers;
0: nothing was written, it waits only for the answers before it). `insert` adds one;
`confirm` hands back those at the front whose positions the store has made durable, in
order. A negative answer (an AMQP nack of a publish a queue refused) is one of them and
keeps its place: what an answer says is the protocol's business, not the tracker's.

Waking: a tracker that holds an answer waiting for a position not yet durable is
registered with the broker's `Durable`, once, for the first such position (`wait`); after
each group commit the server's store task takes the trackers whose positions became
durable (`Durable.due`) and has their sessions flush. Sessions with nothing waiting are not
visited, and a tracker stays registered until it is woken, so a batch of publishes costs one
registration, not one per message.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

_NOTHING: tuple[()] = ()


class Waiter(Protocol):
    """A session whose answers wait for the disk (see `gateway.server.connection.Session`)."""

    wake: Callable[[], None]

    def flush_confirms(self) -> None: ...

    @property
    def pending_output(self) -> int: ...


class Position(Protocol):
    """What a tracker asks of the broker's durability (`gateway.core.durable.Durable`)."""

    def reached(self) -> int: ...
    def wait(self, position: int, tracker: Confirms[Any]) -> None: ...


class Confirms(Generic[T]):
    """One session's (or AMQP channel's) answers waiting for store positions, in order."""

    __slots__ = ("_durable", "_pending", "waiter", "waiting")

    def __init__(self, durable: Position, waiter: Waiter) -> None:
        self._durable = durable
        self.waiter = waiter
        # position, answer, position, answer, ... in one flat list: inserting allocates no
        # pair, and an idle connection's tracker holds an empty list (a deque is 600 bytes)
        self._pending: list[Any] = []
        self.waiting = 0  # the position it is registered for (0: not registered)

    def __len__(self) -> int:
        return len(self._pending) >> 1

    def insert(self, position: int, item: T) -> None:
        """Answer with `item` once `position` is durable and every earlier answer went."""
        pending = self._pending
        pending.append(position)
        pending.append(item)
        if position and not self.waiting:
            self._durable.wait(position, self)

    def confirm(self) -> Sequence[T]:
        """The answers now due, in order, taken out of the tracker."""
        pending = self._pending
        if not pending:
            return _NOTHING
        reached = self._durable.reached()
        end = len(pending)
        i = 0
        while i < end and pending[i] <= reached:
            i += 2
        if i == end:
            due: list[T] = pending[1::2]
            pending.clear()
            return due
        if not self.waiting:
            self._durable.wait(pending[i], self)
        if not i:
            return _NOTHING
        due = pending[1:i:2]
        del pending[:i]
        return due

    def clear(self) -> None:
        """Forget every answer (the connection is gone). A registration still held is
        dropped when its position becomes durable, with nothing to send."""
        self._pending.clear()


class Waiting:
    """The trackers registered for a position, ordered by it (a heap)."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Confirms[Any]]] = []
        self._order = itertools.count()  # ties: first registered, first woken

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, position: int, tracker: Confirms[Any]) -> None:
        tracker.waiting = position
        heapq.heappush(self._heap, (position, next(self._order), tracker))

    def trackers(self) -> list[Confirms[Any]]:
        """Every registered tracker (each holds an answer not yet due), each once."""
        return list({entry[2]: None for entry in self._heap})

    def due(self, durable: int) -> list[Waiter]:
        """The sessions of the trackers whose positions are durable now, each once, in
        order of position; those trackers are no longer registered."""
        heap = self._heap
        if not heap or heap[0][0] > durable:
            return []
        woken: dict[Waiter, None] = {}
        while heap and heap[0][0] <= durable:
            tracker = heapq.heappop(heap)[2]
            tracker.waiting = 0
            woken[tracker.waiter] = None
        return list(woken)
