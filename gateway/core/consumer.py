"""What the core needs from a consumer; sessions implement it.

The core hands a consumer an `Entry` only when `can_take()` says it has credit (prefetch
not full, outbound buffer under its high-water mark). When credit comes back the session
calls `Queue.dispatch` again; nothing is pushed to a consumer that did not ask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.core.queue import Entry


class Consumer(Protocol):
    tag: str
    no_ack: bool
    exclusive: bool
    priority: int

    def can_take(self) -> bool:
        """True when the consumer has credit for one more delivery."""
        ...

    def deliver(self, entry: Entry) -> None:
        """Take one message. Must not call back into the queue synchronously."""
        ...

    def cancelled(self) -> None:
        """The broker ended this consumer (its queue was deleted)."""
        ...
