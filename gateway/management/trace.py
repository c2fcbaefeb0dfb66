"""Where did my message go: a per-vhost trace of publishes, from any protocol, through
exchanges to the queues and consumers they reached.

The core is not changed for this. The management app wraps each vhost's `publish` (an
instance attribute over the method, installed from the sampling task) with a function that
counts publishes by origin protocol and, only for a vhost whose tracing is on, records the
route: the exchange-to-exchange and exchange-to-queue hops (found with the same read-only
`Exchange.route` calls the core makes) and, per queue, whether the message was delivered at
once (and to which consumer) or waits in the queue. With tracing off the wrapper costs one
call and a dict lookup per publish; nothing is recorded.

Limits, because the wrapper sees a publish from outside: dead-lettered copies are not
traced (the core republishes them without `publish`), and the consumer a message went to
is read from the queue's round-robin order right after the publish.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.core.queue import Queue

if TYPE_CHECKING:
    from gateway.core.broker import Broker
    from gateway.core.exchange import Exchange
    from gateway.core.message import Message
    from gateway.core.vhost import PublishResult, VirtualHost
    from gateway.management.stats import Stats

KEEP = 200  # traced publishes kept per vhost
MAX_HOPS = 256  # hops recorded for one publish

Publish = Callable[["Exchange", str, "Message", float], "PublishResult"]


def _consumer_ref(c: Any) -> dict[str, Any]:
    channel = getattr(c, "channel", None)
    session = getattr(channel, "session", None) or getattr(c, "session", None)
    peer = getattr(session, "peer", None)
    return {
        "consumer_tag": c.tag,
        "protocol": str(getattr(session, "protocol_name", "")) if session else "",
        "peer": f"{peer[0]}:{peer[1]}" if peer else "",
        "channel": getattr(channel, "number", None),
    }


class Tracer:
    def __init__(self, broker: Broker, stats: Stats, clock: Callable[[], float]) -> None:
        self.broker = broker
        self.stats = stats
        self.clock = clock
        self._wrapped: dict[VirtualHost, Publish] = {}
        self._on: set[str] = set()
        self.records: dict[str, deque[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    # -- switching -------------------------------------------------------------------------

    def enabled(self, vhost: str) -> bool:
        return vhost in self._on

    def enable(self, vhost: str, on: bool) -> None:
        if on:
            self._on.add(vhost)
            self.records.setdefault(vhost, deque(maxlen=KEEP))
            vh = self.broker.vhosts.get(vhost)
            if vh is not None:
                self.attach(vh)
        else:
            self._on.discard(vhost)

    def clear(self, vhost: str) -> None:
        self.records.pop(vhost, None)
        if vhost in self._on:
            self.records[vhost] = deque(maxlen=KEEP)

    def list(self, vhost: str) -> list[dict[str, Any]]:
        return list(reversed(self.records.get(vhost, ())))

    # -- the wrapper -----------------------------------------------------------------------

    def attach_all(self) -> None:
        for vh in list(self.broker.vhosts.values()):
            self.attach(vh)
        for vh in [v for v in self._wrapped if self.broker.vhosts.get(v.name) is not v]:
            del self._wrapped[vh]

    def attach(self, vh: VirtualHost) -> None:
        if vh in self._wrapped:
            return
        original: Publish = vh.publish
        self._wrapped[vh] = original
        on = self._on
        received = self.stats.received
        unroutable = self.stats.unroutable

        def publish(exchange: Exchange, routing_key: str, message: Message,
                    now: float) -> PublishResult:
            if vh.name in on:
                before = self._before(vh, exchange, routing_key, message)
                result = original(exchange, routing_key, message, now)
                self._after(vh, before, result, now)
            else:
                result = original(exchange, routing_key, message, now)
            origin = message.origin
            received[origin] = received.get(origin, 0) + 1
            if not result.routed:
                unroutable[origin] = unroutable.get(origin, 0) + 1
            return result

        vh.publish = publish  # type: ignore[method-assign]

    # -- recording -------------------------------------------------------------------------

    def _before(self, vh: VirtualHost, exchange: Exchange, routing_key: str,
                message: Message) -> dict[str, Any]:
        headers = message.properties.headers
        hops: list[dict[str, Any]] = []
        queues: dict[Queue, None] = {}
        seen: set[Exchange] = set()
        stack = [exchange]
        while stack and len(hops) < MAX_HOPS:
            ex = stack.pop()
            if ex in seen:
                continue
            seen.add(ex)
            if ex.name == "":
                q = vh.queues.get(routing_key)
                if q is not None:
                    hops.append({"from": "", "to": q.name, "to_type": "queue",
                                 "via": "default exchange", "key": routing_key})
                    queues[q] = None
                continue
            matched = False
            for dest in ex.route(routing_key, headers):
                matched = True
                keys = sorted({b.routing_key for b in ex.bindings if b.destination is dest})
                hops.append({"from": ex.name, "to": dest.name,
                             "to_type": "queue" if isinstance(dest, Queue) else "exchange",
                             "via": f"{ex.type} binding", "key": ", ".join(keys)})
                if isinstance(dest, Queue):
                    queues[dest] = None
                else:
                    stack.append(dest)
            ae_name = ex.alternate_exchange
            if not matched and ae_name is not None:
                ae = vh.exchanges.get(ae_name)
                if ae is not None:
                    hops.append({"from": ex.name, "to": ae.name, "to_type": "exchange",
                                 "via": "alternate-exchange", "key": ""})
                    stack.append(ae)
        props = message.properties
        return {
            "record": {
                "id": next(self._ids), "vhost": vh.name, "origin": message.origin,
                "exchange": exchange.name, "routing_key": routing_key,
                "message_id": props.message_id, "correlation_id": props.correlation_id,
                "content_type": props.content_type, "size": len(message.body),
                "payload_preview": message.body[:64].decode("utf-8", "replace"),
                "hops": hops,
            },
            "queues": {q: (q.stats_published, q.stats_delivered, q.message_count)
                       for q in queues},
        }

    def _after(self, vh: VirtualHost, before: dict[str, Any], result: PublishResult,
               now: float) -> None:
        record = before["record"]
        record["time"] = now
        record["routed"] = result.routed
        reached = []
        for q, (published, delivered, ready) in before["queues"].items():
            entry: dict[str, Any] = {"queue": q.name}
            if q.stats_published == published:
                entry["outcome"] = "refused (queue full)"
            elif q.stats_delivered > delivered and q.message_count <= ready and q.consumers:
                c = q.consumers[0] if q.args.single_active_consumer else q.consumers[-1]
                entry["outcome"] = "delivered"
                entry["consumer"] = _consumer_ref(c)
            else:
                entry["outcome"] = "queued"
                entry["waiting"] = q.message_count
            reached.append(entry)
        record["queues"] = reached
        self.records.setdefault(vh.name, deque(maxlen=KEEP)).append(record)
