"""Mosquitto's `$SYS/broker/...` topics: the broker's figures for MQTT clients.

Every `[mqtt] sys_interval` seconds (0: never) the figures are published, as retained
messages, in every vhost, under Mosquitto's names and in its value formats (mosquitto(8),
"Broker Status"):

- `$SYS/broker/version`: "gateway version X.Y.Z"
- `$SYS/broker/uptime`: "N seconds"
- `$SYS/broker/clients/connected`: MQTT clients connected now
- `$SYS/broker/messages/received`, `$SYS/broker/messages/sent`: PUBLISH packets received
  from and sent to MQTT clients since the broker started (Mosquitto counts packets of any
  type there; here these are the PUBLISHes, its `publish/messages/*` figures)

They are routed by `amq.topic` (routing key `$SYS.broker.uptime`) to the queues whose
binding there names `$SYS` (an MQTT subscription to `$SYS/...`), not to a `#` binding, and
they are not counted as publishes; they sit in the vhost's retained store in memory only
(not written to disk: they are the running broker's, as Mosquitto keeps them). A filter
starting with a wildcard never matches them [MQTT-4.7.2-1]. Reading them is for users
tagged `monitoring` or `administrator` (`may_read`), on top of the usual subscribe
permissions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from gateway import __version__
from protocols.mqtt.delivery import RETAIN_KEY
from protocols.mqtt.frames import NO_PROPERTIES
from protocols.mqtt.mapping import to_core
from protocols.mqtt.retain import Retained

if TYPE_CHECKING:
    from gateway.auth.service import User
    from gateway.core.broker import Broker
    from protocols.mqtt.registry import MQTTRegistry

PREFIX = "$SYS"
READERS = frozenset({"monitoring", "administrator"})  # user tags that may subscribe
BINDING_PREFIX = PREFIX + "."  # the binding key of a $SYS filter


def is_sys(topic_filter: str) -> bool:
    """A topic (or filter) of the `$SYS` tree."""
    return topic_filter == PREFIX or topic_filter.startswith(PREFIX + "/")


def may_read(user: User) -> bool:
    return user.node_local or bool(READERS.intersection(user.tags))


class SysTopics:
    def __init__(self, broker: Broker, registry: MQTTRegistry, clock: Callable[[], float],
                 interval: int) -> None:
        self.broker = broker
        self.registry = registry
        self.clock = clock
        self.interval = interval
        self.started = clock()

    def figures(self) -> list[tuple[str, str]]:
        received = self.broker.meter.received.get("mqtt", 0)
        return [
            ("$SYS/broker/version", f"gateway version {__version__}"),
            ("$SYS/broker/uptime", f"{int(self.clock() - self.started)} seconds"),
            ("$SYS/broker/clients/connected", str(len(self.registry.active))),
            ("$SYS/broker/messages/received", str(received)),
            ("$SYS/broker/messages/sent", str(self.registry.publishes_sent)),
        ]

    def publish(self, vhosts: Iterable[str] | None = None) -> None:
        """Publish the figures, retained, in `vhosts` (default: every vhost)."""
        now = self.clock()
        figures = self.figures()
        for name in list(vhosts if vhosts is not None else self.broker.vhosts):
            vh = self.broker.vhosts.get(name)
            if vh is None or vh.backend is not None:  # not in front of a RabbitMQ cluster
                continue
            exchange = vh.exchanges.get("amq.topic")
            if exchange is None:
                continue
            store = self.registry.retained(name)
            # only bindings that name $SYS take them: a `#` binding on amq.topic (an AMQP
            # or STOMP client's) must not, as an MQTT filter starting with a wildcard does not
            takers = {b.destination for b in vh.bindings()
                      if b.source is exchange and b.routing_key.startswith(BINDING_PREFIX)}
            for topic, value in figures:
                payload = value.encode()
                store.load(Retained(topic, payload, 0, NO_PROPERTIES))  # not written to disk
                if not takers:
                    continue
                message = to_core(topic, payload, 0, NO_PROPERTIES, own_queue=None,
                                  message_id=vh.next_message_id())
                message.cache[RETAIN_KEY] = True
                for q in vh.route(exchange, message.routing_key, None):
                    if q in takers:
                        q.enqueue(message, now)

    async def run(self) -> None:
        while True:
            self.publish()
            await trio.sleep(self.interval)
