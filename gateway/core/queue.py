"""Queues: ready messages, unacknowledged deliveries and the consumers they go to.

Theory of operation
-------------------
A queue holds `Entry` objects, each pointing at a shared `Message`. An entry is *ready*
(in `_ready`, by priority when `x-max-priority` is set) or *unacked* (handed to a consumer or
a basic.get that must acknowledge it). `dispatch()` moves ready entries to consumers that
have credit, round-robin among the highest-priority consumers able to take one. Settling an
entry (ack, or reject without requeue) removes it for good; requeueing puts it back at the
head in its original order with `redelivered` set.

Time is an argument (`now`, seconds): per-queue and per-message TTL are checked at the head
of the queue, as RabbitMQ does, whenever the queue is touched and from `VirtualHost.tick`.
Limits (`x-max-length`, `x-max-length-bytes`) are applied on enqueue by `x-overflow`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.message import Message
from gateway.core.meter import Meter
from gateway.core.observe import (
    Acked,
    Delivered,
    Dropped,
    Observers,
    Rejected,
    Requeued,
    TopologyChanged,
)
from gateway.core.paging import ReadyLevel
from gateway.core.policy import Policy, queue_arguments, select
from gateway.core.queue_args import OVERFLOW_MODES, QueueArgs, queue_type, unsupported
from gateway.store.base import Store

if TYPE_CHECKING:
    from gateway.core.backend import Backend

__all__ = ["OVERFLOW_MODES", "RETURNS_SPACE", "Consumer", "Entry", "Queue", "QueueArgs",
           "QueueHost"]

# the store's value space keeping how often a quorum queue's persisted entry came back
# unsettled, by (vhost, queue, seq): its delivery count survives a restart, as RabbitMQ's
# quorum queues keep it in their log
RETURNS_SPACE = "quorum-returns"


class Entry:
    """One message in one queue."""

    __slots__ = ("message", "seq", "redelivered", "expires_at", "queue", "persisted",
                 "delivery_count", "returns", "delivered_at")

    def __init__(self, message: Message, seq: int, queue: Queue, expires_at: float | None,
                 persisted: bool) -> None:
        self.message = message
        self.seq = seq
        self.queue = queue
        self.redelivered = False
        self.expires_at = expires_at
        self.persisted = persisted
        self.delivery_count = 0
        # quorum queues: times it came back unsettled (RabbitMQ 4's acquired_count), the
        # `x-delivery-count` header of its redeliveries
        self.returns = 0
        # when a session last handed it to a client that must acknowledge it (its clock)
        self.delivered_at = 0.0


class Consumer(Protocol):
    """What the core needs from a consumer; sessions implement it.

    The core hands a consumer an `Entry` only when `can_take()` says it has credit (prefetch
    not full, outbound buffer under its high-water mark). When credit comes back the session
    calls `Queue.dispatch` again; nothing is pushed to a consumer that did not ask.
    """

    tag: str
    no_ack: bool
    exclusive: bool
    priority: int

    def can_take(self) -> bool:
        """True when the consumer has credit for one more delivery."""
        ...

    def deliver(self, entry: Entry) -> None:
        """Take one message. Must not call back into the queue synchronously."""
        ...

    def cancelled(self) -> None:
        """The broker ended this consumer (its queue was deleted)."""
        ...


class QueueHost(Protocol):
    """The virtual host a queue lives in, as the queue and its users see it
    (`gateway.core.vhost.VirtualHost` is one): the queue is typed against this, so the vhost
    module that makes queues is the only one that knows both."""

    name: str
    store: Store
    meter: Meter
    observers: Observers
    policies: dict[str, Policy]
    backend: Backend | None  # the cluster its messages live in (None: here)
    next_message_id: Callable[[], int]

    def dead_letter(self, entry: Entry, reason: str, now: float) -> None: ...

    def consume(self, queue: Queue, consumer: Consumer, *, exclusive: bool,
                now: float) -> None: ...

    def cancel(self, queue: Queue, consumer: Consumer, now: float) -> None: ...

    def remove_queue(self, q: Queue) -> int: ...


class Queue:
    def __init__(
        self,
        vhost: QueueHost,
        name: str,
        *,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        now: float = 0.0,
        hidden: bool = False,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        self.queue_type = queue_type(self.arguments)
        self.quorum = self.queue_type == "quorum"
        # every entry is settled through the store: a quorum queue logs every message, as
        # RabbitMQ's do, and a queue fed by a backend acks its entries upstream through it
        self.persist_all = (durable and self.quorum) or vhost.backend is not None
        self.policy: Policy | None = None
        self.args = QueueArgs(self.arguments, self.queue_type)
        if vhost.policies:
            self.policy = select(vhost.policies, "queues", name)
            if self.policy is not None:
                self.args = QueueArgs(self.effective_arguments(), self.queue_type)
        self.hidden = hidden
        self._observers = vhost.observers  # the vhost's, shared (gateway.core.observe)
        # quorum queues: two levels (priority above 4 is high), as RabbitMQ 4's rabbit_fifo_q
        levels = 2 if self.quorum else (self.args.max_priority or 0) + 1
        self._ready: list[ReadyLevel[Entry]] = [
            ReadyLevel(vhost.meter, vhost.store, self._paged_entry) for _ in range(levels)]
        # quorum queues: messages that came back unsettled, delivered before the others in
        # the order they came back (RabbitMQ 4's `returns`); high taken since the last normal
        self._returns: deque[Entry] = deque()
        self._high_run = 0
        self.unsupported_arguments = unsupported(self.arguments)
        self._ready_count = 0
        self.ready_bytes = 0
        self.unacked: dict[int, Entry] = {}
        self.consumers: deque[Consumer] = deque()
        self._consumer_priorities = False
        self._next_seq = 0
        self.had_consumers = False
        self.last_used = now
        self.deleted = False
        self.bound_by: dict[Any, None] = {}  # bindings with this queue as destination
        # counters for management and metrics
        self.stats_published = 0
        self.stats_delivered = 0
        self.stats_acked = 0
        self.stats_redelivered = 0

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def _paged_entry(self, message: Message, seq: int, expires_at: float | None,
                     persisted: bool) -> Entry:
        """An entry of this queue read back from a page (`gateway.core.paging`)."""
        return Entry(message, seq, self, expires_at, persisted)

    # -- counts ----------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return self._ready_count

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def __len__(self) -> int:
        return self._ready_count

    @property
    def has_ttl(self) -> bool:
        return self.args.message_ttl is not None

    # -- policies --------------------------------------------------------------------------

    def effective_arguments(self) -> dict[str, Any]:
        """The policy's keys as `x-` arguments, under the queue's own arguments (which win,
        as in RabbitMQ)."""
        if self.policy is None:
            return self.arguments
        merged = queue_arguments(self.policy.definition)
        merged.update(self.arguments)
        if "x-dead-letter-routing-key" in merged and "x-dead-letter-exchange" not in merged:
            del merged["x-dead-letter-routing-key"]  # a policy's DLRK without any DLX
        return merged

    def apply_policy(self, policy: Policy | None, now: float) -> None:
        """Switch to another policy (or none): new limits apply at once (heads over a new
        max-length are dropped, as RabbitMQ does); TTLs apply to messages enqueued from now."""
        if policy is self.policy:
            return
        self.policy = policy
        self.args = QueueArgs(self.effective_arguments(), self.queue_type)
        args = self.args
        if args.max_length is not None or args.max_length_bytes is not None:
            while self._ready_count and (
                (args.max_length is not None and self._ready_count > args.max_length)
                or (args.max_length_bytes is not None
                    and self.ready_bytes > args.max_length_bytes)):
                head = self._pop_head()
                assert head is not None
                self._release(head)
                self.vhost.dead_letter(head, "maxlen", now)

    # -- enqueue ---------------------------------------------------------------------------

    def _expiry(self, message: Message, now: float) -> float | None:
        ttl = self.args.message_ttl
        mttl = message.ttl_ms()
        if mttl is not None and (ttl is None or mttl < ttl):
            ttl = mttl
        return None if ttl is None else now + ttl / 1000.0

    def enqueue(self, message: Message, now: float) -> bool:
        """Add a routed message. False when `x-overflow` rejected it."""
        args = self.args
        if args.max_length is not None or args.max_length_bytes is not None:
            room = self._make_room(message, now)
            if room is not True:
                return room is None
        seq = self._next_seq
        self._next_seq = seq + 1
        # a quorum queue keeps every message on disk, persistent or not, as RabbitMQ's
        # quorum queues log every message
        persisted = self.persist_all or (self.durable and message.persistent)
        if persisted:
            self.vhost.store.enqueue(self.vhost.name, self.name, seq, message)
        entry = Entry(message, seq, self, self._expiry(message, now), persisted)
        size = len(message.body)
        self.vhost.meter.held_bytes += size
        self.stats_published += 1
        if not self._ready_count and self.consumers and not self.deleted:
            # nothing waits ahead of it: hand it straight to a consumer with credit,
            # never touching the ready list (the common case of a keeping-up consumer)
            consumer = self._pick_consumer()
            if consumer is not None:
                self._hand_over(entry, consumer.no_ack, consumer)
                consumer.deliver(entry)
                return True
        level = self._level(message) if len(self._ready) > 1 else 0
        self._ready[level].append(entry)
        self._ready_count += 1
        self.ready_bytes += size
        if self.consumers:
            self.dispatch(now, fresh=entry)
        if entry.expires_at is not None and entry.expires_at <= now:
            # TTL 0: delivered at once or never, as RabbitMQ does
            self.expire(now)
        return True

    def _make_room(self, message: Message, now: float) -> bool | None:
        """Apply `x-overflow` before `message` is added: True when it fits (after dropping
        heads), False when it is refused, None when it was dropped itself (drop-head and the
        message alone is over the limit)."""
        args = self.args
        size = len(message.body)

        def over() -> bool:
            return (
                (args.max_length is not None and self._ready_count + 1 > args.max_length)
                or (args.max_length_bytes is not None
                    and self.ready_bytes + size > args.max_length_bytes)
            )

        if not over():
            return True
        if args.overflow != "drop-head":
            return False
        while over() and self._ready_count:
            head = self._pop_head()
            assert head is not None
            self._release(head)
            self.vhost.dead_letter(head, "maxlen", now)
        if not over():
            return True
        # on its own over the limit (or x-max-length 0): dropped like any other head,
        # but the publish is accepted
        self.vhost.dead_letter(Entry(message, -1, self, None, False), "maxlen", now)
        return None

    def restore(self, seq: int, message: Message, now: float, delivered: bool = True,
                returns: int = 0) -> None:
        """Put back a message recovered from the store (already persisted); past the paging
        threshold it is paged out like a new one. `delivered`: it had been delivered before
        the restart (the store kept the mark), so it comes back `redelivered`. `returns`:
        a quorum queue's count of its returns, kept by the store."""
        entry = Entry(message, seq, self, self._expiry(message, now), True)
        entry.redelivered = delivered or returns > 0
        if returns and self.quorum:
            entry.returns = returns
            self.vhost.meter.held_bytes += len(message.body)
            self._returns.append(entry)
            self._ready_count += 1
            self.ready_bytes += len(message.body)
            self._next_seq = max(self._next_seq, seq + 1)
            return
        level = self._level(message)
        self.vhost.meter.held_bytes += len(message.body)
        self._ready[level].append(entry)
        self._ready_count += 1
        self.ready_bytes += len(message.body)
        self._next_seq = max(self._next_seq, seq + 1)

    # -- taking messages -------------------------------------------------------------------

    def _level(self, message: Message) -> int:
        if self.quorum:
            return 1 if message.priority > 4 else 0
        return min(message.priority, len(self._ready) - 1)

    def _head_level(self) -> ReadyLevel[Entry] | None:
        """The level the next message comes from: the highest non-empty one; in a quorum
        queue, high twice for each normal one when both wait (rabbit_fifo_q's weight 2)."""
        if self.quorum:
            high, normal = self._ready[1], self._ready[0]
            if high and (not normal or self._high_run < 2):
                return high
            return normal if normal else None
        for level in reversed(self._ready):
            if level:
                return level
        return None

    def _pop_head(self) -> Entry | None:
        if self._returns:
            entry = self._returns.popleft()
        else:
            level = self._head_level()
            if level is None:
                return None
            if self.quorum:
                self._high_run = self._high_run + 1 if level is self._ready[1] else 0
            entry = level.popleft()
        self._ready_count -= 1
        self.ready_bytes -= len(entry.message.body)
        return entry

    def _peek_head(self) -> Entry | None:
        if self._returns:
            return self._returns[0]
        level = self._head_level()
        return None if level is None else level.peek()

    def expire(self, now: float) -> int:
        """Dead-letter (or drop) expired messages at the head; returns how many."""
        n = 0
        while True:
            head = self._peek_head()
            if head is None or head.expires_at is None or head.expires_at > now:
                return n
            self._pop_head()
            self._release(head)
            self.vhost.dead_letter(head, "expired", now)
            n += 1

    def _pick_consumer(self) -> Consumer | None:
        consumers = self.consumers
        if self.args.single_active_consumer:
            c = consumers[0]
            return c if c.can_take() else None
        if self._consumer_priorities:
            best: Consumer | None = None
            for c in consumers:
                if c.can_take() and (best is None or c.priority > best.priority):
                    best = c
            if best is not None:
                consumers.remove(best)
                consumers.append(best)
            return best
        for _ in range(len(consumers)):
            c = consumers[0]
            consumers.rotate(-1)
            if c.can_take():
                return c
        return None

    def dispatch(self, now: float, fresh: Entry | None = None) -> None:
        """Hand ready messages to consumers with credit. `fresh` is the entry being enqueued
        at `now`: it is offered even when its TTL (0) has already run out."""
        if not self.consumers or self.deleted:
            return
        while self._ready_count:
            head = self._peek_head()
            if (head is not None and head is not fresh and head.expires_at is not None
                    and head.expires_at <= now):
                self._pop_head()
                self._release(head)
                self.vhost.dead_letter(head, "expired", now)
                continue
            consumer = self._pick_consumer()
            if consumer is None:
                return
            entry = self._pop_head()
            assert entry is not None
            self._hand_over(entry, consumer.no_ack, consumer)
            consumer.deliver(entry)

    def _hand_over(self, entry: Entry, no_ack: bool, consumer: Consumer | None = None
                   ) -> None:
        """`consumer`: who takes it (None: basic.get, or a session resuming it)."""
        observers = self._observers
        if observers.to_delivered:
            observers.delivered(Delivered(self.vhost.name, self.name, entry.message,
                                          entry.seq, consumer, entry.redelivered, no_ack))
        entry.delivery_count += 1
        self.stats_delivered += 1
        if entry.redelivered:
            self.stats_redelivered += 1
        if no_ack:
            self._release(entry)
        else:
            self.unacked[entry.seq] = entry
            if entry.persisted and not entry.redelivered and entry.delivery_count == 1:
                # first delivery of a persisted entry: the store marks it, so that after a
                # restart it comes back redelivered (one that was never delivered does not)
                self.vhost.store.delivered(self.vhost.name, self.name, entry.seq)

    def get(self, no_ack: bool, now: float) -> Entry | None:
        """basic.get: the head entry, or None when empty."""
        self.last_used = now
        self.expire(now)
        entry = self._pop_head()
        if entry is not None:
            self._hand_over(entry, no_ack)
        return entry

    def take(self, seqs: set[int]) -> list[Entry]:
        """Hand over the ready entries with these seqs, as delivered and unacked, in seq
        order: a session resuming after a restart what it had in flight before (entries
        only on disk pages are not looked for)."""
        if not seqs or not self._ready_count:
            return []
        out: list[Entry] = []
        for e in [e for e in self._returns if e.seq in seqs]:
            self._returns.remove(e)
            self._ready_count -= 1
            self.ready_bytes -= len(e.message.body)
            self._hand_over(e, False)
            out.append(e)
        for level in reversed(self._ready):
            for entry in level.take(seqs):
                self._ready_count -= 1
                self.ready_bytes -= len(entry.message.body)
                self._hand_over(entry, False)
                out.append(entry)
        out.sort(key=lambda e: e.seq)
        return out

    # -- settling --------------------------------------------------------------------------

    def _release(self, entry: Entry) -> None:
        """The entry leaves the queue for good: forget its bytes and its store record."""
        self.vhost.meter.held_bytes -= len(entry.message.body)
        if entry.returns and self.durable:
            self.vhost.store.delete_value(RETURNS_SPACE, (self.vhost.name, self.name, entry.seq))
        if entry.persisted:
            entry.persisted = False
            self.vhost.store.ack(self.vhost.name, self.name, entry.seq)

    def ack(self, entry: Entry) -> None:
        if self.unacked.pop(entry.seq, None) is not None:
            self.stats_acked += 1
            self._release(entry)
            observers = self._observers
            if observers.to_acked:
                observers.acked(Acked(self.vhost.name, self.name, entry.message, entry.seq))

    def reject(self, entry: Entry, now: float) -> None:
        """Reject without requeue: settle and dead-letter."""
        if self.unacked.pop(entry.seq, None) is not None:
            self._release(entry)
            observers = self._observers
            if observers.to_rejected:
                observers.rejected(Rejected(self.vhost.name, self.name, entry.message,
                                            entry.seq))
            self.vhost.dead_letter(entry, "rejected", now)

    def requeue(self, entries: Iterable[Entry], now: float) -> None:
        """Return unacked entries to the head, in their original order. A quorum queue
        counts each return, dead-letters (reason `delivery_limit`) or drops the entries past
        `x-delivery-limit`, and delivers the others before any other message in the order
        they came back, as RabbitMQ 4 does."""
        back = [e for e in entries if self.unacked.pop(e.seq, None) is not None]
        observers = self._observers
        if not back or self.deleted:
            for e in back:
                self._release(e)
                if observers.to_dropped:
                    observers.dropped(Dropped(self.vhost.name, self.name, e.message,
                                              "queue deleted"))
            return
        if self.quorum:
            limit = self.args.delivery_limit
            for e in back:
                e.returns += 1
                e.redelivered = True
                if limit is not None and e.returns > limit:
                    self._release(e)
                    self.vhost.dead_letter(e, "delivery_limit", now)
                    continue
                if observers.to_requeued:
                    observers.requeued(Requeued(self.vhost.name, self.name, e.message, e.seq))
                if e.persisted:
                    self.vhost.store.put_value(RETURNS_SPACE,
                                               (self.vhost.name, self.name, e.seq), e.returns)
                self._returns.append(e)
                self._ready_count += 1
                self.ready_bytes += len(e.message.body)
            self.dispatch(now)
            return
        if observers.to_requeued:
            for e in back:
                observers.requeued(Requeued(self.vhost.name, self.name, e.message, e.seq))
        back.sort(key=lambda e: e.seq, reverse=True)
        for e in back:
            e.redelivered = True
            level = min(e.message.priority, len(self._ready) - 1)
            self._ready[level].appendleft(e)
            self._ready_count += 1
            self.ready_bytes += len(e.message.body)
        self.dispatch(now)

    def purge(self, settle: bool = True) -> int:
        """Drop every ready message (`settle`: and ack their store records; not needed when
        the queue itself is being deleted)."""
        n = self._ready_count
        while self._returns:
            e = self._returns.popleft()
            if not settle:
                e.persisted = False
            self._release(e)
        for level in self._ready:
            for e in level.clear():
                if not settle:
                    e.persisted = False
                self._release(e)
            for seq in level.drop_pages(settle):
                self.vhost.store.ack(self.vhost.name, self.name, seq)
        self._ready_count = 0
        self.ready_bytes = 0
        return n

    # -- consumers -------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer, now: float) -> None:
        self.consumers.append(consumer)
        self.had_consumers = True
        self.last_used = now
        if consumer.priority:
            self._consumer_priorities = True
        backend = self.vhost.backend
        if backend is not None:
            backend.consumers_changed(self)
        if self._observers.to_topology and not self.hidden:
            self._observers.topology(TopologyChanged(self.vhost.name, "consumer.created",
                                                     (self, consumer)))
        self.dispatch(now)

    def remove_consumer(self, consumer: Consumer, now: float) -> None:
        """Forget a consumer (its unacked entries are requeued by its session)."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self._observers.to_topology and not self.hidden:
            self._observers.topology(TopologyChanged(self.vhost.name, "consumer.deleted",
                                                     (self, consumer)))
        self.last_used = now
        self._consumer_priorities = any(c.priority for c in self.consumers)
        backend = self.vhost.backend
        if backend is not None:
            backend.consumers_changed(self)
        if self.args.single_active_consumer and self.consumers:
            self.dispatch(now)

    def iter_ready(self) -> Iterable[Entry]:
        yield from self._returns
        for level in reversed(self._ready):
            yield from level
