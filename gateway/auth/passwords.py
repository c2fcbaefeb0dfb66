"""Password hashes: salted scrypt for new passwords, RabbitMQ's salted SHA-256 still checked.

Two formats are stored and recognised by their shape:

- scrypt (`HASHING_SCRYPT`, what every new password gets): the text
  ``$scrypt$ln=14,r=8,p=1$<salt>$<key>`` with a 16-byte random salt and a 32-byte key,
  both base64 without padding (the layout passlib and others use). The parameters are
  n = 2**14, r = 8, p = 1 (scrypt's "interactive login" setting): 16 MiB of memory and a
  median 27 ms of one core per check on the idle 2-vCPU machine this was written on (60 ms
  when that machine ran a load average of 8.5), which makes guessing expensive while a
  login stays quick. The parameters travel inside the hash, so
  a later change of the defaults keeps old hashes valid. A check this slow runs in a worker
  thread (see `gateway.auth.login`), never on the event loop.
- RabbitMQ's `rabbit_password_hashing_sha256` (`HASHING_SHA256`): base64 of 4 salt bytes +
  sha256(salt + utf8(password)). It is fast and therefore weak against offline guessing, so
  it is never made for a new password here; it is only checked, so that hashes pasted from
  `rabbitmqctl export_definitions` or a RabbitMQ definitions file keep working.

Both are checked with `hmac.compare_digest`. A login checks with `check_password_evenly`,
which makes every check cost one scrypt: a SHA-256 hash, no hash (an unknown user, or one
without a password) is first checked against `DECOY_HASH`, so the time a wrong password
takes does not tell a legacy user from an scrypt user or from a name that does not exist.
A legacy hash that matched is replaced by an scrypt hash at that login
(`gateway.auth.service`). hashlib is the standard library's binding of
OpenSSL's scrypt and PBKDF2, so nothing here implements a primitive.

WAMP-CRA (`CraKey`) cannot be checked against either hash: the router has to sign the
challenge itself, with the same key the client derives from the password. When a plain
password is set, `derive_cra_key` derives that key as autobahn's `auth.derive_key` does
(PBKDF2-HMAC-SHA256, a random salt, `CRA_ITERATIONS`, 32 bytes, base64) and it is stored
beside the hash. Whoever holds that key can answer WAMP-CRA challenges, so it is as secret
as the password itself (it is not exported with the definitions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CRA_ITERATIONS",
    "HASHING_SCRYPT",
    "HASHING_SHA256",
    "SALT_SIZE",
    "DECOY_HASH",
    "CraKey",
    "check_password",
    "check_password_evenly",
    "derive_cra_key",
    "hash_password",
    "hash_password_sha256",
    "hashing_algorithm",
    "is_password_hash",
    "is_slow_hash",
]

HASHING_SCRYPT: Final = "gateway_password_hashing_scrypt"
HASHING_SHA256: Final = "rabbit_password_hashing_sha256"

SALT_SIZE: Final = 4  # RabbitMQ's SHA-256 hashes
_DIGEST_SIZE: Final = hashlib.sha256().digest_size  # 32

SCRYPT_LOG_N: Final = 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_SALT_SIZE: Final = 16
SCRYPT_KEY_SIZE: Final = 32
_SCRYPT_MAX_LOG_N: Final = 20  # refuse hashes that would take seconds and a GiB to check
_SCRYPT = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)"
                     r"\$([A-Za-z0-9+/]+)")

# Checked against when there is no scrypt hash to check (an unknown user, a user without a
# password, a RabbitMQ SHA-256 hash), so that such a login costs the same scrypt check as a
# wrong password of an scrypt user. Nothing matches it that matters: the check's answer is
# thrown away. Zero salt and zero key, so no start-up time goes into making one.
DECOY_HASH: Final = f"$scrypt$ln={SCRYPT_LOG_N},r={SCRYPT_R},p={SCRYPT_P}${'A' * 22}${'A' * 43}"

CRA_ITERATIONS: Final = 1000
CRA_KEYLEN: Final = 32


def hash_password(password: str, *, log_n: int = SCRYPT_LOG_N,
                  salt: bytes | None = None) -> str:
    """A new salted scrypt hash of `password` (random salt unless given, for tests)."""
    if salt is None:
        salt = secrets.token_bytes(SCRYPT_SALT_SIZE)
    key = _scrypt(password, salt, log_n, SCRYPT_R, SCRYPT_P)
    return (f"$scrypt$ln={log_n},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}")


def hash_password_sha256(password: str, *, salt: bytes | None = None) -> str:
    """RabbitMQ's salted SHA-256 hash (for tests and interoperability, not for storing)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_SIZE)
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(password_hash: str, password: str) -> bool:
    """True if `password` matches `password_hash` (either format); False for a wrong one or
    a malformed hash. The comparison takes the same time wherever the digests differ."""
    scrypt = _parse_scrypt(password_hash)
    if scrypt is not None:
        log_n, r, p, salt, expected = scrypt
        return hmac.compare_digest(_scrypt(password, salt, log_n, r, p, len(expected)),
                                   expected)
    raw = _decode_sha256(password_hash)
    if raw is None:
        return False
    salt, expected = raw[:SALT_SIZE], raw[SALT_SIZE:]
    actual = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return hmac.compare_digest(actual, expected)


