"""A user's permissions on a vhost (RabbitMQ's permission row): three regexes, as the
config's `[[permissions]]` list them and `AuthService.list_permissions` reports them, and
the same row compiled (`Grant`), whichever directory it came from (the store, or RabbitMQ's
management API: `gateway.auth.upstream`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Permission = Literal["configure", "write", "read"]


@dataclass(frozen=True)
class PermissionConfig:
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True)
class Grant:
    """A permission row's three patterns, compiled."""

    configure: re.Pattern[str]
    write: re.Pattern[str]
    read: re.Pattern[str]

    def pattern(self, permission: Permission) -> re.Pattern[str]:
        if permission == "configure":
            return self.configure
        if permission == "write":
            return self.write
        return self.read
