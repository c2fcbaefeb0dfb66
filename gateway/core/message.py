"""The one message model every protocol converts to and from.

A `Message` is created once per publish; its body is shared by reference by every queue it
is routed to (queues hold small `Entry` objects pointing at it). Protocol mappings may keep a
per-protocol encoding of the properties in `cache`, so a message delivered to many AMQP
consumers has its content header encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(slots=True)
class Properties:
    """The AMQP 0-9-1 basic properties; the widest property set of the four protocols."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: Any = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    def copy(self, **changes: Any) -> Properties:
        props = replace(self, **changes)
        if props.headers is not None and "headers" not in changes:
            props.headers = dict(props.headers)
        return props


@dataclass(slots=True, eq=False, weakref_slot=True)
class Message:
    """A published message: body, properties and the broker's annotations.

    `id` is unique within a broker's lifetime and across restarts (the store uses it);
    `exchange` and `routing_key` are what it was published with (a dead-lettered copy gets
    the new ones, and its history in the `x-death` header).
    """

    id: int
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes
    origin: str = "amqp091"
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def priority(self) -> int:
        p = self.properties.priority
        return p if isinstance(p, int) and p > 0 else 0

    def ttl_ms(self) -> int | None:
        """The per-message TTL from `expiration`, or None when absent or unparseable."""
        exp = self.properties.expiration
        if exp is None:
            return None
        try:
            value = int(exp)
        except ValueError:
            return None
        return value if value >= 0 else None