def check_password_evenly(password_hash: str, password: str) -> bool:
    """`check_password` at the cost of one scrypt check whatever `password_hash` is: a hash
    that is not scrypt (RabbitMQ's SHA-256, or "" for none) is checked after a check
    against `DECOY_HASH`, whose answer is not used. "" never matches."""
    if is_slow_hash(password_hash):
        return check_password(password_hash, password)
    check_password(DECOY_HASH, password)
    return bool(password_hash) and check_password(password_hash, password)


def is_slow_hash(password_hash: str) -> bool:
    """True if checking against this hash takes long enough to belong off the event loop."""
    return password_hash.startswith("$scrypt$")


def hashing_algorithm(password_hash: str) -> str:
    """The definitions' `hashing_algorithm` name of a stored hash."""
    return HASHING_SCRYPT if is_slow_hash(password_hash) else HASHING_SHA256


def is_password_hash(text: str, algorithm: str | None = None) -> bool:
    """True if `text` is a well-formed hash (of `algorithm`, when given)."""
    if algorithm in (None, HASHING_SCRYPT) and _parse_scrypt(text) is not None:
        return True
    return algorithm in (None, HASHING_SHA256) and _decode_sha256(text) is not None


@dataclass(frozen=True)
class CraKey:
    """A user's salted WAMP-CRA key: the router signs challenges with `key` (base64 of the
    PBKDF2 output, as autobahn uses it) and tells the client salt, iterations and keylen."""

    salt: str
    iterations: int
    keylen: int
    key: str

    def encode(self) -> str:
        return f"pbkdf2-sha256${self.iterations}${self.keylen}${self.salt}${self.key}"

    @classmethod
    def decode(cls, text: str) -> CraKey | None:
        parts = text.split("$")
        if len(parts) != 5 or parts[0] != "pbkdf2-sha256" or not parts[1].isdigit() \
                or not parts[2].isdigit():
            return None
        return cls(parts[3], int(parts[1]), int(parts[2]), parts[4])


def derive_cra_key(password: str, *, salt: str | None = None,
                   iterations: int = CRA_ITERATIONS, keylen: int = CRA_KEYLEN) -> CraKey:
    """The WAMP-CRA key of `password` (random salt unless given), as clients derive it."""
    if salt is None:
        salt = secrets.token_urlsafe(16)
    raw = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"),
                              iterations, keylen)
    return CraKey(salt, iterations, keylen, base64.b64encode(raw).decode("ascii"))


# -- helpers -------------------------------------------------------------------------------


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int,
            size: int = SCRYPT_KEY_SIZE) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * n * p + (1 << 20), dklen=size)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse_scrypt(text: str) -> tuple[int, int, int, bytes, bytes] | None:
    m = _SCRYPT.fullmatch(text)
    if m is None:
        return None
    log_n, r, p = int(m[1]), int(m[2]), int(m[3])
    salt, key = _unb64(m[4]), _unb64(m[5])
    if not (1 <= log_n <= _SCRYPT_MAX_LOG_N and r >= 1 and p >= 1) or not salt \
            or key is None or len(key) < 16:
        return None
    return log_n, r, p, salt, key


def _decode_sha256(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(raw) != SALT_SIZE + _DIGEST_SIZE:
        return None
    return raw
