"""What the core did with a message, told as it happens to typed observers.

The core announces each step of a message's life at the place it takes it, with what it
decided there, as RabbitMQ's channel hands its routing result to `rabbit_trace:tap_in`:

- `Published`: a publish was routed; the queues it reached (the routing result) and, when
  an observer asked for them (`Observer.wants_hops`), the exchange hops the routing walked.
  It is told before the queues take the message, so every later event follows it.
- `Delivered`: a queue handed a message to a consumer (or to a basic.get, `consumer` None).
- `Acked`, `Rejected` (without requeue): the consumer's answer, as the queue settled it.
- `Requeued`: an unacknowledged message went back to its queue (a reject or nack with
  requeue, a recover, or its consumer or channel went away).
- `DeadLettered`: a message left a queue (rejected, expired, over a limit) for its
  dead-letter exchange, and the queues the copy reached.
- `Dropped`: a message left a queue, or was refused by one, for nowhere (no dead-letter
  exchange, a dead-letter cycle, `x-overflow` reject-publish, its queue deleted while it
  was unacknowledged). Messages purged, or deleted with their queue, are not told one by
  one.

- `TopologyChanged`: a queue, exchange, binding or consumer was made or went away
  (`queue.created`, `queue.deleted`, `exchange.created`, ..., `consumer.deleted`), as
  RabbitMQ's `rabbit_event:notify` tells its event exchange. Hidden queues are not told.

Observers are registered on the broker (`Broker.observers`), which every virtual host
shares from its construction on, so a vhost made later is observed from its first
message. A hook point tests the list of observers of its kind of event before it makes
one: with none registered (or none taking that kind) it costs one truth test.

Callbacks run inside the core's step and must not call back into the core, nor change
the event they are given (events are plain slotted records, cheap to make; not frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.message import Message


class QueueRef(Protocol):
    """A queue as an event shows it (the `gateway.core.queue.Queue` itself)."""

    @property
    def name(self) -> str: ...


class ConsumerRef(Protocol):
    """A consumer as an event shows it (the `gateway.core.queue.Consumer` itself)."""

    @property
    def tag(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of a routing: from an exchange to a queue or another exchange."""

    source: str  # the exchange ("" the default exchange)
    destination: str
    to_queue: bool
    via: str  # "default exchange", "<type> binding", "alternate-exchange"
    key: str  # the binding keys that matched, comma-separated


@dataclass(slots=True)
class Published:
    vhost: str
    exchange: str
    routing_key: str
    message: Message
    queues: tuple[QueueRef, ...]  # every queue the routing reached
    hops: tuple[Hop, ...]  # only when an observer wants them for this vhost
    now: float

    @property
    def routed(self) -> bool:
        return bool(self.queues)


@dataclass(slots=True)
class Delivered:
    vhost: str
    queue: str
    message: Message
    seq: int  # the entry's place in its queue
    consumer: ConsumerRef | None  # None: basic.get, or a session resuming what it had
    redelivered: bool
    no_ack: bool


@dataclass(slots=True)
class Acked:
    vhost: str
    queue: str
    message: Message
    seq: int


@dataclass(slots=True)
class Rejected:
    """Rejected without requeue (a dead-lettering or a drop follows)."""

    vhost: str
    queue: str
    message: Message
    seq: int


@dataclass(slots=True)
class Requeued:
    """Back at the head of its queue: rejected or nacked with requeue, recovered, or its
    consumer or channel went away unacknowledged."""

    vhost: str
    queue: str
    message: Message
    seq: int


@dataclass(slots=True)
class DeadLettered:
    vhost: str
    queue: str  # the queue it left
    message: Message  # as it left the queue (the copy has a new id)
    reason: str  # rejected, expired, maxlen
    exchange: str  # the dead-letter exchange
    copy_id: int  # the id of the copy that was routed
    queues: tuple[str, ...]  # where the copy went


