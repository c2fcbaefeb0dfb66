"""One SUBSCRIBE: the core's `Consumer` for one STOMP connection and one queue.

Acknowledgement modes (spec 1.2 "SUBSCRIBE ack Header"):
- `auto`: the message counts as acknowledged when sent (the queue forgets it at once);
- `client`: an ACK acknowledges that message and every earlier one of the subscription
  (cumulative, AMQP `multiple=true`);
- `client-individual`: an ACK acknowledges that message only.

`unacked` keeps the subscription's delivery tags in the order they were sent, so a
cumulative ACK walks it from the front. `prefetch-count` (RabbitMQ's header) bounds it;
0 means no bound. What a subscription needs of its connection is `SubscriptionOwner`.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Protocol

from gateway.core.queue import Entry, Queue
from gateway.info import Connected, ConsumerOwner
from protocols.stomp.codec import escape
from protocols.stomp.frames import Version


class SubscriptionOwner(Connected, Protocol):
    """What a subscription needs of its connection (`session.StompSession` is one)."""

    version: Version
    session_name: str
    output_blocked: bool

    def deliver(self, sub: Subscription, entry: Entry) -> None: ...

    def subscription_cancelled(self, sub: Subscription) -> None: ...


class AckMode(Enum):
    AUTO = "auto"
    CLIENT = "client"
    CLIENT_INDIVIDUAL = "client-individual"


class Subscription:
    __slots__ = ("id", "tag", "session", "queue", "destination", "mode", "no_ack",
                 "exclusive", "priority", "prefetch", "unacked", "started", "durable",
                 "id_prefix", "wire_id_prefix", "wire_head", "ack_header")

    def __init__(self, session: SubscriptionOwner, sub_id: str, queue: Queue, destination: str,
                 mode: AckMode, *, prefetch: int = 0, priority: int = 0,
                 durable: bool = False) -> None:
        self.id = sub_id
        self.tag = f"T_{sub_id}"
        self.session = session
        self.queue = queue
        self.destination = destination
        self.mode = mode
        self.no_ack = mode is AckMode.AUTO
        self.exclusive = False
        self.priority = priority
        self.prefetch = prefetch
        self.durable = durable
        # delivery tag -> (entry, the id an ACK names it by), in delivery order
        self.unacked: dict[int, tuple[Entry, str]] = {}
        self.started = False  # deliveries wait until the SUBSCRIBE's receipt is out
        # what every MESSAGE of this subscription starts with, encoded once
        version = session.version
        self.id_prefix = f"T_{sub_id}@@{session.session_name}@@"
        self.wire_id_prefix = escape(self.id_prefix, version).encode()
        self.wire_head = b"MESSAGE\nsubscription:" + escape(sub_id, version).encode() + b"\n"
        self.ack_header = version is Version.V1_2 and not self.no_ack

    def owner(self) -> ConsumerOwner:
        return ConsumerOwner(self.session, None, self.prefetch)

    def can_take(self) -> bool:
        if not self.started or self.session.output_blocked:
            return False
        if self.no_ack or not self.prefetch:
            return True
        return len(self.unacked) < self.prefetch

    def deliver(self, entry: Entry) -> None:
        self.session.deliver(self, entry)

    def cancelled(self) -> None:
        self.session.subscription_cancelled(self)

    def take(self, tag: int) -> Iterator[tuple[Entry, str]]:
        """Remove and yield what an ACK or NACK of `tag` settles: that delivery alone, or
        with `client` mode every earlier one too."""
        if self.mode is not AckMode.CLIENT:
            item = self.unacked.pop(tag, None)
            if item is not None:
                yield item
            return
        for t in [t for t in self.unacked if t <= tag]:
            yield self.unacked.pop(t)
