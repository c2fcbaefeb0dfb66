"""`--backend rabbitmq`: the vhosts' messages live in a RabbitMQ cluster.

`UpstreamBackend` is both the core's `Backend` (`gateway.core.backend`) and the broker's
`Store`. The core calls it synchronously; it queues the work and one task (`run`) does it
on one `UpstreamConnection`, in order:

- a publish goes to the same exchange and routing key upstream with the message's AMQP
  properties, on the confirming channel; the task sends it and goes on (the confirm is
  awaited beside it), so publishes are pipelined and stay in order;
- a queue declared locally (MQTT's session queue, STOMP's subscription queues) is
  declared upstream: an MQTT persistent session's queue durable, with `x-queue-type`
  from `session_queue_type` and `x-expires` from the session expiry; a clean session's
  (not durable, auto-delete) as RabbitMQ's MQTT plugin does; others with the arguments the
  client gave; a session queue, persistent or clean, with `x-single-active-consumer`, so
  that one gateway node at a time delivers from it. Bindings (with their arguments: an
  MQTT subscription's options), unbindings and deletes follow; each waits for RabbitMQ's
  answer before the next operation, so a publish asked for after a bind reaches that
  binding. A queue deleted under `local_only` (a session another node took over) keeps
  its queue in RabbitMQ; `delete_upstream` deletes one the node does not know;
- while a local queue has local consumers, an upstream consumer (prefetch bounded) feeds
  it: each delivery becomes a local entry settled through the store interface, so a local
  ack (or a reject, or a drop) acks it upstream by its delivery tag. When the last local
  consumer goes, the upstream consumer is cancelled (RabbitMQ requeues what it had not
  had acked) and the local copies are dropped. TTLs and length limits are RabbitMQ's: the
  local proxy applies none of the queue's arguments.

Positions (`Store.appended`, `Store.durable`): each publish, declare, bind, unbind and
delete counts one; a position is durable once RabbitMQ answered it and every earlier one
(confirm, declare-ok, bind-ok). A publish cut by a lost connection is sent again on the
next one (at-least-once) before its position counts. A nack, a refused declare or bind:
the sessions waiting for an answer at that moment are closed (`on_failed`) before the
position counts, so none is told success.

Retained MQTT messages (`retained`, a `RetainedStream`): the retained tree's keyed values
(`put_value` / `delete_value` of space `mqtt.retained`) are appended to the retained
stream as publishes with a position, so the PUBACK of a retained PUBLISH waits for the
stream's confirm.

Server-named queues: RabbitMQ refuses `amq.*` names from clients, so a queue the core names
`amq.gen-...` is `gateway.gen-...` upstream (`upstream_name`), and exclusive there (only this
node's connection consumes it; RabbitMQ deletes it if that connection goes); a `reply_to`
naming one is rewritten the same way on the way up, so a reply from anywhere reaches it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from gateway.core.errors import NotAllowed
from gateway.core.message import Message
from gateway.core.queue import Queue
from gateway.core.queue_args import QueueArgs
from gateway.core.vhost import ROUTED
from gateway.store.base import MemoryStore, StoredMessage
from protocols.amqp.mapping import from_amqp, to_amqp

from .connection import (
    ChannelError,
    ConnectionLost,
    Consumer,
    PublishNacked,
    PublishReturned,
    UpstreamConnection,
    UpstreamError,
    UpstreamMessage,
)

if TYPE_CHECKING:
    from gateway.core.exchange import Binding, Exchange
    from gateway.core.vhost import PublishResult, VirtualHost

    from .retained import RetainedStream

log = logging.getLogger("gateway.upstream")

MQTT_SESSION_PREFIX = "mqtt-subscription-"
RETAINED_SPACE = "mqtt.retained"  # protocols.mqtt.retain.SPACE
SERVER_NAMED = "amq.gen-"  # the core's server-named queues (gateway.core.vhost)
UPSTREAM_NAMED = "gateway.gen-"  # the same queues in RabbitMQ


def upstream_name(name: str) -> str:
    """A local queue's name in RabbitMQ: the same, but for server-named ones."""
    if name.startswith(SERVER_NAMED):
        return UPSTREAM_NAMED + name[len(SERVER_NAMED):]
    return name


