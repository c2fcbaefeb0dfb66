"""Users, virtual hosts and permissions, as RabbitMQ's internal auth backend has them.

`AuthService` answers the three questions every protocol session asks: may this peer log in
as this user, may the user open this vhost, may the user configure/write/read this
resource. Passwords are stored as RabbitMQ's salted SHA-256 hashes (`passwords`).
"""

from __future__ import annotations

from gateway.auth.passwords import check_password, hash_password, is_password_hash
from gateway.auth.service import (
    AuthService,
    LoginRefused,
    Permission,
    ResourceKind,
    User,
    is_loopback,
)

__all__ = [
    "AuthService",
    "LoginRefused",
    "Permission",
    "ResourceKind",
    "User",
    "check_password",
    "hash_password",
    "is_loopback",
    "is_password_hash",
]
