"""A user's permissions on a vhost (RabbitMQ's permission row): three regexes, as the
config's `[[permissions]]` list them and `AuthService.list_permissions` reports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PermissionConfig:
    user: str
    vhost: str
    configure: str
    write: str
    read: str
