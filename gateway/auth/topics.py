"""RabbitMQ's topic permissions (`set_topic_permissions`), and the permission regex rules
they share with the configure/write/read permissions of `service`.

A topic permission belongs to a user, a vhost and a topic exchange and holds two regexes:
`write`, searched in the routing key of a publish, and `read`, searched in the binding key
of a bind or subscribe. Without one for that user, vhost and exchange every key is allowed
(RabbitMQ's rule). `{username}`, `{vhost}` and, for MQTT, `{client_id}` in a pattern stand
for the session's values; they are regex-escaped first, so a name is matched literally
(RabbitMQ substitutes them raw, so there a name with `.` matches more than itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gateway.core.errors import PreconditionFailed
from gateway.store.base import TopicPermissionRecord

__all__ = ["TopicGrants", "TopicPermission", "check_topic_pattern", "checked_pattern",
           "compile_pattern"]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A permission regex as RabbitMQ reads it: searched, "" standing for "^$"."""
    return re.compile(pattern if pattern else "^$")


def checked_pattern(what: str, pattern: str) -> re.Pattern[str]:
    """`compile_pattern`, or `PreconditionFailed` naming `what` for a bad one."""
    if not isinstance(pattern, str):
        raise PreconditionFailed(f"{what}: expected a string, got {pattern!r}")
    try:
        return compile_pattern(pattern)
    except re.error as exc:
        raise PreconditionFailed(f"{what}: not a valid regular expression {pattern!r}: "
                                 f"{exc}") from exc


def check_topic_pattern(what: str, pattern: str) -> None:
    """Raises `PreconditionFailed` unless `pattern` is a valid topic permission regex."""
    checked_pattern(what, _expand(pattern, {"username": "u", "vhost": "v", "client_id": "c"}))


def _expand(pattern: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        pattern = pattern.replace("{" + key + "}", re.escape(value))
    return pattern


@dataclass(frozen=True)
class TopicPermission:
    """RabbitMQ's topic permission: write and read regexes over routing keys."""

    user: str
    vhost: str
    exchange: str
    write: str
    read: str

    def record(self) -> TopicPermissionRecord:
        return TopicPermissionRecord(self.user, self.vhost, self.exchange, self.write,
                                     self.read)


Key = tuple[str, str, str]  # user, vhost, exchange


class TopicGrants:
    """Every topic permission, by (user, vhost, exchange)."""

    def __init__(self, perms: list[TopicPermission] | None = None) -> None:
        self._by_key: dict[Key, TopicPermission] = {
            (t.user, t.vhost, t.exchange): t for t in perms or ()}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def put(self, perm: TopicPermission) -> None:
        check_topic_pattern("write", perm.write)
        check_topic_pattern("read", perm.read)
        self._by_key[(perm.user, perm.vhost, perm.exchange)] = perm

    def remove(self, user: str | None, vhost: str | None,
               exchange: str | None = None) -> list[Key]:
        """Drop those matching (None matches any); returns their keys."""
        keys = [k for k in self._by_key if (user is None or k[0] == user)
                and (vhost is None or k[1] == vhost) and (exchange is None or k[2] == exchange)]
        for key in keys:
            del self._by_key[key]
        return keys

    def all(self) -> list[TopicPermission]:
        return list(self._by_key.values())

    def allowed(self, user: str, vhost: str, exchange: str,
                permission: Literal["configure", "write", "read"], routing_key: str, *,
                client_id: str | None = None) -> bool:
        perm = self._by_key.get((user, vhost, exchange))
        if perm is None:
            return True
        pattern = perm.write if permission == "write" else perm.read
        values = {"username": user, "vhost": vhost}
        if client_id is not None:
            values["client_id"] = client_id
        return compile_pattern(_expand(pattern, values)).search(routing_key) is not None
