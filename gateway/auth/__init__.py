"""Users, virtual hosts and permissions, as RabbitMQ's internal auth backend has them.

`AuthService` answers the three questions every protocol session asks: may this peer log in
as this user, may the user open this vhost, may the user configure/write/read this
resource. New passwords are stored as salted scrypt hashes; RabbitMQ's salted SHA-256
hashes are still checked (`passwords`). Failed logins are limited per source address and
slow checks run off the event loop (`login`).
"""

from __future__ import annotations

from gateway.auth.passwords import (
    check_password,
    hash_password,
    hash_password_sha256,
    is_password_hash,
)
from gateway.auth.service import (
    AuthService,
    LoginRefused,
    Permission,
    ResourceKind,
    User,
    is_loopback,
)
from gateway.auth.topics import TopicPermission

__all__ = [
    "AuthService",
    "LoginRefused",
    "Permission",
    "ResourceKind",
    "TopicPermission",
    "User",
    "check_password",
    "hash_password",
    "hash_password_sha256",
    "is_loopback",
    "is_password_hash",
]
