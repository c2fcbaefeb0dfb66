"""A virtual host: its exchanges, queues and bindings, and the rules of the AMQP model.

Every operation a protocol session performs on the model goes through here, with the
RabbitMQ reply codes and texts clients know (`gateway.core.errors`). Durable objects and
persistent messages in durable queues are written to the store as they change.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.core.delayed import DELAY_HEADER, Delayed, Held, delay_of
from gateway.core.errors import (
    AccessRefused,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from gateway.core.exchange import (
    DELAYED_TYPE,
    EXCHANGE_TYPES,
    ROUTING_TYPES,
    Binding,
    Exchange,
    _freeze,
)
from gateway.core.message import Message
from gateway.core.meter import Meter
from gateway.core.observe import (
    DeadLettered,
    Dropped,
    Hop,
    Observers,
    Published,
    TopologyChanged,
)
from gateway.core.policy import Policy, select
from gateway.core.queue import Consumer, Entry, Queue
from gateway.core.queue_args import TYPE_MODULES
from gateway.core.queue_args import validate as validate_queue_arguments
from gateway.store.base import PolicyRecord

if TYPE_CHECKING:
    from gateway.core.backend import Backend
    from gateway.store.base import Store

log = logging.getLogger("gateway.queue")

PREDECLARED = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)
# the firehose's exchange (gateway.management.firehose), in every vhost as in RabbitMQ's:
# a durable internal topic exchange, published to by the broker alone
TRACE_EXCHANGE = "amq.rabbitmq.trace"
# the event exchange (gateway.management.events), in the default vhost only, as the
# rabbitmq_event_exchange plugin declares it
EVENT_EXCHANGE = "amq.rabbitmq.event"


# The queue arguments RabbitMQ compares when a queue is declared again; others (a client's
# own `x-` keys, for one) may differ without a 406.
EQUIVALENCE_ARGS = frozenset({
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires", "x-max-length",
    "x-max-length-bytes", "x-max-priority", "x-message-ttl", "x-overflow", "x-queue-mode",
    "x-queue-type", "x-single-active-consumer", "x-queue-master-locator",
    "x-queue-leader-locator", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-delivery-limit", "x-dead-letter-strategy", "x-max-age",
})


@dataclass(frozen=True, slots=True)
class PublishResult:
    routed: bool
    rejected: bool  # some queue refused it (x-overflow reject-publish)
    # held to be routed later (gateway.core.delayed): not routed now, as the plugin answers
    held: bool = False


# the outcomes, shared: a publish allocates no result object
UNROUTED = PublishResult(False, False)
ROUTED = PublishResult(True, False)
REJECTED = PublishResult(True, True)
HELD = PublishResult(False, False, True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _hop(ex: Exchange, dest: Queue | Exchange) -> Hop:
    keys = sorted({b.routing_key for b in ex.bindings if b.destination is dest})
    return Hop(ex.name, dest.name, isinstance(dest, Queue), f"{ex.type} binding",
               ", ".join(keys))


def _is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """True when dead-lettering into `queue` closes a loop with no rejection in it: walking
    `x-death` from the newest, `queue` comes up before any "rejected" death."""
    for d in deaths:
        if d.get("reason") == "rejected":
            return False
        if d.get("queue") == queue:
            return True
    return False


def _check_delayed_type(kind: Any) -> None:
    """`x-delayed-type` as the plugin's `validate/1` checks it: a string naming an exchange
    type (else 406), that type known (else 503, `rabbit_exchange:check_type/1`). The plugin
    would recurse on its own type; it is refused with the 406."""
    if not isinstance(kind, str) or kind == DELAYED_TYPE:
        raise PreconditionFailed("PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' "
                                 "must be an existing exchange type")
    if kind not in ROUTING_TYPES:
        raise CommandInvalid(f"COMMAND_INVALID - unknown exchange type '{kind}'")


def server_queue_name() -> str:
    return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class VirtualHost:
    def __init__(self, name: str, store: Store, next_message_id: Any,
                 meter: Meter | None = None, observers: Observers | None = None,
                 backend: Backend | None = None) -> None:
        self.name = name
        self.store = store
        # None: messages are routed and kept here; else the cluster's (gateway.core.backend)
        self.backend = backend
        self.meter = meter if meter is not None else Meter()
        # told what happens to messages here (gateway.core.observe); the broker's, shared
        self.observers = observers if observers is not None else Observers()
        self.next_message_id = next_message_id
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        # RabbitMQ's max-queues vhost limit (None: no limit; 0: no queue may be declared)
        self.max_queues: int | None = None
        self.policies: dict[str, Policy] = {}
        self._default = Exchange("", "direct", durable=True, vhost_name=name)
        self.exchanges[""] = self._default
        for xname, xtype in PREDECLARED:
            self.exchanges[xname] = Exchange(xname, xtype, durable=True, vhost_name=name)
        self.exchanges[TRACE_EXCHANGE] = Exchange(TRACE_EXCHANGE, "topic", durable=True,
                                                  internal=True, vhost_name=name)
        if name == "/":
            self.exchanges[EVENT_EXCHANGE] = Exchange(EVENT_EXCHANGE, "topic", durable=True,
                                                      internal=True, vhost_name=name)
        self.stats_published = 0
        self.stats_unroutable = 0
        # messages held until due (x-delayed-message exchanges, MQTT's $delayed/)
        self.delayed = Delayed(name, store, self.meter)

    def __repr__(self) -> str:
        return f"VirtualHost({self.name!r})"

    # -- lookups ---------------------------------------------------------------------------

    def _where(self) -> str:
        return f"in vhost '{self.name}'"

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise NotFound(f"NOT_FOUND - no exchange '{name}' {self._where()}")
        return ex

    def exchange_for_publish(self, name: str) -> Exchange:
        """The exchange a publish goes to: it must exist and not be internal."""
        ex = self.get_exchange(name)
        if ex.internal:
            raise AccessRefused(f"ACCESS_REFUSED - cannot publish to internal exchange "
                                f"'{name}' {self._where()}")
        return ex

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise NotFound(f"NOT_FOUND - no queue '{name}' {self._where()}")
        self._check_exclusive(q, owner)
        return q

    def _check_exclusive(self, q: Queue, owner: object | None) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise ResourceLocked(
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                f"'{q.name}' {self._where()}. It could be originally declared on another "
                "connection or the exclusive property value does not match that of the "
                "original declaration."
            )

    # -- exchanges -------------------------------------------------------------------------

    def declare_exchange(
        self, name: str, type: str, *, passive: bool = False, durable: bool = False,
        auto_delete: bool = False, internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Exchange:
        args = dict(arguments or {})
        if name == "" and not passive:
            raise AccessRefused("ACCESS_REFUSED - operation not permitted on the default "
                                "exchange")
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise NotFound(f"NOT_FOUND - no exchange '{name}' {self._where()}")
            return existing
        if type not in EXCHANGE_TYPES:
            raise CommandInvalid(f"COMMAND_INVALID - unknown exchange type '{type}'")
        if existing is not None:
            if existing.type != type:
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' "
                    f"{self._where()}: received '{type}' but current is '{existing.type}'")
            for field, got, cur in (("durable", durable, existing.durable),
                                    ("auto_delete", auto_delete, existing.auto_delete),
                                    ("internal", internal, existing.internal)):
                if got != cur:
                    raise PreconditionFailed(
                        f"PRECONDITION_FAILED - inequivalent arg '{field}' for exchange "
                        f"'{name}' {self._where()}: received '{_fmt(got)}' but current is "
                        f"'{_fmt(cur)}'")
            ae_got, ae_cur = args.get("alternate-exchange"), existing.arguments.get(
                "alternate-exchange")
            if _freeze(ae_got) != _freeze(ae_cur):
                # RabbitMQ compares only this argument of an exchange on redeclare
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for "
                    f"exchange '{name}' {self._where()}: received {_fmt(ae_got)} but "
                    f"current is {_fmt(ae_cur)}")
            return existing
        if name.startswith("amq."):
            raise AccessRefused(f"ACCESS_REFUSED - exchange name '{name}' contains reserved "
                                "prefix 'amq.*'")
        if type == DELAYED_TYPE:
            # checked when made, as RabbitMQ validates a new exchange only (a redeclare
            # compares alternate-exchange alone)
            _check_delayed_type(args.get("x-delayed-type"))
        ex = Exchange(name, type, durable=durable, auto_delete=auto_delete, internal=internal,
                      arguments=args, vhost_name=self.name)
        if self.policies:
            ex.policy = select(self.policies, "exchanges", name)
        self.exchanges[name] = ex
        if durable:
            self.store.put_exchange(self.name, ex)
        self._tell("exchange.created", ex)
        return ex

    def _tell(self, event: str, subject: Any) -> None:
        """A topology change, to the observers that take them (the event exchange)."""
        if self.observers.to_topology:
            self.observers.topology(TopologyChanged(self.name, event, subject))

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        if name == "" or name.startswith("amq."):
            raise AccessRefused(f"ACCESS_REFUSED - operation not permitted on exchange "
                                f"'{name}'" if name else
                                "ACCESS_REFUSED - operation not permitted on the default "
                                "exchange")
        ex = self.exchanges.get(name)
        if ex is None:
            # RabbitMQ answers delete-ok for an exchange that does not exist
            return
        if if_unused and ex.bindings:
            raise PreconditionFailed(f"PRECONDITION_FAILED - exchange '{name}' "
                                     f"{self._where()} in use")
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange) -> None:
        del self.exchanges[ex.name]
        ex.deleted = True
        if self.delayed.count:
            self.delayed.drop_exchange(ex.name)
        for b in list(ex.bindings):
            self._drop_binding(b, cascade=False)
        for other in list(self.exchanges.values()):
            for b in [b for b in other.bindings if b.destination is ex]:
                self._drop_binding(b)
        if ex.durable:
            self.store.delete_exchange(self.name, ex.name)
        self._tell("exchange.deleted", ex)

    # -- queues ----------------------------------------------------------------------------

    def declare_queue(
        self, name: str, *, passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False,
        arguments: dict[str, Any] | None = None, owner: object | None = None,
        now: float = 0.0, hidden: bool = False, server_named: bool = False,
    ) -> Queue:
        """Declare a queue; "" gets a server name. A caller that must check permissions on
        the name before the queue exists passes a `server_queue_name()` it made itself with
        `server_named=True` (the `amq.` prefix is then its own, not the client's)."""
        args = dict(arguments or {})
        existing = self.queues.get(name) if name else None
        if passive:
            if existing is None:
                raise NotFound(f"NOT_FOUND - no queue '{name}' {self._where()}")
            self._check_exclusive(existing, owner)
            existing.last_used = now
            return existing
        if existing is not None:
            self._check_exclusive(existing, owner)
            for field, got, cur in (("durable", durable, existing.durable),
                                    ("exclusive", exclusive,
                                     existing.exclusive_owner is not None),
                                    ("auto_delete", auto_delete, existing.auto_delete)):
                if got != cur:
                    raise PreconditionFailed(
                        f"PRECONDITION_FAILED - inequivalent arg '{field}' for queue '{name}' "
                        f"{self._where()}: received '{_fmt(got)}' but current is "
                        f"'{_fmt(cur)}'")
            for key in sorted((set(args) | set(existing.arguments)) & EQUIVALENCE_ARGS):
                got_v, cur_v = args.get(key), existing.arguments.get(key)
                if key == "x-queue-type":
                    # RabbitMQ puts the default type in before comparing
                    got_v, cur_v = got_v or "classic", cur_v or "classic"
                if _freeze(got_v) != _freeze(cur_v):
                    raise PreconditionFailed(
                        f"PRECONDITION_FAILED - inequivalent arg '{key}' for queue '{name}' "
                        f"{self._where()}: received {_fmt(got_v)!s} but current is "
                        f"{_fmt(cur_v)!s}")
            existing.last_used = now
            return existing
        qtype = validate_queue_arguments(
            args, f"queue '{name}' {self._where()}" if name else "queue")
        if qtype != "classic" and (server_named or not name):
            raise PreconditionFailed(f"PRECONDITION_FAILED - Cannot declare a server-named "
                                     f"queue for type {TYPE_MODULES[qtype]}")
        if qtype == "stream":
            raise PreconditionFailed(f"PRECONDITION_FAILED - cannot declare queue '{name}' "
                                     f"{self._where()}: x-queue-type 'stream' is not "
                                     "supported yet by this broker (streams are not built)")
        if qtype == "quorum":
            # RabbitMQ 4: rabbit_quorum_queue:declare/2 through rabbit_queue_type_util
            for bad, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"),
                              (not durable, "non-durable")):
                if bad:
                    raise PreconditionFailed(f"PRECONDITION_FAILED - invalid property "
                                             f"'{prop}' for queue '{name}' {self._where()}")
            if args.get("x-overflow") == "reject-publish-dlx":
                log.warning("Invalid overflow strategy 'reject-publish-dlx' for quorum queue "
                            "'%s' %s: drop-head is used", name, self._where())
        if not name:
            name = server_queue_name()
        elif name.startswith("amq.") and not hidden and not server_named:
            raise AccessRefused(f"ACCESS_REFUSED - queue name '{name}' contains reserved "
                                "prefix 'amq.*'")
        if self.max_queues is not None and not hidden and len(self.queues) >= self.max_queues:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - cannot declare queue '{name}': queue limit in vhost "
                f"'{self.name}' ({self.max_queues}) is reached")
        q = Queue(self, name, durable=durable, exclusive_owner=owner if exclusive else None,
                  auto_delete=auto_delete, arguments=args, now=now, hidden=hidden)
        self.queues[name] = q
        if q.unsupported_arguments:
            # accepted and ignored, as RabbitMQ ignores arguments it does not know
            log.info("queue '%s' %s: arguments %s are not supported and are ignored", name,
                     self._where(), ", ".join(q.unsupported_arguments))
        if durable and not exclusive:
            self.store.put_queue(self.name, q)
        if self.backend is not None and not hidden:
            self.backend.queue_declared(q)
        if not hidden:
            self._tell("queue.created", q)
        return q

    def delete_queue(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False,
        owner: object | None = None,
    ) -> int:
        q = self.queues.get(name)
        if q is None:
            # RabbitMQ answers delete-ok (0 messages) for a queue that does not exist
            return 0
        self._check_exclusive(q, owner)
        if if_unused and q.consumers:
            raise PreconditionFailed(f"PRECONDITION_FAILED - queue '{name}' {self._where()} "
                                     "in use")
        if if_empty and q.message_count:
            raise PreconditionFailed(f"PRECONDITION_FAILED - queue '{name}' {self._where()} "
                                     "is not empty")
        return self.remove_queue(q)

    def remove_queue(self, q: Queue) -> int:
        """Delete a queue: cancel its consumers, drop its bindings and messages."""
        if q.deleted:
            return 0
        n = q.message_count
        q.deleted = True
        del self.queues[q.name]
        for b in list(q.bound_by):
            self._drop_binding(b)
        consumers = list(q.consumers)
        q.consumers.clear()
        for c in consumers:
            c.cancelled()
        for e in q.unacked.values():
            e.persisted = False
            self.meter.held_bytes -= len(e.message.body)
        q.purge(settle=False)
        q.unacked.clear()
        if q.durable and q.exclusive_owner is None:
            self.store.delete_queue(self.name, q.name)
        if self.backend is not None and not q.hidden:
            self.backend.queue_deleted(q)
        if not q.hidden:
            self._tell("queue.deleted", q)
        return n

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        return self.get_queue(name, owner).purge()

    # -- bindings --------------------------------------------------------------------------

    def bind(
        self, destination: Queue | Exchange, source_name: str, routing_key: str,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        if source_name == "":
            what = "queue" if isinstance(destination, Queue) else "exchange"
            raise AccessRefused(f"ACCESS_REFUSED - operation not permitted on the default "
                                f"exchange (binding {what} '{destination.name}')")
        source = self.get_exchange(source_name)
        binding = Binding.make(source, destination, routing_key, arguments)
        if source.add_binding(binding):
            self._attach(binding)
            if source.durable and destination.durable and not (
                isinstance(destination, Queue) and destination.exclusive_owner is not None
            ):
                self.store.put_binding(self.name, binding)
            if self.backend is not None:
                self.backend.bound(binding)
            self._tell("binding.created", binding)

    def _attach(self, binding: Binding) -> None:
        dest = binding.destination
        if isinstance(dest, Queue):
            dest.bound_by[binding] = None

    def unbind(
        self, destination: Queue | Exchange, source_name: str, routing_key: str,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        if source_name == "":
            raise AccessRefused("ACCESS_REFUSED - operation not permitted on the default "
                                "exchange")
        source = self.get_exchange(source_name)
        binding = Binding.make(source, destination, routing_key, arguments)
        if binding in source.bindings:
            self._drop_binding(binding)

    def _drop_binding(self, binding: Binding, cascade: bool = True) -> None:
        source = binding.source
        if not source.remove_binding(binding):
            return
        dest = binding.destination
        if isinstance(dest, Queue):
            dest.bound_by.pop(binding, None)
        if source.durable and dest.durable:
            self.store.delete_binding(self.name, binding)
        if self.backend is not None and not (isinstance(dest, Queue) and dest.deleted):
            self.backend.unbound(binding)
        self._tell("binding.deleted", binding)
        if cascade and source.auto_delete and not source.bindings and not source.deleted:
            self._remove_exchange(source)

    def bindings(self) -> Iterable[Binding]:
        for ex in self.exchanges.values():
            yield from ex.bindings

    # -- consumers -------------------------------------------------------------------------

    def consume(self, queue: Queue, consumer: Consumer, *, exclusive: bool, now: float) -> None:
        if queue.consumers and any(c.exclusive for c in queue.consumers):
            raise AccessRefused(f"ACCESS_REFUSED - queue '{queue.name}' {self._where()} in "
                                "exclusive use")
        if exclusive and queue.consumers:
            raise AccessRefused(f"ACCESS_REFUSED - queue '{queue.name}' {self._where()} in "
                                "use")
        queue.add_consumer(consumer, now)

    def cancel(self, queue: Queue, consumer: Consumer, now: float) -> None:
        queue.remove_consumer(consumer, now)
        if queue.auto_delete and queue.had_consumers and not queue.consumers \
                and not queue.deleted:
            self.remove_queue(queue)

    # -- publishing ------------------------------------------------------------------------

    def route(self, exchange: Exchange, routing_key: str,
              headers: dict[str, Any] | None,
              hops: list[Hop] | None = None) -> dict[Queue, None]:
        """Every queue a publish reaches, through exchange-to-exchange bindings and
        alternate exchanges, each once. `hops`: where to note each step taken (tracing)."""
        if exchange is self._default:
            q = self.queues.get(routing_key)
            if q is not None and hops is not None:
                hops.append(Hop("", q.name, True, "default exchange", routing_key))
            return {q: None} if q is not None else {}
        out: dict[Queue, None] = {}
        seen: set[Exchange] = set()
        stack = [exchange]
        while stack:
            ex = stack.pop()
            if ex in seen:
                continue
            seen.add(ex)
            if ex is self._default:
                q = self.queues.get(routing_key)
                if q is not None:
                    out[q] = None
                    if hops is not None:
                        hops.append(Hop("", q.name, True, "default exchange", routing_key))
                continue
            matched = False
            for dest in ex.route(routing_key, headers):
                matched = True
                if hops is not None:
                    hops.append(_hop(ex, dest))
                if isinstance(dest, Queue):
                    out[dest] = None
                else:
                    stack.append(dest)
            if not matched:
                ae_name = ex.alternate_exchange
                if ae_name is not None:
                    ae = self.exchanges.get(ae_name)
                    if ae is not None:
                        stack.append(ae)
                        if hops is not None:
                            hops.append(Hop(ex.name, ae.name, False, "alternate-exchange", ""))
        return out

    def publish(self, exchange: Exchange, routing_key: str, message: Message,
                now: float) -> PublishResult:
        """Route `message` and enqueue it in every queue it reaches (with a backend: hand
        it to the cluster, which routes it)."""
        if self.backend is not None:
            return self.backend.publish(self, exchange, routing_key, message, now)
        if exchange.delayed:
            delay = delay_of(message.properties.headers)
            if delay is not None:
                return self.hold(exchange, message, delay, now)
        if self.observers.to_published:
            return self._publish_observed(exchange, routing_key, message, now)
        self.stats_published += 1
        received = self.meter.received
        origin = message.origin
        received[origin] = received.get(origin, 0) + 1
        headers = message.properties.headers
        if headers and ("CC" in headers or "BCC" in headers):
            queues = self._route_sender_selected(exchange, routing_key, message)
        else:
            queues = self.route(exchange, routing_key, headers)
        if not queues:
            self._unroutable(origin)
            return UNROUTED
        rejected = False
        for q in queues:
            if not q.enqueue(message, now):
                rejected = True
                self._refused(q, message, now)
        return REJECTED if rejected else ROUTED

    # -- delayed messages (gateway.core.delayed) -------------------------------------------

    def hold(self, exchange: Exchange, message: Message, delay_ms: int,
             now: float) -> PublishResult:
        """Hold a publish for `delay_ms`, then route it through `exchange` by the message's
        routing key. Raises `PreconditionFailed` past the vhost's delayed-message limits.
        The answer is `HELD`: not routed now (the plugin's route returns no queue, so a
        mandatory publish is returned, `rabbitmq-delayed-message-exchange` issue #7)."""
        self.delayed.check_room(len(message.body), exchange.name)
        self.stats_published += 1
        received = self.meter.received
        received[message.origin] = received.get(message.origin, 0) + 1
        headers = message.properties.headers
        if headers and DELAY_HEADER in headers:
            # the plugin's swap_delay_header: delivered with x-delay = -delay, so a further
            # delayed exchange does not delay it again and consumers can tell it was delayed
            message.properties.headers = {**headers, DELAY_HEADER: -delay_ms}
            message.cache.clear()  # encodings made of the properties as published
        self.delayed.hold(exchange.name, message, now + delay_ms / 1000.0,
                          exchange.durable and message.persistent)
        return HELD

    def release_due(self, now: float) -> int:
        """Route every held message due at `now`; returns how many went."""
        due = self.delayed.pop_due(now)
        for held in due:
            self._release(held, now)
        return len(due)

    def _release(self, held: Held, now: float) -> None:
        message = held.message
        exchange = self.exchanges.get(held.exchange)
        if exchange is not None and self.backend is not None:
            # in front of a cluster (MQTT's $delayed/ held here): the cluster routes it
            self.backend.publish(self, exchange, message.routing_key, message, now)
        elif exchange is not None:
            headers = message.properties.headers
            if headers and ("CC" in headers or "BCC" in headers):
                queues = self._route_sender_selected(exchange, message.routing_key, message)
            else:
                queues = self.route(exchange, message.routing_key, headers)
            if not queues:
                self._unroutable(message.origin)
            if self.observers.to_published:
                self.observers.published(Published(
                    self.name, exchange.name, message.routing_key, message, tuple(queues),
                    (), now))
            for q in queues:
                if not q.enqueue(message, now):
                    self._refused(q, message, now)
        if held.persisted:
            # after the enqueue records: a crash between them repeats, never loses, it
            self.store.delete_delayed(self.name, message.id)

    def _unroutable(self, origin: str) -> None:
        self.stats_unroutable += 1
        unroutable = self.meter.unroutable
        unroutable[origin] = unroutable.get(origin, 0) + 1

    def _refused(self, q: Queue, message: Message, now: float) -> None:
        """`q` refused a publish (x-overflow reject-publish or reject-publish-dlx)."""
        if q.args.overflow == "reject-publish-dlx":
            self.dead_letter(Entry(message, -1, q, None, False), "maxlen", now)
        elif self.observers.to_dropped:
            self.observers.dropped(Dropped(self.name, q.name, message, "refused"))

    def _publish_observed(self, exchange: Exchange, routing_key: str, message: Message,
                          now: float) -> PublishResult:
        """`publish` with observers: the same steps, and the routing result told to them
        before the queues act on it (so a delivery is seen after its publish)."""
        self.stats_published += 1
        received = self.meter.received
        origin = message.origin
        received[origin] = received.get(origin, 0) + 1
        hops: list[Hop] | None = [] if self.observers.wants_hops(self.name) else None
        headers = message.properties.headers
        if headers and ("CC" in headers or "BCC" in headers):
            queues = self._route_sender_selected(exchange, routing_key, message, hops)
        else:
            queues = self.route(exchange, routing_key, headers, hops)
        if not queues:
            self._unroutable(origin)
        self.observers.published(Published(
            self.name, exchange.name, routing_key, message, tuple(queues),
            tuple(hops) if hops else (), now))
        if not queues:
            return UNROUTED
        rejected = False
        for q in queues:
            if not q.enqueue(message, now):
                rejected = True
                self._refused(q, message, now)
        return REJECTED if rejected else ROUTED

    def _route_sender_selected(self, exchange: Exchange, routing_key: str,
                               message: Message, hops: list[Hop] | None = None
                               ) -> dict[Queue, None]:
        headers = message.properties.headers or {}
        keys = [routing_key]
        for name in ("CC", "BCC"):
            extra = headers.get(name)
            if isinstance(extra, list):
                keys.extend(k for k in extra if isinstance(k, str))
        if "BCC" in headers:
            message.properties.headers = {k: v for k, v in headers.items() if k != "BCC"}
            message.cache.clear()  # encodings made of the properties as published
        out: dict[Queue, None] = {}
        for key in keys:
            out.update(self.route(exchange, key, headers, hops))
        return out

    # -- dead-lettering --------------------------------------------------------------------

    def dead_letter(self, entry: Entry, reason: str, now: float) -> None:
        """Republish a rejected, expired or dropped message to the queue's DLX with its
        history in `x-death`, as RabbitMQ does; without a DLX it is dropped."""
        q = entry.queue
        dlx_name = q.args.dlx
        dlx = self.exchanges.get(dlx_name) if dlx_name is not None else None
        if dlx is None:
            if self.observers.to_dropped:
                self.observers.dropped(Dropped(self.name, q.name, entry.message, reason))
            return
        old = entry.message
        props = old.properties.copy()
        headers = dict(props.headers or {})
        cc = headers.get("CC")
        routing_keys = [old.routing_key] + (
            [k for k in cc if isinstance(k, str)] if isinstance(cc, list) else [])
        deaths = [d for d in headers.get("x-death", []) if isinstance(d, dict)]
        for d in deaths:
            if d.get("queue") == q.name and d.get("reason") == reason:
                deaths.remove(d)
                d = dict(d)
                d["count"] = int(d.get("count", 1)) + 1
                d["time"] = datetime.fromtimestamp(int(now), UTC)
                deaths.insert(0, d)
                break
        else:
            death: dict[str, Any] = {
                "count": 1,
                "reason": reason,
                "queue": q.name,
                "time": datetime.fromtimestamp(int(now), UTC),
                "exchange": old.exchange,
                "routing-keys": routing_keys,
            }
            if props.expiration is not None:
                death["original-expiration"] = props.expiration
            deaths.insert(0, death)
        headers["x-death"] = deaths
        if "x-first-death-reason" not in headers:
            headers["x-first-death-reason"] = reason
            headers["x-first-death-queue"] = q.name
            headers["x-first-death-exchange"] = old.exchange
        headers["x-last-death-reason"] = reason
        headers["x-last-death-queue"] = q.name
        headers["x-last-death-exchange"] = old.exchange
        props.headers = headers
        props.expiration = None
        # RabbitMQ: with x-dead-letter-routing-key the message goes by that key alone and
        # loses its CC header; without it, by all the keys it was published with (CC too)
        if q.args.dlrk is not None:
            rk, keys = q.args.dlrk, [q.args.dlrk]
            headers.pop("CC", None)
        else:
            rk, keys = old.routing_key, routing_keys
        msg = Message(self.next_message_id(), dlx.name, rk, props, old.body, old.origin)
        targets: dict[Queue, None] = {}
        for key in keys:
            targets.update(self.route(dlx, key, headers))
        reached = [t for t in targets if not _is_cycle(t.name, deaths)]
        if targets and not reached:
            if self.observers.to_dropped:
                self.observers.dropped(Dropped(self.name, q.name, old, "cycle"))
        elif self.observers.to_dead_lettered:
            self.observers.dead_lettered(DeadLettered(
                self.name, q.name, old, reason, dlx.name, msg.id,
                tuple(t.name for t in reached)))
        for target in reached:
            # (a cycle without any rejection would loop forever: dropped, as RabbitMQ does)
            target.enqueue(msg, now)

    # -- policies --------------------------------------------------------------------------

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any],
                   priority: int = 0, apply_to: str = "queues", *, now: float = 0.0,
                   persist: bool = True) -> Policy:
        """Create or replace a policy; it applies to existing and future queues/exchanges at
        once. Raises `PreconditionFailed` for an invalid pattern or definition."""
        policy = Policy.make(name, pattern, definition, priority, apply_to)
        self.policies[name] = policy
        if persist:
            self.store.put_policy(PolicyRecord(self.name, name, pattern, dict(definition),
                                               priority, apply_to))
        self.reapply_policies(now)
        return policy

    def clear_policy(self, name: str, *, now: float = 0.0) -> None:
        if name not in self.policies:
            raise NotFound(f"NOT_FOUND - no policy '{name}' {self._where()}")
        del self.policies[name]
        self.store.delete_policy(self.name, name)
        self.reapply_policies(now)

    def reapply_policies(self, now: float = 0.0) -> None:
        for x in self.exchanges.values():
            x.policy = select(self.policies, "exchanges", x.name) if x.name else None
        for q in list(self.queues.values()):
            q.apply_policy(select(self.policies, "queues", q.name), now)

    # -- housekeeping ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Route the held messages now due, expire messages at queue heads and delete
        queues unused past `x-expires`."""
        if self.delayed.count:
            self.release_due(now)
        for q in list(self.queues.values()):
            if q.deleted:
                continue
            if q.message_count:
                q.expire(now)
            exp = q.args.expires
            if exp is not None and not q.consumers and now - q.last_used >= exp / 1000.0:
                self.remove_queue(q)

    def connection_closed(self, owner: object) -> None:
        """Delete the exclusive queues of a connection that went away."""
        for q in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self.remove_queue(q)
