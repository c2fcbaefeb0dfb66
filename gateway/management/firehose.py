"""RabbitMQ's firehose: while tracing is on for a vhost, every message published in it is
also published to the vhost's topic exchange `amq.rabbitmq.trace` with the routing key
`publish.<exchange>`, and every delivery with `deliver.<queue>`, the body as is and what
happened in RabbitMQ's headers (`exchange_name`, `routing_keys`, `properties`, `node`;
`routed_queues` on a publish; `redelivered` on a delivery; `user`, `channel`, `connection`
where known). Messages published to `amq.rabbitmq.trace` are not traced again.

The firehose is an observer of the core (`gateway.core.observe`), registered only while
some vhost traces. Observers must not call back into the core, so the trace messages are
queued and published by the firehose's own task right after (in the order the core told
them); at most `BACKLOG` wait, more are dropped and counted, as a firehose must never
hold the broker up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from gateway.core.message import Message, Properties
from gateway.core.observe import ConsumerRef, Delivered, Observer, Observers, Published
from gateway.core.vhost import TRACE_EXCHANGE

if TYPE_CHECKING:
    from gateway.core.broker import Broker

log = logging.getLogger("gateway.firehose")

BACKLOG = 10_000  # trace messages waiting for the firehose's task
ORIGIN = "trace"  # Message.origin of a trace message

_PROPERTIES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
               "user_id", "app_id", "cluster_id")


def properties_table(props: Properties) -> dict[str, Any]:
    """The message's properties as RabbitMQ's `properties` header has them: those set."""
    out: dict[str, Any] = {}
    for name in _PROPERTIES:
        value = getattr(props, name)
        if value is not None:
            out[name] = value
    return out


class Firehose(Observer):
    def __init__(self, broker: Broker, describe: Callable[[ConsumerRef], dict[str, Any]],
                 clock: Callable[[], float], node: str) -> None:
        """`describe`: a consumer's connection, channel and user (`shapes.consumer_ref`)."""
        self.broker = broker
        self.observers: Observers = broker.observers
        self.describe = describe
        self.clock = clock
        self.node = node
        self._on: set[str] = set()
        self._pending: deque[tuple[str, str, Message]] = deque()
        self._wake = trio.Event()
        self.overflowed = 0  # trace messages dropped because the backlog was full
        self.published_count = 0

    def enabled(self, vhost: str) -> bool:
        return vhost in self._on

    def enable(self, vhost: str, on: bool) -> None:
        if on:
            self._on.add(vhost)
            self.observers.add(self)
        else:
            self._on.discard(vhost)
            if not self._on:
                self.observers.remove(self)

    # -- what the core tells ---------------------------------------------------------------

    def published(self, event: Published) -> None:
        if event.vhost not in self._on or event.exchange == TRACE_EXCHANGE:
            return
        message = event.message
        headers = self._headers(message, event.exchange, event.routing_key)
        headers["routed_queues"] = [q.name for q in event.queues]
        user = message.properties.user_id
        if user is not None:  # validated against the publisher's login by the protocols
            headers["user"] = user
        self._queue(event.vhost, f"publish.{event.exchange}", headers, message.body)

    def delivered(self, event: Delivered) -> None:
        message = event.message
        if event.vhost not in self._on or message.exchange == TRACE_EXCHANGE:
            return
        headers = self._headers(message, message.exchange, message.routing_key)
        headers["redelivered"] = 1 if event.redelivered else 0
        if event.consumer is not None:
            who = self.describe(event.consumer)
            for key in ("connection", "channel", "user"):
                if who.get(key) is not None:
                    headers[key] = who[key]
        self._queue(event.vhost, f"deliver.{event.queue}", headers, message.body)

    def _headers(self, message: Message, exchange: str, routing_key: str) -> dict[str, Any]:
        keys = [routing_key]
        extra = message.properties.headers
        if extra:
            for name in ("CC", "BCC"):
                more = extra.get(name)
                if isinstance(more, list):
                    keys.extend(k for k in more if isinstance(k, str))
        return {"exchange_name": exchange, "routing_keys": keys,
                "properties": properties_table(message.properties), "node": self.node}

    def _queue(self, vhost: str, key: str, headers: dict[str, Any], body: bytes) -> None:
        if len(self._pending) >= BACKLOG:
            self.overflowed += 1
            return
        vh = self.broker.vhosts.get(vhost)
        if vh is None or vh.backend is not None:  # in front of RabbitMQ: its own firehose
            return
        message = Message(vh.next_message_id(), TRACE_EXCHANGE, key,
                          Properties(headers=headers), body, ORIGIN)
        self._pending.append((vhost, key, message))
        self._wake.set()

    # -- publishing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Publish the trace messages waiting (those of vhosts still traced)."""
        while self._pending:
            vhost, key, message = self._pending.popleft()
            vh = self.broker.vhosts.get(vhost)
            if vh is None or vhost not in self._on:
                continue
            exchange = vh.exchanges.get(TRACE_EXCHANGE)
            if exchange is None:
                continue
            try:
                vh.publish(exchange, key, message, self.clock())
            except Exception:  # a trace must never take the broker down
                log.exception("firehose: publishing %s in vhost %r failed", key, vhost)
                continue
            self.published_count += 1

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()
