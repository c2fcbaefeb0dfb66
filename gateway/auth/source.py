"""What `AuthService` asks of another source of users (`gateway.auth.upstream`: RabbitMQ's).

With a source, the service stops answering from its own users, vhosts and permissions:
passwords, tags, vhosts, permissions and topic permissions come from the source, and the
decisions over them stay the service's (`access` -> `AuthService.allowed`, `topic_allowed`,
`check_vhost`), with the same regex rules. A source answers those questions from what it
has cached, at once; only a password check may be slow, and is handed to the I/O layer as a
`PendingCheck` like a scrypt check (`verify` in a worker thread, `finish` in the loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import trio

__all__ = ["Answer", "Grant", "SourceCheck", "UserSource"]

_Permission = Literal["configure", "write", "read"]


@dataclass(frozen=True)
class Answer:
    """How a source's password check ended: the user's tags, or why it was refused and
    whether that counts as a failed login (a source that did not answer does not)."""

    tags: tuple[str, ...] | None
    reason: str = ""
    count: bool = True


class Grant(Protocol):
    def pattern(self, permission: _Permission) -> re.Pattern[str]: ...


class SourceCheck(Protocol):
    """One password check: `verify` may block (a worker thread runs it) unless `cached`."""

    cached: bool

    def verify(self) -> bool: ...

    def finish(self, ok: bool) -> Answer: ...


class UserSource(Protocol):
    limiter: trio.CapacityLimiter | None  # at most so many checks at once (None: the server's)

    def password_check(self, name: str, password: str) -> SourceCheck: ...

    def tags(self, name: str) -> tuple[str, ...] | None: ...

    def vhost_exists(self, vhost: str) -> bool: ...

    def vhost_refusal(self, name: str, vhost: str) -> str | None: ...

    def grant(self, name: str, vhost: str) -> Grant | None: ...

    def topic_allowed(self, name: str, vhost: str, exchange: str, permission: _Permission,
                      routing_key: str, *, client_id: str | None = None) -> bool: ...
