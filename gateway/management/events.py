"""The rabbitmq_event_exchange plugin's exchange: queue, exchange, binding and consumer
events of every vhost published to the topic exchange `amq.rabbitmq.event` of the default
vhost, with routing keys such as `queue.created` or `binding.deleted`, an empty body, the
event's properties in the headers (with `vhost` and `timestamp_in_ms`) and the `timestamp`
property, as the plugin publishes them.

An observer of the core (`gateway.core.observe.TopologyChanged`); while nothing is bound
to `amq.rabbitmq.event` an event costs a look at its bindings and nothing is made. Events
are queued by the observer and published by this module's task right after, in order (the
core's observers must not publish from inside its step); at most `BACKLOG` wait.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from gateway.core.exchange import Binding, Exchange
from gateway.core.message import Message, Properties
from gateway.core.observe import ConsumerRef, Observer, TopologyChanged
from gateway.core.queue import Queue
from gateway.core.vhost import EVENT_EXCHANGE

if TYPE_CHECKING:
    from gateway.core.broker import Broker

log = logging.getLogger("gateway.events")

VHOST = "/"  # where the exchange is (the plugin's default)
BACKLOG = 10_000
ORIGIN = "event"  # Message.origin of an event message


class EventExchange(Observer):
    def __init__(self, broker: Broker, describe: Callable[[ConsumerRef], dict[str, Any]],
                 clock: Callable[[], float]) -> None:
        """`describe`: a consumer's connection, channel and user (`shapes.consumer_ref`)."""
        self.broker = broker
        self.describe = describe
        self.clock = clock
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = trio.Event()
        self.overflowed = 0

    def _listened(self) -> bool:
        vh = self.broker.vhosts.get(VHOST)
        if vh is None or vh.backend is not None:
            return False
        x = vh.exchanges.get(EVENT_EXCHANGE)
        return x is not None and bool(x.bindings)

    def topology(self, event: TopologyChanged) -> None:
        if not self._listened():
            return
        headers = self._headers(event)
        if headers is None:
            return
        headers["vhost"] = event.vhost
        if len(self._pending) >= BACKLOG:
            self.overflowed += 1
            return
        self._pending.append((event.event, headers))
        self._wake.set()

    def _headers(self, event: TopologyChanged) -> dict[str, Any] | None:
        subject = event.subject
        kind, _, action = event.event.partition(".")
        if kind == "queue" and isinstance(subject, Queue):
            if action == "deleted":
                return {"name": subject.name}
            return {"name": subject.name, "durable": subject.durable,
                    "auto_delete": subject.auto_delete,
                    "exclusive": subject.exclusive_owner is not None,
                    "type": subject.queue_type, "arguments": dict(subject.arguments)}
        if kind == "exchange" and isinstance(subject, Exchange):
            if action == "deleted":
                return {"name": subject.name}
            return {"name": subject.name, "type": subject.type, "durable": subject.durable,
                    "auto_delete": subject.auto_delete, "internal": subject.internal,
                    "arguments": dict(subject.arguments)}
        if kind == "binding" and isinstance(subject, Binding):
            dest = subject.destination
            if isinstance(dest, Queue) and dest.hidden:
                return None
            return {"source_name": subject.source.name, "source_kind": "exchange",
                    "destination_name": dest.name,
                    "destination_kind": "queue" if isinstance(dest, Queue) else "exchange",
                    "routing_key": subject.routing_key,
                    "arguments": dict(subject.arguments)}
        if kind == "consumer" and isinstance(subject, tuple):
            queue, consumer = subject
            if queue.hidden:
                return None
            out: dict[str, Any] = {"consumer_tag": consumer.tag, "queue": queue.name}
            if action == "created":
                out.update(exclusive=consumer.exclusive, ack_required=not consumer.no_ack,
                           arguments={})
            who = self.describe(consumer)
            for key in ("channel", "connection", "user"):
                if who.get(key) is not None:
                    out[key] = who[key]
            return out
        return None

    # -- publishing ------------------------------------------------------------------------

    def flush(self) -> None:
        vh = self.broker.vhosts.get(VHOST)
        while self._pending:
            key, headers = self._pending.popleft()
            if vh is None:
                continue
            exchange = vh.exchanges.get(EVENT_EXCHANGE)
            if exchange is None:
                continue
            now = self.clock()
            headers["timestamp_in_ms"] = int(now * 1000)
            message = Message(vh.next_message_id(), EVENT_EXCHANGE, key,
                              Properties(headers=headers, timestamp=datetime.fromtimestamp(
                                  int(now), UTC)), b"", ORIGIN)
            try:
                vh.publish(exchange, key, message, now)
            except Exception:  # an event must never take the broker down
                log.exception("event exchange: publishing %s failed", key)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()
