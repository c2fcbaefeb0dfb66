"""One AMQP channel: its consumers, unacknowledged deliveries, prefetch, confirms and
transactions. The connection (`session.py`) routes channel methods here; the channel's
state (open, flow stopped, closing) is its `ChannelMachine` (`machine.py`). What a channel
needs of its connection is `ChannelOwner`, so this module does not import the session.

Delivery tags are per channel and increase by one per delivery or basic.get-ok; `unacked`
keeps them in that order, so `multiple` acks walk it from the front. Prefetch follows
RabbitMQ: basic.qos with global=false sets the limit for consumers created after it, each
counted alone; global=true limits the whole channel; both may apply at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands

from gateway.core.confirms import Confirms, Waiter
from gateway.core.errors import (
    AccessRefused,
    NotAllowed,
    NotFound,
    NotImplementedFeature,
    PreconditionFailed,
)
from gateway.core.exchange import Exchange
from gateway.core.message import Message
from gateway.core.queue import Entry, Queue
from gateway.info import ChannelInfo, Connected, ConsumerOwner
from protocols.amqp.frames import reply
from protocols.amqp.machine import ChannelMachine, ChannelState

if TYPE_CHECKING:
    from pamqp import base

    from gateway.core.broker import Broker

Basic = commands.Basic
log = logging.getLogger("gateway.amqp")
REPLY_TO = "amq.rabbitmq.reply-to"


class ChannelOwner(Waiter, Connected, Protocol):
    """What a channel needs of its connection (`session.AMQPSession` is one)."""

    id: int
    broker: Broker
    clock: Callable[[], float]
    consumer_max: int  # per channel, 0 = no limit
    cancel_notify: bool  # the client takes basic.cancel from the server
    output_blocked: bool

    def send_method(self, channel: int, method: base.Frame) -> None: ...

    def send_content(self, channel: int, method: base.Frame, message: Message) -> None: ...

    def send_delivery(self, channel: int, consumer_tag: str, delivery_tag: int,
                      redelivered: bool, message: Message) -> None: ...


class AMQPConsumer:
    """A basic.consume: the core's `Consumer` for one channel and one queue."""

    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "priority", "prefetch",
                 "unacked")

    def __init__(self, tag: str, channel: Channel, queue: Queue, no_ack: bool,
                 exclusive: bool, priority: int, prefetch: int) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch
        self.unacked = 0

    def owner(self) -> ConsumerOwner:
        return ConsumerOwner(self.channel.session, self.channel.number, self.prefetch)

    def can_take(self) -> bool:
        ch = self.channel
        if not ch.machine.delivers or ch.session.output_blocked:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return not (ch.global_prefetch and len(ch.unacked) >= ch.global_prefetch)

    def deliver(self, entry: Entry) -> None:
        self.channel.deliver(self, entry)

    def cancelled(self) -> None:
        self.channel.broker_cancelled(self)


