"""Runtime limits as RabbitMQ has them: per vhost (`rabbitmqctl set_vhost_limits`) and per
user (`set_user_limits`), set at run time through `gateway ctl` or the management API,
persisted in the store and exported with the definitions.

- vhost: `max-connections` (client connections into the vhost, every protocol together) and
  `max-queues` (queues in the vhost, however they are made);
- user: `max-connections` (the user's connections, every protocol together) and
  `max-channels` (AMQP channels open over all the user's connections).

As in RabbitMQ (`rabbit_vhost_limit`, `rabbit_auth_backend_internal:is_over_limit`), a value
is an integer; a negative one means no limit and 0 allows none; a name that is not set is
no limit. Setting a vhost's limits replaces its whole definition (`set_vhost_limits`); one
name can also be set or cleared alone (the HTTP API's `/api/vhost-limits/{vhost}/{name}`).
Setting a user's limits adds to the ones set before (`set_user_limits`), and
`clear_user_limits USER NAME|all` removes one or all.

This module keeps and checks the values; `gateway.auth.service.AuthService` persists them
and hands `max-queues` to the core's vhosts; `protocols.admission` counts connections and
channels against them at login and at `channel.open`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from gateway.core.errors import PreconditionFailed
from gateway.store.base import LimitsRecord

__all__ = ["USER_LIMITS", "VHOST_LIMITS", "RuntimeLimits", "Scope", "check_limits",
           "effective"]

Scope = Literal["vhost", "user"]
VHOST_LIMITS: Final = ("max-connections", "max-queues")
USER_LIMITS: Final = ("max-connections", "max-channels")


def check_limits(scope: Scope, value: object) -> dict[str, int]:
    """A limits definition (a JSON object of name -> integer) checked as RabbitMQ checks
    it; raises `PreconditionFailed` naming what is wrong."""
    if not isinstance(value, Mapping):
        raise PreconditionFailed(
            f"{scope} limits must be a JSON object, e.g. "
            f'{{"{(VHOST_LIMITS if scope == "vhost" else USER_LIMITS)[0]}": 10}}')
    known = VHOST_LIMITS if scope == "vhost" else USER_LIMITS
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise PreconditionFailed(f"Unrecognised terms {unknown} in {scope}-limits; known: "
                                 f"{', '.join(known)}")
    out: dict[str, int] = {}
    for name, limit in value.items():
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise PreconditionFailed(f"{name} should be a number but was {limit!r}")
        out[str(name)] = limit
    return out


def effective(limits: Mapping[str, int], name: str) -> int | None:
    """The limit in force: None for no limit (not set, or negative)."""
    value = limits.get(name)
    return None if value is None or value < 0 else value


class RuntimeLimits:
    """The limits of every vhost and user that has some."""

    def __init__(self, records: list[LimitsRecord] | None = None) -> None:
        self._limits: dict[tuple[str, str], dict[str, int]] = {}
        for r in records or ():
            if r.limits and r.scope in ("vhost", "user"):
                self._limits[(r.scope, r.name)] = dict(r.limits)

    def get(self, scope: Scope, name: str) -> dict[str, int]:
        return dict(self._limits.get((scope, name), {}))

    def put(self, scope: Scope, name: str, limits: Mapping[str, int]) -> None:
        """Replace the definition ({} removes it)."""
        if limits:
            self._limits[(scope, name)] = dict(limits)
        else:
            self._limits.pop((scope, name), None)

    def remove(self, scope: Scope, name: str) -> bool:
        return self._limits.pop((scope, name), None) is not None

    def limit(self, scope: Scope, name: str, key: str) -> int | None:
        found = self._limits.get((scope, name))
        return None if found is None else effective(found, key)

    def all(self, scope: Scope) -> list[tuple[str, dict[str, int]]]:
        return [(name, dict(v)) for (s, name), v in self._limits.items() if s == scope]

    def records(self) -> list[LimitsRecord]:
        return [LimitsRecord(s, name, dict(v)) for (s, name), v in self._limits.items()]