@dataclass(slots=True)
class Dropped:
    vhost: str
    queue: str
    message: Message
    # rejected, expired, maxlen; "cycle" (a dead-letter loop cut), "refused" (x-overflow
    # reject-publish), "queue deleted"
    reason: str


@dataclass(slots=True)
class TopologyChanged:
    vhost: str
    event: str  # queue.created, queue.deleted, exchange.*, binding.*, consumer.*
    # the Queue, the Exchange, the Binding, or for consumer.* a (Queue, Consumer) pair
    subject: Any


class Observer:
    """Override the callbacks you need; the others do nothing."""

    def wants_hops(self, vhost: str) -> bool:
        """True to have `Published.hops` filled for publishes in `vhost` (tracing)."""
        return False

    def published(self, event: Published) -> None:
        pass

    def delivered(self, event: Delivered) -> None:
        pass

    def acked(self, event: Acked) -> None:
        pass

    def rejected(self, event: Rejected) -> None:
        pass

    def requeued(self, event: Requeued) -> None:
        pass

    def dead_lettered(self, event: DeadLettered) -> None:
        pass

    def dropped(self, event: Dropped) -> None:
        pass

    def topology(self, event: TopologyChanged) -> None:
        pass


_KINDS = ("published", "delivered", "acked", "rejected", "requeued", "dead_lettered",
          "dropped", "topology")


class Observers:
    """The registered observers, shared by the broker and every vhost. For each kind of
    event, `to_<kind>` lists those that take it (that override its callback): a hook point
    tests that list before it makes an event, so what nobody listens to costs a truth test.
    """

    __slots__ = ("_all", "_hops", "to_published", "to_delivered", "to_acked", "to_rejected",
                 "to_requeued", "to_dead_lettered", "to_dropped", "to_topology")

    def __init__(self, observers: tuple[Observer, ...] = ()) -> None:
        self._all: list[Observer] = []
        self._hops: list[Observer] = []  # those that may want hops
        self.to_published: list[Observer] = []
        self.to_delivered: list[Observer] = []
        self.to_acked: list[Observer] = []
        self.to_rejected: list[Observer] = []
        self.to_requeued: list[Observer] = []
        self.to_dead_lettered: list[Observer] = []
        self.to_dropped: list[Observer] = []
        self.to_topology: list[Observer] = []
        for o in observers:
            self.add(o)

    def __bool__(self) -> bool:
        return bool(self._all)

    def __contains__(self, observer: Observer) -> bool:
        return observer in self._all

    def add(self, observer: Observer) -> None:
        if observer not in self._all:
            self._all.append(observer)
            self._sort()

    def remove(self, observer: Observer) -> None:
        if observer in self._all:
            self._all.remove(observer)
            self._sort()

    def _sort(self) -> None:
        # lists are replaced, never changed in place: a dispatch under way is not disturbed
        for kind in _KINDS:
            base = getattr(Observer, kind)
            setattr(self, f"to_{kind}",
                    [o for o in self._all if getattr(type(o), kind) is not base])
        self._hops = [o for o in self._all if type(o).wants_hops is not Observer.wants_hops]

    def wants_hops(self, vhost: str) -> bool:
        for o in self._hops:
            if o.wants_hops(vhost):
                return True
        return False

    def published(self, event: Published) -> None:
        for o in self.to_published:
            o.published(event)

    def delivered(self, event: Delivered) -> None:
        for o in self.to_delivered:
            o.delivered(event)

    def acked(self, event: Acked) -> None:
        for o in self.to_acked:
            o.acked(event)

    def rejected(self, event: Rejected) -> None:
        for o in self.to_rejected:
            o.rejected(event)

    def requeued(self, event: Requeued) -> None:
        for o in self.to_requeued:
            o.requeued(event)

    def dead_lettered(self, event: DeadLettered) -> None:
        for o in self.to_dead_lettered:
            o.dead_lettered(event)

    def dropped(self, event: Dropped) -> None:
        for o in self.to_dropped:
            o.dropped(event)

    def topology(self, event: TopologyChanged) -> None:
        for o in self.to_topology:
            o.topology(event)