class Channel:
    def __init__(self, session: ChannelOwner, number: int, machine: ChannelMachine) -> None:
        self.session = session
        self.number = number
        self.machine = machine  # open (channel.open was accepted) until it closes
        self.consumers: dict[str, AMQPConsumer] = {}
        self.unacked: dict[int, tuple[Entry, AMQPConsumer | None]] = {}
        self.next_tag = 1
        # counted for the management API's channel rates (deliveries: next_tag - 1)
        self.stats_publish = 0
        self.stats_ack = 0
        self.prefetch = 0
        self.global_prefetch = 0
        self.last_queue: str | None = None
        self.confirm = False
        self.publish_seq = 0
        # the publish seqs waiting to be confirmed, in publish order, each with the store
        # position it waits for; a nack (a queue refused the message) as its negative seq
        self.confirms: Confirms[int] = Confirms(session.broker.durable, session)
        self.tx = False
        self.tx_publishes: list[tuple[Any, bool]] = []
        self.tx_acks: list[tuple[str, int, bool, bool]] = []
        self.reply_queue: Queue | None = None
        self._consumer_seq = 0
        # the exchanges this channel published to, by name (permissions: every publish)
        self.publish_exchanges: dict[str, Exchange] = {}

    def info(self) -> ChannelInfo:
        """As management shows it (deliveries and gets: a delivery tag is spent on each)."""
        return ChannelInfo(
            self.number, len(self.consumers), len(self.unacked), len(self.confirms),
            len(self.tx_publishes), len(self.tx_acks), self.prefetch, self.global_prefetch,
            self.confirm, self.tx, self.flow, self.stats_publish, self.next_tag - 1,
            self.stats_ack)

    @property
    def flow(self) -> bool:
        """Deliveries not stopped by the client's channel.flow."""
        return self.machine.state is not ChannelState.FLOW_STOPPED

    @property
    def closing(self) -> bool:
        return self.machine.closing

    # -- delivery --------------------------------------------------------------------------

    def deliver(self, consumer: AMQPConsumer, entry: Entry) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = (entry, consumer)
            consumer.unacked += 1
            entry.delivered_at = self.session.clock()
        msg = with_delivery_count(entry)
        try:
            self.session.send_delivery(self.number, consumer.tag, tag, entry.redelivered, msg)
        except ValueError as exc:
            # a message from another protocol that AMQP cannot carry (a routing key over
            # 255 bytes): settle it as dead rather than fail the publisher's connection
            log.warning("channel %d: cannot deliver message %d over AMQP: %s", self.number,
                        msg.id, exc)
            if not consumer.no_ack:
                self.unacked.pop(tag, None)
                consumer.unacked -= 1
                entry.queue.reject(entry, self.session.clock())

    def get(self, queue: Queue, no_ack: bool, now: float) -> None:
        entry = queue.get(no_ack, now)
        if entry is None:
            self.session.send_method(self.number, Basic.GetEmpty())
            return
        tag = self.next_tag
        self.next_tag = tag + 1
        if not no_ack:
            self.unacked[tag] = (entry, None)
            entry.delivered_at = now
        msg = with_delivery_count(entry)
        self.session.send_content(
            self.number,
            reply(Basic.GetOk, delivery_tag=tag, redelivered=entry.redelivered,
                  exchange=msg.exchange, routing_key=msg.routing_key,
                  message_count=queue.message_count),
            msg)

    def broker_cancelled(self, consumer: AMQPConsumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.session.cancel_notify and not self.closing:
            self.session.send_method(self.number, Basic.Cancel(consumer.tag, nowait=True))

    # -- consumers -------------------------------------------------------------------------

    def consumer_tag(self, requested: str) -> str:
        if requested:
            if requested in self.consumers:
                raise_not_allowed_tag(requested)
            return requested
        self._consumer_seq += 1
        return f"amq.ctag-{self.session.id}.{self.number}.{self._consumer_seq}"

    def add_consumer(self, queue: Queue, tag: str, no_ack: bool, exclusive: bool,
                     arguments: dict[str, Any] | None, now: float) -> AMQPConsumer:
        priority = 0
        if arguments and "x-priority" in arguments:
            value = arguments["x-priority"]
            if isinstance(value, bool) or not isinstance(value, int):
                raise PreconditionFailed("PRECONDITION_FAILED - invalid x-priority")
            priority = value
        if queue.quorum and self.global_prefetch:
            # RabbitMQ 4 (rabbit_quorum_queue:consume/3, rabbit_channel): a hard error
            raise NotImplementedFeature(f"NOT_IMPLEMENTED - queue '{queue.name}' in vhost "
                                        f"'{queue.vhost.name}' does not support global qos")
        limit = self.session.consumer_max
        if limit and len(self.consumers) >= limit:
            raise NotAllowed(f"NOT_ALLOWED - reached maximum ({limit}) of consumers per "
                             "channel")
        consumer = AMQPConsumer(tag, self, queue, no_ack, exclusive, priority, self.prefetch)
        self.consumers[tag] = consumer
        try:
            queue.vhost.consume(queue, consumer, exclusive=exclusive, now=now)
        except BaseException:
            del self.consumers[tag]
            raise
        return consumer

    def cancel(self, tag: str, now: float) -> bool:
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return False
        consumer.queue.vhost.cancel(consumer.queue, consumer, now)
        return True

    # -- acknowledgements ------------------------------------------------------------------

    def _take(self, tag: int, multiple: bool) -> list[tuple[Entry, AMQPConsumer | None]]:
        if multiple:
            if tag == 0:
                taken = list(self.unacked.values())
                self.unacked.clear()
                return taken
            if tag not in self.unacked:
                raise PreconditionFailed(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
            keys = []
            for t in self.unacked:
                if t > tag:
                    break
                keys.append(t)
            return [self.unacked.pop(t) for t in keys]
        item = self.unacked.pop(tag, None)
        if item is None:
            raise PreconditionFailed(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
        return [item]

    def settle(self, tag: int, multiple: bool, *, ack: bool, requeue: bool,
               now: float) -> None:
        taken = self._take(tag, multiple)
        if ack:
            self.stats_ack += len(taken)
        queues: dict[Queue, list[Entry]] = {}
        for entry, consumer in taken:
            if consumer is not None:
                consumer.unacked -= 1
            if ack:
                entry.queue.ack(entry)
            elif requeue:
                queues.setdefault(entry.queue, []).append(entry)
            else:
                entry.queue.reject(entry, now)
        for queue, entries in queues.items():
            queue.requeue(entries, now)
        self.kick(now)

    def requeue_all(self, now: float) -> None:
        taken = list(self.unacked.values())
        self.unacked.clear()
        queues: dict[Queue, list[Entry]] = {}
        for entry, consumer in taken:
            if consumer is not None:
                consumer.unacked -= 1
            queues.setdefault(entry.queue, []).append(entry)
        for queue, entries in queues.items():
            queue.requeue(entries, now)

    def timed_out(self, now: float, default_ms: int) -> int | None:
        """The timeout (ms) the oldest unacknowledged delivery has gone past, if it has:
        its queue's `x-consumer-timeout` (or `consumer-timeout` policy), else `default_ms`
        (0: none). Only the oldest is looked at, as RabbitMQ's channel does."""
        if not self.unacked:
            return None
        tag = next(iter(self.unacked))
        entry = self.unacked[tag][0]
        timeout = entry.queue.args.consumer_timeout
        if timeout is None:
            timeout = default_ms
        if not timeout or now - entry.delivered_at <= timeout / 1000.0:
            return None
        consumer = self.unacked[tag][1]
        log.warning("consumer '%s' on channel %d and queue '%s' in vhost '%s' has timed out "
                    "waiting for a consumer acknowledgement of a delivery with delivery tag "
                    "= %d. Timeout used: %d ms", consumer.tag if consumer else "(basic.get)",
                    self.number, entry.queue.name, entry.queue.vhost.name, tag, timeout)
        return timeout

    def kick(self, now: float) -> None:
        """Credit came back: let the queues this channel consumes from deliver again."""
        seen: set[Queue] = set()
        for consumer in list(self.consumers.values()):
            q = consumer.queue
            if q not in seen:
                seen.add(q)
                q.dispatch(now)

    # -- publishing ------------------------------------------------------------------------

    def resolve_reply_to(self, message: Message) -> None:
        """Direct reply-to: rewrite `amq.rabbitmq.reply-to` to this channel's reply queue."""
        if message.properties.reply_to == REPLY_TO:
            if self.reply_queue is None or self.reply_queue.deleted:
                raise PreconditionFailed("PRECONDITION_FAILED - fast reply consumer does not "
                                         "exist")
            message.properties.reply_to = self.reply_queue.name
            message.cache.clear()  # the properties as received are not what goes out

    def queue_name(self, name: str) -> str:
        """An empty queue name means the last queue declared on this channel."""
        if name:
            return name
        if self.last_queue is None:
            raise NotFound("NOT_FOUND - no previously declared queue")
        return self.last_queue

    # -- closing ---------------------------------------------------------------------------

    def release(self, now: float) -> None:
        """The channel is closing (its machine says so already): requeue what was not
        acked and end its consumers."""
        for tag in list(self.consumers):
            self.cancel(tag, now)
        self.requeue_all(now)
        if self.reply_queue is not None and not self.reply_queue.deleted:
            self.reply_queue.vhost.remove_queue(self.reply_queue)
        self.tx_publishes.clear()
        self.tx_acks.clear()


def with_delivery_count(entry: Entry) -> Message:
    """The message as delivered: from a quorum queue after it came back unsettled, with the
    `x-delivery-count` header (RabbitMQ 4: the times it was returned), on a copy so that
    the shared message and its cached encoding stay as published."""
    msg = entry.message
    if not entry.returns:
        return msg
    headers = dict(msg.properties.headers or {})
    headers["x-delivery-count"] = entry.returns
    return replace(msg, properties=msg.properties.copy(headers=headers), cache={})


def raise_not_allowed_tag(tag: str) -> None:
    raise NotAllowed(f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'")


__all__ = ["AMQPConsumer", "AccessRefused", "Channel", "REPLY_TO"]
