"""Who may log in, into which virtual host, and touch which resources.

The rules are RabbitMQ's internal backend (`rabbit_auth_backend_internal`,
`rabbit_access_control`), so users, vhosts and permission regexes copied from a RabbitMQ
definitions export behave the same here:

- Login: the password is checked against the salted hash; a user listed in
  `loopback_users` is refused unless the peer is a loopback address. The client is told only
  "Login was refused using authentication mechanism <M>. ..." (as RabbitMQ tells a client
  that announced `authentication_failure_close`); the reason goes to the log.
- Vhost: a vhost that does not exist -> 530 "vhost X not found"; a user with no permission
  row on it -> 530 "access to vhost 'X' refused for user 'U'".
- Resource: each permission (configure, write, read) is a regex *searched* in the resource
  name (Erlang `re:run`, unanchored unless the pattern anchors itself), so ".*" allows
  everything, "^app-" allows names starting "app-", "app" allows any name containing "app".
  The empty pattern "" stands for "^$": it matches only the empty name, and the only
  resource with an empty name, the default exchange, is checked as "amq.default", so ""
  grants nothing. A refusal is 403 "access to queue 'q' in vhost '/' refused for user 'u'".

Everything is read from the config once; regexes are compiled once, here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from gateway.auth.passwords import check_password, hash_password
from gateway.core.errors import AccessRefused, NotAllowed

if TYPE_CHECKING:
    from gateway.config import AuthConfig

__all__ = [
    "AuthService",
    "LoginRefused",
    "Permission",
    "ResourceKind",
    "User",
    "is_loopback",
]

Permission = Literal["configure", "write", "read"]
ResourceKind = Literal["queue", "exchange"]

DEFAULT_EXCHANGE_RESOURCE: Final = "amq.default"


@dataclass(frozen=True)
class User:
    """An authenticated user, as sessions carry it after login."""

    name: str
    tags: tuple[str, ...] = ()


class LoginRefused(AccessRefused):
    """A refused login (403). `text` is what the client is told; `reason` is for the log."""

    def __init__(self, mechanism: str, reason: str) -> None:
        super().__init__(
            f"Login was refused using authentication mechanism {mechanism}. "
            "For details see the broker logfile."
        )
        self.mechanism = mechanism
        self.reason = reason


@dataclass(frozen=True)
class _Grant:
    configure: re.Pattern[str]
    write: re.Pattern[str]
    read: re.Pattern[str]

    def pattern(self, permission: Permission) -> re.Pattern[str]:
        if permission == "configure":
            return self.configure
        if permission == "write":
            return self.write
        return self.read


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern if pattern else "^$")


class AuthService:
    """Authentication and authorisation over the users, vhosts and permissions of a config."""

    def __init__(self, config: AuthConfig) -> None:
        self._hashes = {user.name: user.password_hash for user in config.users}
        self._users = {user.name: User(user.name, user.tags) for user in config.users}
        self._vhosts = tuple(config.vhosts)
        self._grants = {
            (p.user, p.vhost): _Grant(_compile(p.configure), _compile(p.write), _compile(p.read))
            for p in config.permissions
        }
        self._loopback_users = config.loopback_users
        # Checked against when the user is unknown, so that an unknown name costs the
        # same as a wrong password and does not reveal which names exist.
        self._decoy_hash = hash_password("")

    @property
    def vhosts(self) -> tuple[str, ...]:
        return self._vhosts

    def vhost_exists(self, vhost: str) -> bool:
        return vhost in self._vhosts

    def user(self, name: str) -> User | None:
        """The user of that name, without checking a password (None if there is none)."""
        return self._users.get(name)

    def authenticate(
        self, username: str, password: str, *, loopback: bool, mechanism: str = "PLAIN"
    ) -> User:
        """The user, if the password is right and the peer may log in as them.

        Raises `LoginRefused` (an `AccessRefused`, 403) otherwise; `mechanism` names the
        SASL mechanism in the text the client is told.
        """
        stored = self._hashes.get(username)
        matches = check_password(stored or self._decoy_hash, password)
        if stored is None or not stored or not password or not matches:
            raise LoginRefused(mechanism, f"user '{username}' - invalid credentials")
        if username in self._loopback_users and not loopback:
            raise LoginRefused(mechanism, f"user '{username}' can only connect via localhost")
        return self._users[username]

    def check_vhost(self, user: User, vhost: str) -> None:
        """Raises `NotAllowed` (530) unless the vhost exists and the user has a permission
        row on it."""
        if vhost not in self._vhosts:
            raise NotAllowed(f"vhost {vhost} not found")
        if (user.name, vhost) not in self._grants:
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}'")

    def allowed(
        self,
        user: User,
        vhost: str,
        permission: Permission,
        resource: str,
        *,
        resource_kind: ResourceKind = "queue",
    ) -> bool:
        """True if `user` holds `permission` on the named resource in `vhost`."""
        grant = self._grants.get((user.name, vhost))
        if grant is None:
            return False
        name = _resource_name(resource, resource_kind)
        return grant.pattern(permission).search(name) is not None

    def check(
        self,
        user: User,
        vhost: str,
        permission: Permission,
        resource: str,
        *,
        resource_kind: ResourceKind = "queue",
    ) -> None:
        """Raises `AccessRefused` (403) unless `user` holds `permission` on the resource."""
        if not self.allowed(user, vhost, permission, resource, resource_kind=resource_kind):
            name = _resource_name(resource, resource_kind)
            raise AccessRefused(
                f"access to {resource_kind} '{name}' in vhost '{vhost}' "
                f"refused for user '{user.name}'"
            )


def _resource_name(resource: str, resource_kind: ResourceKind) -> str:
    if resource_kind == "exchange" and resource == "":
        return DEFAULT_EXCHANGE_RESOURCE
    return resource


def is_loopback(host: str) -> bool:
    """True for a loopback peer address: 127.0.0.0/8, ::1, or ::ffff:127.x.y.z.

    Accepts the forms sockets report (with an IPv6 zone "%lo" or in brackets); a name
    that is not an IP address ("localhost") is False, since peers are addresses.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
