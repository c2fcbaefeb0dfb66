"""The store interface: what the core writes, and what a restart reads back.

The core calls the `put_*`/`delete_*`/`enqueue`/`ack` methods synchronously as durable state
changes; they only append records to an in-memory batch. The server's store task moves
batches to disk: `take_batch()` in the event loop, `write_batch()` in a worker thread (one
fsync per batch: group commit), `committed()` back in the event loop. `appended` and
`durable` count records: an answer that must wait for durability (publisher confirms,
MQTT PUBACK, STOMP receipts) waits until `durable` reaches the `appended` after its work.
Protocols see these only through the core (`gateway.core.durable.Durable`, which also
carries their keyed values and wakes the sessions waiting for a position).

Stores take and return plain values only; they know nothing of the core's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.store.serial import encode

PROPERTY_FIELDS = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
    "user_id", "app_id", "cluster_id",
)


class StoredMessage(Protocol):
    id: int
    exchange: str
    routing_key: str
    body: bytes
    origin: str

    @property
    def properties(self) -> Any: ...


@dataclass
class ExchangeRecord:
    vhost: str
    name: str
    type: str
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


@dataclass
class QueueRecord:
    vhost: str
    name: str
    auto_delete: bool
    arguments: dict[str, Any]


@dataclass
class BindingRecord:
    vhost: str
    source: str
    dest_is_queue: bool
    destination: str
    routing_key: str
    arguments: dict[str, Any]

    def key(self) -> tuple[Any, ...]:
        """The binding's identity; arguments compare as tables, whatever their order (as
        the core's `Binding` does)."""
        return (self.vhost, self.source, self.dest_is_queue, self.destination,
                self.routing_key, encode(_canonical(self.arguments)))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return [[str(k), _canonical(value[k])] for k in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


@dataclass
class MessageRecord:
    id: int
    exchange: str
    routing_key: str
    properties: dict[str, Any]
    body: bytes
    origin: str


@dataclass
class DelayedRecord:
    """A message a vhost holds until `due` (wall-clock time, ms since the epoch), then routes
    through `exchange` (an x-delayed-message exchange, or amq.topic for MQTT's `$delayed/`):
    `gateway.core.delayed`."""

    vhost: str
    exchange: str
    due: int
    message: MessageRecord


@dataclass
class UserRecord:
    name: str
    password_hash: str
    tags: list[str]
    wampcra: str = ""  # the user's WAMP-CRA key (`gateway.auth.passwords.CraKey.encode`)


@dataclass
class PermissionRecord:
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass
class TopicPermissionRecord:
    user: str
    vhost: str
    exchange: str
    write: str
    read: str


@dataclass
class LimitsRecord:
    """RabbitMQ's runtime limits of one vhost (`scope` "vhost": max-connections,
    max-queues) or one user ("user": max-connections, max-channels)."""

    scope: str
    name: str
    limits: dict[str, int]


@dataclass
class PolicyRecord:
    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int
    apply_to: str


@dataclass
class Recovered:
    """Durable state read back at start, in the order it was created."""

    # `seeded`: users, vhosts and permissions were written once (from the config, on the
    # first start); from then on the store, not the config file, is their source of truth
    seeded: bool = False
    users: list[UserRecord] = field(default_factory=list)
    vhosts: list[str] = field(default_factory=list)
    permissions: list[PermissionRecord] = field(default_factory=list)
    topic_permissions: list[TopicPermissionRecord] = field(default_factory=list)
    limits: list[LimitsRecord] = field(default_factory=list)
    policies: list[PolicyRecord] = field(default_factory=list)
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    queues: list[QueueRecord] = field(default_factory=list)
    bindings: list[BindingRecord] = field(default_factory=list)
    # (vhost, queue) -> [(seq, message)] in seq order
    messages: dict[tuple[str, str], Sequence[tuple[int, MessageRecord]]] = field(
        default_factory=dict)
    # (vhost, queue) -> the seqs of its entries that had been delivered (to a consumer that
    # must acknowledge them) before the restart: they come back `redelivered`, the others not
    delivered: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    max_message_id: int = 0
    # held messages of durable exchanges (gateway.core.delayed), in the order they were held
    delayed: list[DelayedRecord] = field(default_factory=list)
    # what the protocols keep beyond the core's model (MQTT retained messages and session
    # state): space -> {key: value}. A key is a flat tuple of strings and integers whose
    # first item is the vhost's name (deleting the vhost drops it).
    values: dict[str, dict[tuple[Any, ...], Any]] = field(default_factory=dict)


class Store(Protocol):
    appended: int
    durable: int

    def put_exchange(self, vhost: str, exchange: Any) -> None: ...
    def delete_exchange(self, vhost: str, name: str) -> None: ...
    def put_queue(self, vhost: str, queue: Any) -> None: ...
    def delete_queue(self, vhost: str, name: str) -> None: ...
    def put_binding(self, vhost: str, binding: Any) -> None: ...
    def delete_binding(self, vhost: str, binding: Any) -> None: ...
    def enqueue(self, vhost: str, queue: str, seq: int, message: StoredMessage) -> None: ...
    def delivered(self, vhost: str, queue: str, seq: int) -> None: ...
    def ack(self, vhost: str, queue: str, seq: int) -> None: ...
    def put_delayed(self, vhost: str, exchange: str, due: int,
                    message: StoredMessage) -> None: ...
    def delete_delayed(self, vhost: str, message_id: int) -> None: ...
    def put_user(self, user: UserRecord) -> None: ...
    def delete_user(self, name: str) -> None: ...
    def put_vhost(self, name: str) -> None: ...
    def delete_vhost(self, name: str) -> None: ...
    def put_permission(self, perm: PermissionRecord) -> None: ...
    def delete_permission(self, user: str, vhost: str) -> None: ...
    def put_topic_permission(self, perm: TopicPermissionRecord) -> None: ...
    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None: ...
    def put_limits(self, limits: LimitsRecord) -> None: ...
    def delete_limits(self, scope: str, name: str) -> None: ...
    def put_policy(self, policy: PolicyRecord) -> None: ...
    def delete_policy(self, vhost: str, name: str) -> None: ...
    def mark_seeded(self) -> None: ...
    def put_value(self, space: str, key: tuple[Any, ...], value: Any) -> None: ...
    def delete_value(self, space: str, key: tuple[Any, ...]) -> None: ...
    def spill_write(self, data: bytes) -> Any: ...
    def spill_read(self, ref: Any) -> bytes: ...
    def spill_free(self, ref: Any) -> None: ...

    def recover(self) -> Recovered: ...
    def settle(self) -> None: ...
    def dirty(self) -> bool: ...
    def take_batch(self) -> Any: ...
    def write_batch(self, batch: Any) -> None: ...
    def committed(self, batch: Any) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """Keeps nothing: every write is durable at once (for transient brokers and tests)."""

    def __init__(self) -> None:
        self.appended = 0
        self.durable = 0
        self._pages: dict[int, bytes] = {}
        self._next_page = 0

    def _note(self) -> None:
        self.appended += 1
        self.durable = self.appended

    def put_exchange(self, vhost: str, exchange: Any) -> None:
        self._note()

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._note()

    def put_queue(self, vhost: str, queue: Any) -> None:
        self._note()

    def delete_queue(self, vhost: str, name: str) -> None:
        self._note()

    def put_binding(self, vhost: str, binding: Any) -> None:
        self._note()

    def delete_binding(self, vhost: str, binding: Any) -> None:
        self._note()

    def enqueue(self, vhost: str, queue: str, seq: int, message: StoredMessage) -> None:
        self._note()

    def delivered(self, vhost: str, queue: str, seq: int) -> None:
        return None  # nothing survives a restart here, so nothing to mark

    def ack(self, vhost: str, queue: str, seq: int) -> None:
        self._note()

    def put_delayed(self, vhost: str, exchange: str, due: int, message: StoredMessage) -> None:
        self._note()

    def delete_delayed(self, vhost: str, message_id: int) -> None:
        self._note()

    def put_user(self, user: UserRecord) -> None:
        self._note()

    def delete_user(self, name: str) -> None:
        self._note()

    def put_vhost(self, name: str) -> None:
        self._note()

    def delete_vhost(self, name: str) -> None:
        self._note()

    def put_permission(self, perm: PermissionRecord) -> None:
        self._note()

    def delete_permission(self, user: str, vhost: str) -> None:
        self._note()

    def put_topic_permission(self, perm: TopicPermissionRecord) -> None:
        self._note()

    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None:
        self._note()

    def put_limits(self, limits: LimitsRecord) -> None:
        self._note()

    def delete_limits(self, scope: str, name: str) -> None:
        self._note()

    def put_policy(self, policy: PolicyRecord) -> None:
        self._note()

    def delete_policy(self, vhost: str, name: str) -> None:
        self._note()

    def mark_seeded(self) -> None:
        self._note()

    def put_value(self, space: str, key: tuple[Any, ...], value: Any) -> None:
        self._note()

    def delete_value(self, space: str, key: tuple[Any, ...]) -> None:
        self._note()

    # Paging: a MemoryStore has no disk, so a "spilled" page stays in memory here (the
    # core's paging logic is the same either way; see `gateway.store.spill`).
    def spill_write(self, data: bytes) -> Any:
        self._next_page += 1
        self._pages[self._next_page] = data
        return self._next_page

    def spill_read(self, ref: Any) -> bytes:
        return self._pages[ref]

    def spill_free(self, ref: Any) -> None:
        self._pages.pop(ref, None)

    def recover(self) -> Recovered:
        return Recovered()

    def settle(self) -> None:
        return None

    def dirty(self) -> bool:
        return self.appended != self.durable

    def take_batch(self) -> Any:
        return None

    def write_batch(self, batch: Any) -> None:
        return None

    def committed(self, batch: Any) -> None:
        return None

    def close(self) -> None:
        return None
