"""Where a vhost's messages live when it is not this process: the backend seam.

The embedded broker routes and stores messages itself, and its `VirtualHost.backend` is
None. In front of a RabbitMQ cluster (`--backend rabbitmq`) the vhost hands what must
happen on the cluster to a `Backend` installed at construction, synchronously and without
waiting: a publish goes to the same exchange and routing key upstream; the queues the
sessions declare (MQTT's session queues, STOMP's subscription queues) are declared and
bound there too, and each local `Queue` becomes a proxy fed by an upstream consumer while
it has local consumers. The backend is also the broker's `Store`: its positions are the
upstream operations in the order they were asked for, and a position is durable once
RabbitMQ answered it (a publisher confirm, a declare-ok, a bind-ok), so the answers that
wait for a position (`gateway.core.confirms`: MQTT PUBACK/SUBACK, STOMP receipts) wait for
RabbitMQ. A local ack of an entry the backend fed (`Store.ack`) is an upstream ack.

Nothing here does I/O: the implementation (`gateway.upstream.backend`) queues the work for
its own tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.core.exchange import Binding, Exchange
    from gateway.core.message import Message
    from gateway.core.queue import Queue
    from gateway.core.vhost import PublishResult, VirtualHost


class Backend(Protocol):
    """What a vhost asks of the cluster behind it; every method returns at once."""

    def publish(self, vhost: VirtualHost, exchange: Exchange, routing_key: str,
                message: Message, now: float) -> PublishResult: ...

    def queue_declared(self, queue: Queue) -> None: ...

    def queue_deleted(self, queue: Queue) -> None: ...

    def bound(self, binding: Binding) -> None: ...

    def unbound(self, binding: Binding) -> None: ...

    def consumers_changed(self, queue: Queue) -> None:
        """A local consumer came or went: consume upstream while there is one."""