@dataclass(eq=False)
class _Op:
    """One upstream operation, with the position that waits for it (0: none)."""

    kind: str
    position: int
    args: dict[str, Any] = field(default_factory=dict)


class UpstreamBackend(MemoryStore):
    """The cluster behind every vhost of this node (one vhost upstream: the URLs')."""

    def __init__(self, urls: tuple[str, ...], vhost: str, *, clock: Callable[[], float],
                 session_queue_type: str = "quorum", heartbeat: int = 30,
                 prefetch: int = 100) -> None:
        super().__init__()
        self.urls = urls
        self.vhost = vhost  # the one vhost of the upstream connection (the URLs')
        self.clock = clock
        self.session_queue_type = session_queue_type
        self.heartbeat = heartbeat
        self.prefetch = prefetch
        self.connection: UpstreamConnection | None = None
        # told when positions became durable (the server wakes the waiting sessions), and
        # when one failed (the server closes the sessions waiting for an answer)
        self.on_progress: Callable[[], None] = lambda: None
        self.on_failed: Callable[[str], None] = lambda reason: None
        self._ops: deque[_Op] = deque()
        self._more = trio.Event()
        self._done: set[int] = set()  # completed positions above `durable`
        self._feeds: dict[Queue, Consumer] = {}  # upstream consumers by local queue
        self._wanted: set[Queue] = set()  # queues whose feed is to be started or stopped
        self._live: set[Queue] = set()  # queues fed now (or being subscribed)
        self._tags: dict[tuple[str, str, int], UpstreamMessage] = {}  # local entry -> tag
        self._feeding: UpstreamMessage | None = None
        self._local_only: set[str] = set()  # queues whose deletion stays on this node
        self._as_found: set[str] = set()  # queues declared as RabbitMQ has them
        self.published = 0
        self.failures = 0
        self.retained: RetainedStream | None = None  # where retained messages go

    # -- the Store side: only what settles upstream deliveries ------------------------------

    def _note(self) -> None:
        return None  # local records are not kept: positions are upstream operations

    def enqueue(self, vhost: str, queue: str, seq: int, message: StoredMessage) -> None:
        if self._feeding is not None:
            self._tags[(vhost, queue, seq)] = self._feeding

    def ack(self, vhost: str, queue: str, seq: int) -> None:
        upstream = self._tags.pop((vhost, queue, seq), None)
        if upstream is not None:
            self._add(_Op("ack", 0, {"message": upstream}))

    def put_value(self, space: str, key: tuple[Any, ...], value: Any) -> None:
        if space == RETAINED_SPACE and self.retained is not None:
            self._add(_Op("publish", self._position(), self.retained.append(key, value)))
            return
        super().put_value(space, key, value)

    def delete_value(self, space: str, key: tuple[Any, ...]) -> None:
        if space == RETAINED_SPACE and self.retained is not None:
            self._add(_Op("publish", self._position(), self.retained.append(key, None)))
            return
        super().delete_value(space, key)

    # -- the Backend side (gateway.core.backend) --------------------------------------------

    def publish(self, vhost: VirtualHost, exchange: Exchange, routing_key: str,
                message: Message, now: float) -> PublishResult:
        self._check(vhost.name)
        vhost.stats_published += 1
        properties = message.properties
        if properties.user_id is not None:  # RabbitMQ checks it against our user
            properties = properties.copy(user_id=None)
        if properties.reply_to is not None and properties.reply_to.startswith(SERVER_NAMED):
            properties = properties.copy(reply_to=upstream_name(properties.reply_to))
        if not exchange.name:
            routing_key = upstream_name(routing_key)
        self._add(_Op("publish", self._position(), {
            "exchange": exchange.name, "routing_key": routing_key, "body": message.body,
            "properties": to_amqp(properties)}))
        return ROUTED  # RabbitMQ routes it; unroutable is not known here

    def _check(self, vhost: str) -> None:
        if vhost != self.vhost:
            raise NotAllowed(f"NOT_ALLOWED - vhost {vhost} is not served by this gateway "
                             f"node (its upstream connection is to vhost {self.vhost})")

    def queue_declared(self, queue: Queue) -> None:
        self._check(queue.vhost.name)
        # the proxy applies none of the arguments: TTLs and limits are RabbitMQ's
        queue.args = QueueArgs({}, queue.queue_type)
        durable, auto_delete = queue.durable, queue.auto_delete
        arguments = dict(queue.arguments)
        if queue.name in self._as_found:
            pass  # declared again as RabbitMQ has it (a session found there)
        elif queue.name.startswith(MQTT_SESSION_PREFIX):
            # one node at a time delivers from a session queue: the one whose consumer
            # came first; a node taking the client id over waits for the old one's cancel
            arguments.setdefault("x-single-active-consumer", True)
            if queue.durable:
                # a persistent session: RabbitMQ's MQTT plugin's queue (x-expires is kept;
                # a session found in RabbitMQ is declared again with the type it has)
                arguments.setdefault("x-queue-type", self.session_queue_type)
            else:
                # a clean session: transient, deleted with its consumer (as RabbitMQ's)
                auto_delete = True
        self._add(_Op("declare", self._position(), {
            "queue": upstream_name(queue.name), "durable": durable,
            "exclusive": queue.name.startswith(SERVER_NAMED), "auto_delete": auto_delete,
            "arguments": arguments}))

    def queue_deleted(self, queue: Queue) -> None:
        self._drop_tags(queue)
        self._wanted.add(queue)
        if queue.name in self._local_only:
            self._local_only.discard(queue.name)  # its consumer is cancelled, no more
        else:
            self._add(_Op("delete", self._position(), {"queue": upstream_name(queue.name)}))
        self._add(_Op("feed", 0, {"queue": queue}))

    @contextlib.contextmanager
    def as_found(self, name: str) -> Iterator[None]:
        """While inside: the queue `name` declared here is declared upstream with the flags
        and arguments given, nothing added: they are RabbitMQ's own (a session queue found
        there, perhaps made by RabbitMQ's MQTT plugin or without single-active-consumer),
        so the declare is equal to it."""
        self._as_found.add(name)
        try:
            yield
        finally:
            self._as_found.discard(name)

    def delete_upstream(self, name: str) -> None:
        """Delete the queue `name` in RabbitMQ, known here or not (RabbitMQ answers a
        delete of a queue it does not have with delete-ok)."""
        self._add(_Op("delete", self._position(), {"queue": name}))

    @contextlib.contextmanager
    def local_only(self, name: str) -> Iterator[None]:
        """While inside: deleting the local queue `name` deletes only the node's proxy
        (its upstream consumer is cancelled), not the queue in RabbitMQ. For a session
        another gateway node took over: the queue is that node's now."""
        self._local_only.add(name)
        try:
            yield
        finally:
            self._local_only.discard(name)

    def bound(self, binding: Binding) -> None:
        self._binding("bind", binding)

    def unbound(self, binding: Binding) -> None:
        self._binding("unbind", binding)

    def _binding(self, kind: str, binding: Binding) -> None:
        if not isinstance(binding.destination, Queue):
            log.warning("upstream: exchange-to-exchange bindings are not built (%s)", binding)
            return
        # an MQTT subscription's options (x-mqtt-subscription-qos, ...) go with it: a
        # node that finds the session in RabbitMQ reads them back from the binding
        arguments = dict(binding.arguments or {})
        self._add(_Op(kind, self._position(), {
            "queue": upstream_name(binding.destination.name), "exchange": binding.source.name,
            "routing_key": binding.routing_key, "arguments": arguments}))

    def consumers_changed(self, queue: Queue) -> None:
        has = bool(queue.consumers) and not queue.deleted
        if has == (queue in self._feeds) and queue not in self._wanted:
            return
        self._wanted.add(queue)
        self._add(_Op("feed", 0, {"queue": queue}))

    # -- positions -------------------------------------------------------------------------

    def _position(self) -> int:
        self.appended += 1
        return self.appended

    def _complete(self, position: int) -> None:
        if not position:
            return
        self._done.add(position)
        advanced = False
        while self.durable + 1 in self._done:
            self._done.remove(self.durable + 1)
            self.durable += 1
            advanced = True
        if advanced:
            self.on_progress()

    def _failed(self, op: _Op, reason: str) -> None:
        self.failures += 1
        log.error("upstream: %s %s refused: %s", op.kind,
                  {k: v for k, v in op.args.items() if k != "body"}, reason)
        self.on_failed(reason)
        self._complete(op.position)

    def _add(self, op: _Op) -> None:
        self._ops.append(op)
        self._more.set()

    # -- the task --------------------------------------------------------------------------

    async def run(self, connection: UpstreamConnection) -> None:
        """Do the queued operations on `connection`, for ever (a server task)."""
        self.connection = connection
        async with trio.open_nursery() as confirms:
            while True:
                if not self._ops:
                    self._more = trio.Event()
                    await self._more.wait()
                    continue
                op = self._ops.popleft()
                try:
                    await self._do(connection, op, confirms)
                except ConnectionLost:
                    # declares, binds and consumers are restored by the connection; an
                    # operation cut short is done again on the next one
                    self._ops.appendleft(op)
                    await connection.wait_connected()
                except ChannelError as exc:
                    self._failed(op, str(exc))
                except UpstreamError as exc:
                    self._failed(op, str(exc))

    async def _do(self, connection: UpstreamConnection, op: _Op,
                  confirms: trio.Nursery) -> None:
        a = op.args
        if op.kind == "publish":
            confirmed = await connection.start_publish(
                a["exchange"], a["routing_key"], a["body"], a["properties"])
            confirms.start_soon(self._confirm, op, confirmed)
            return
        if op.kind == "ack":
            await a["message"].ack()
            return
        if op.kind == "declare":
            await connection.declare_queue(a["queue"], durable=a["durable"],
                                           exclusive=a["exclusive"],
                                           auto_delete=a["auto_delete"],
                                           arguments=a["arguments"])
        elif op.kind == "bind":
            await connection.bind_queue(a["queue"], a["exchange"], a["routing_key"],
                                        a["arguments"])
        elif op.kind == "unbind":
            await connection.unbind_queue(a["queue"], a["exchange"], a["routing_key"],
                                          a["arguments"])
        elif op.kind == "delete":
            await connection.delete_queue(a["queue"])
        elif op.kind == "feed":
            await self._feed(connection, a["queue"])
        self._complete(op.position)

    async def _confirm(self, op: _Op, confirmed: Callable[[], Awaitable[None]]) -> None:
        try:
            await confirmed()
        except ConnectionLost:
            self._add(op)  # sent again on the next connection: at-least-once
            return
        except (PublishNacked, PublishReturned) as exc:
            self._failed(op, str(exc))
            return
        self.published += 1
        self._complete(op.position)

    async def _feed(self, connection: UpstreamConnection, queue: Queue) -> None:
        """Consume `queue` upstream while it has local consumers; stop when it has none."""
        self._wanted.discard(queue)
        has = bool(queue.consumers) and not queue.deleted
        consumer = self._feeds.get(queue)
        if has and consumer is None:
            self._live.add(queue)
            try:
                self._feeds[queue] = await connection.consume(
                    upstream_name(queue.name), prefetch=self.prefetch,
                    callback=partial(self._deliver, queue))
            except BaseException:
                self._live.discard(queue)
                raise
        elif not has and consumer is not None:
            del self._feeds[queue]
            self._live.discard(queue)
            await consumer.cancel()  # closes its channel: RabbitMQ requeues the unacked
            if not queue.deleted and not queue.consumers:
                self._drop_tags(queue)
                queue.purge(settle=False)
            if queue.consumers:  # one came back meanwhile
                self._wanted.add(queue)
                self._add(_Op("feed", 0, {"queue": queue}))

    def _drop_tags(self, queue: Queue) -> None:
        name, vhost = queue.name, queue.vhost.name
        for key in [k for k in self._tags if k[1] == name and k[0] == vhost]:
            del self._tags[key]

    def _deliver(self, queue: Queue, upstream: UpstreamMessage) -> None:
        """An upstream delivery: a local entry of the proxy queue (from the reader task)."""
        if queue.deleted or queue not in self._live:
            return  # its channel is being closed: RabbitMQ requeues it
        message = Message(queue.vhost.next_message_id(), upstream.exchange,
                          upstream.routing_key, from_amqp(upstream.properties),
                          upstream.body)
        self._feeding = upstream
        try:
            queue.enqueue(message, self.clock())
        finally:
            self._feeding = None

    async def aclose(self) -> None:
        for consumer in list(self._feeds.values()):
            with contextlib.suppress(UpstreamError):
                await consumer.cancel()
        self._feeds.clear()
