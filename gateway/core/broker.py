"""The broker: virtual hosts by name, message ids, recovery and snapshots of durable state.

Sessions reach the model through `Broker.vhost(name)` and durability through
`Broker.durable` (store positions to wait for, keyed values; `gateway.core.durable`); the
server drives time through `tick(now)` and the store's group commits. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from gateway.core.backend import Backend
from gateway.core.delayed import record_due
from gateway.core.durable import Durable
from gateway.core.errors import NotAllowed, NotFound
from gateway.core.exchange import Binding, Exchange
from gateway.core.message import Message, Properties
from gateway.core.meter import Meter
from gateway.core.observe import Observers
from gateway.core.queue import RETURNS_SPACE, Queue
from gateway.core.vhost import VirtualHost
from gateway.store.base import (
    BindingRecord,
    DelayedRecord,
    ExchangeRecord,
    MessageRecord,
    PolicyRecord,
    QueueRecord,
    Recovered,
    Store,
)


class Broker:
    def __init__(self, store: Store, vhosts: Iterable[str] = ("/",), *,
                 paging_threshold: int | None = None, max_queues_per_vhost: int = 0,
                 observers: Observers | None = None, backend: Backend | None = None,
                 delayed_max_messages: int = 0, delayed_max_bytes: int = 0) -> None:
        """`paging_threshold`: bytes the queues hold before they page new messages out
        (None: never); `max_queues_per_vhost`: each vhost's max-queues when it is made
        (0: no limit; a vhost limit set at run time overrides it); `observers`: told what
        happens to messages (gateway.core.observe), shared by every vhost; `backend`: the
        cluster every vhost's messages live in (gateway.core.backend; None: here);
        `delayed_max_messages` / `delayed_max_bytes`: the delayed messages each vhost may
        hold (gateway.core.delayed; 0: no limit)."""
        self.store = store
        self.backend = backend
        # told what happens to messages in every vhost (gateway.core.observe)
        self.observers = observers if observers is not None else Observers()
        self._ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self.meter = Meter() if paging_threshold is None else Meter(paging_threshold)
        self.vhosts: dict[str, VirtualHost] = {}
        # called with the vhost's name after it was deleted; the server closes the
        # connections that were open on it
        self.on_vhost_deleted: list[Callable[[str], None]] = []
        # add what else the store must keep across a compaction (users, vhosts and
        # permissions from the auth service) to a snapshot
        self.snapshot_hooks: list[Callable[[Recovered], None]] = []
        # what the protocols ask of the store: positions to wait for, keyed values
        self.durable = Durable(store)
        self.max_queues_per_vhost = max_queues_per_vhost
        self.delayed_max_messages = delayed_max_messages
        self.delayed_max_bytes = delayed_max_bytes
        for name in vhosts:
            self.add_vhost(name)

    def next_message_id(self) -> int:
        return next(self._ids)

    def next_connection_id(self) -> int:
        """A number no other connection of this broker has had (in consumer tags and the
        names of AMQP's direct reply-to queues)."""
        return next(self._connection_ids)

    def add_vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VirtualHost(name, self.store, self.next_message_id,
                                                 self.meter, self.observers, self.backend)
            vh.max_queues = self.max_queues_per_vhost or None  # (0: no limit)
            vh.delayed.max_messages = self.delayed_max_messages
            vh.delayed.max_bytes = self.delayed_max_bytes
        return vh

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost and everything in it: its queues (their consumers are cancelled,
        their messages dropped), exchanges, bindings and policies."""
        vh = self.vhosts.pop(name, None)
        if vh is None:
            raise NotFound(f"NOT_FOUND - vhost '{name}' not found")
        for q in list(vh.queues.values()):
            vh.remove_queue(q)
        vh.delayed.clear()
        for x in vh.exchanges.values():
            x.deleted = True
        vh.exchanges.clear()
        vh.policies.clear()
        self.store.delete_vhost(name)  # drops the vhost's durable records on replay
        self.durable.vhost_deleted(name)
        for hook in list(self.on_vhost_deleted):
            hook(name)

    def vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            raise NotAllowed(f"NOT_ALLOWED - vhost {name} not found")
        return vh

    def tick(self, now: float) -> None:
        for vh in list(self.vhosts.values()):
            vh.tick(now)

    # -- durability ------------------------------------------------------------------------

    def claim_values(self, space: str) -> dict[tuple[Any, ...], Any]:
        """Take over the recovered values of one space (see `Recovered.values`): from then
        on their owner keeps them, writes their changes and adds them to snapshots."""
        return self.durable.claim_values(space)

    def recover(self, now: float) -> int:
        """Rebuild durable exchanges, queues, bindings and messages from the store.
        Returns the number of messages restored."""
        return self.restore(self.store.recover(), now)

    def restore(self, state: Recovered, now: float) -> int:
        """Rebuild from a state the store has read back (see `recover`)."""
        self._ids = itertools.count(state.max_message_id + 1)
        self.durable.restore_values(state.values)
        for pol in state.policies:
            self.add_vhost(pol.vhost).set_policy(pol.name, pol.pattern, pol.definition,
                                                 pol.priority, pol.apply_to, now=now,
                                                 persist=False)
        for x in state.exchanges:
            vh = self.add_vhost(x.vhost)
            if x.name not in vh.exchanges:
                vh.exchanges[x.name] = Exchange(
                    x.name, x.type, durable=True, auto_delete=x.auto_delete,
                    internal=x.internal, arguments=x.arguments, vhost_name=x.vhost)
        for vh in self.vhosts.values():
            if vh.policies:
                vh.reapply_policies(now)
        for q in state.queues:
            vh = self.add_vhost(q.vhost)
            if q.name not in vh.queues:
                vh.queues[q.name] = Queue(vh, q.name, durable=True, auto_delete=q.auto_delete,
                                          arguments=q.arguments, now=now)
        for b in state.bindings:
            vh = self.add_vhost(b.vhost)
            source = vh.exchanges.get(b.source)
            dest: Queue | Exchange | None = (
                vh.queues.get(b.destination) if b.dest_is_queue
                else vh.exchanges.get(b.destination))
            if source is None or dest is None:
                continue
            binding = Binding.make(source, dest, b.routing_key, b.arguments)
            if source.add_binding(binding) and isinstance(dest, Queue):
                dest.bound_by[binding] = None
        restored = 0
        returns = self.claim_values(RETURNS_SPACE)
        # one message in many queues is one object again; held weakly, so that a body the
        # queue pages out leaves memory (a restart with a backlog larger than memory)
        shared: weakref.WeakValueDictionary[int, Message] = weakref.WeakValueDictionary()
        for (vhost, qname), entries in state.messages.items():
            queue = self.vhosts[vhost].queues.get(qname)
            if queue is None:
                continue
            marks = state.delivered.get((vhost, qname), ())
            for seq, rec in entries:
                msg = shared.get(rec.id)
                if msg is None:
                    msg = shared[rec.id] = Message(
                        rec.id, rec.exchange, rec.routing_key, Properties(**rec.properties),
                        rec.body, rec.origin)
                queue.restore(seq, msg, now, seq in marks,
                              returns.get((vhost, qname, seq), 0))
                restored += 1
        for d in state.delayed:
            # held again; what fell due while the broker was down goes at the first tick
            delayed_vh = self.vhosts.get(d.vhost)
            rec = d.message
            if delayed_vh is None or d.exchange not in delayed_vh.exchanges:
                self.store.delete_delayed(d.vhost, rec.id)
                continue
            delayed_vh.delayed.restore(d.exchange, Message(
                rec.id, rec.exchange, rec.routing_key, Properties(**rec.properties), rec.body,
                rec.origin), record_due(d))
        return restored

    def snapshot(self) -> Recovered:
        """The durable state as the store writes it: durable exchanges, queues and bindings,
        and every persisted message still in a durable queue (ready or unacked)."""
        state = Recovered()
        for vh in self.vhosts.values():
            for pol in vh.policies.values():
                state.policies.append(PolicyRecord(vh.name, pol.name, pol.pattern,
                                                   pol.definition, pol.priority, pol.apply_to))
            for x in vh.exchanges.values():
                if x.durable and x.name and not _predeclared(x):
                    state.exchanges.append(ExchangeRecord(
                        vh.name, x.name, x.type, x.auto_delete, x.internal, x.arguments))
            for q in vh.queues.values():
                if not (q.durable and q.exclusive_owner is None):
                    continue
                state.queues.append(QueueRecord(vh.name, q.name, q.auto_delete, q.arguments))
                entries = [e for e in (*q.iter_ready(), *q.unacked.values()) if e.persisted]
                entries.sort(key=lambda e: e.seq)
                state.messages[(vh.name, q.name)] = [
                    (e.seq, _message_record(e.message)) for e in entries]
                marks = {e.seq for e in entries if e.redelivered or e.delivery_count}
                if marks:
                    state.delivered[(vh.name, q.name)] = marks
                for e in entries:
                    if e.returns:
                        state.values.setdefault(RETURNS_SPACE, {})[
                            (vh.name, q.name, e.seq)] = e.returns
            for held in vh.delayed.persisted():
                state.delayed.append(DelayedRecord(vh.name, held.exchange,
                                                   int(round(held.due * 1000)),
                                                   _message_record(held.message)))
            for b in vh.bindings():
                dest = b.destination
                if b.source.durable and dest.durable and not (
                    isinstance(dest, Queue) and dest.exclusive_owner is not None
                ):
                    state.bindings.append(BindingRecord(
                        vh.name, b.source.name, isinstance(dest, Queue), dest.name,
                        b.routing_key, b.arguments))
        self.durable.snapshot_into(state)
        for hook in self.snapshot_hooks:
            hook(state)
        return state


def _predeclared(x: Exchange) -> bool:
    return x.name.startswith("amq.") and x.name in (
        "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match",
        "amq.rabbitmq.trace", "amq.rabbitmq.event")


def _message_record(m: Message) -> MessageRecord:
    p = m.properties
    props = {f: getattr(p, f) for f in p.__slots__}
    return MessageRecord(m.id, m.exchange, m.routing_key, props, m.body, m.origin)
