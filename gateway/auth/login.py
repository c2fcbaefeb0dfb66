"""Password logins: failed-login limits per source address, and slow checks off the loop.

`FailedLogins` counts failures per source address in fixed windows: `limit` failures within
`window` seconds block the address for `block` seconds, during which every login from it is
refused at once, without a password check (so a guesser gets no answers and costs no
hashing). Networks in `exempt` are never blocked. The table is bounded: at most
`MAX_ADDRESSES` addresses are remembered; past that, expired entries go first, then the
oldest.

`PendingCheck` is how a sans-IO session gets a slow (scrypt) password check run without
stalling every other client: `AuthService.login` returns one instead of an answer, the
session stops handling input and exposes it as `password_check`, and the I/O layer runs
`verify()` in a worker thread (`gateway.server.connection.settle_password_check`), then
calls `finish(ok)` in the event loop, which hands the session its answer, and lets the
session go on with the input it held. A check carries the thread limiter of the auth service
that made it (`limiter`: the server makes one and hands it to its `AuthService`), so at
most that many checks hash at once, whichever connection or API request asked. Every
password check is slow on purpose (one scrypt whatever the user's hash, so its time does
not tell who exists); only a `VerifiedCache` hit and a token (`gateway.auth.oauth`) are
answered at once.

`VerifiedCache` remembers, for a few minutes, that a password matched a user's current
hash, keyed by an HMAC of the password under a per-process random key (never the password
itself), so a management client sending basic auth with every request, or a device that
reconnects, does not pay for scrypt each time. A changed hash misses the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import trio

__all__ = ["FailedLogins", "PendingCheck", "VerifiedCache"]

MAX_ADDRESSES: Final = 65536
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Entry:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0


class FailedLogins:
    """Failed logins per source address, and which addresses are blocked for now."""

    def __init__(self, limit: int, window: float, block: float,
                 exempt: Iterable[str] = ()) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.exempt: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in exempt)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.exempt)

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds `address` stays blocked (0.0 when it may try)."""
        entry = self._entries.get(address)
        if entry is None or entry.blocked_until <= now:
            return 0.0
        return entry.blocked_until - now

    def failed(self, address: str, now: float) -> bool:
        """Count one failure; True when it starts a block of the address."""
        if self.limit <= 0 or self.block <= 0 or not address or self._exempt(address):
            return False
        entry = self._entries.get(address)
        if entry is None:
            entry = self._entries[address] = _Entry(now)
            self._prune(now)
        elif now - entry.window_start >= self.window:
            entry.window_start, entry.failures = now, 0
        entry.failures += 1
        if entry.failures >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.failures = 0
            entry.window_start = now
            return True
        return False

    def _prune(self, now: float) -> None:
        if len(self._entries) <= MAX_ADDRESSES:
            return
        for address in [a for a, e in self._entries.items()
                        if e.blocked_until <= now and now - e.window_start >= self.window]:
            del self._entries[address]
        while len(self._entries) > MAX_ADDRESSES:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class PendingCheck:
    """A slow password check: `verify` (thread-safe, pure CPU) runs in a worker thread,
    `finish(ok)` back in the event loop, under `limiter` (None: the I/O layer's default)."""

    __slots__ = ("finish", "limiter", "verify")

    def __init__(self, verify: Callable[[], bool], finish: Callable[[bool], None],
                 limiter: trio.CapacityLimiter | None = None) -> None:
        self.verify = verify
        self.finish = finish
        self.limiter = limiter


class VerifiedCache:
    """Recently verified (user, hash, password) triples, bounded in size and age."""

    def __init__(self, size: int = 1024, ttl: float = 300.0) -> None:
        self.size = size
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()

    def _tag(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()

    def hit(self, user: str, password_hash: str, password: str, now: float) -> bool:
        found = self._entries.get((user, password_hash))
        if found is None:
            return False
        tag, at = found
        if now - at > self.ttl or now < at:
            del self._entries[(user, password_hash)]
            return False
        return hmac.compare_digest(tag, self._tag(password))

    def put(self, user: str, password_hash: str, password: str, now: float) -> None:
        self._entries[(user, password_hash)] = (self._tag(password), now)
        self._entries.move_to_end((user, password_hash))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
