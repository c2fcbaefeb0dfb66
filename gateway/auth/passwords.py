"""RabbitMQ-compatible password hashes (`rabbit_password_hashing_sha256`).

A hash is base64( salt + sha256(salt + utf8(password)) ) with a 4-byte random salt, so a
hash exported from RabbitMQ (`rabbitmqctl export_definitions`, `GET /api/definitions`)
works here unchanged, and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["SALT_SIZE", "check_password", "hash_password", "is_password_hash"]

SALT_SIZE: Final = 4
_DIGEST_SIZE: Final = hashlib.sha256().digest_size  # 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A new salted hash of `password` (the salt is random unless given, for tests)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_SIZE)
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(password_hash: str, password: str) -> bool:
    """True if `password` matches `password_hash`; False for a wrong one or a malformed hash.

    The comparison takes the same time wherever the digests differ.
    """
    raw = _decode(password_hash)
    if raw is None:
        return False
    salt, expected = raw[:SALT_SIZE], raw[SALT_SIZE:]
    actual = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return hmac.compare_digest(actual, expected)


def is_password_hash(text: str) -> bool:
    """True if `text` has the form of a hash made by `hash_password`."""
    return _decode(text) is not None


def _decode(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(raw) != SALT_SIZE + _DIGEST_SIZE:
        return None
    return raw
