"""What management needs from the process that runs it: the broker and the users, the
configuration, the listeners, the connections (as `gateway.info.Connected`), the memory
alarm, a clock, a way to have durable changes written, to run a slow password check, and
the browser rules for the HTTP API. The server provides these (`gateway.server.app`);
management imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Set
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService
    from gateway.config import Config
    from gateway.core.broker import Broker
    from gateway.info import Connected

# runs one slow (scrypt) password check off the event loop
PasswordCheck = Callable[["PendingCheck"], Awaitable[None]]


class Durability(Protocol):
    def kick(self) -> None:
        """Something durable may have changed: write it now."""
        ...


class OriginPolicy(Protocol):
    """`[http] allowed_hosts` and `allowed_origins` as the API applies them."""

    def host_allowed(self, host: str | None) -> bool:
        ...

    def origin_allowed(self, origin: str | None, host: str | None, *, tls: bool) -> bool:
        ...


class Host(Protocol):
    @property
    def broker(self) -> Broker: ...

    @property
    def auth(self) -> AuthService: ...

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def sessions(self) -> Set[Connected]:
        """The open connections of every protocol."""
        ...

    @property
    def ports(self) -> Mapping[str, int]:
        """The listeners: the port each is bound to, by name (amqp, amqps, http, ...)."""
        ...

    @property
    def memory_alarm(self) -> bool: ...

    @property
    def durability(self) -> Durability: ...
