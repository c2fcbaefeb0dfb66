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

Users, vhosts and permissions can change at run time (the management API calls the
methods of `AuthService`); regexes are compiled once per change, here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

from gateway.auth.passwords import check_password, hash_password, is_password_hash
from gateway.core.errors import AccessRefused, NotAllowed, NotFound, PreconditionFailed
from gateway.store.base import PermissionRecord, Recovered, UserRecord

if TYPE_CHECKING:
    from gateway.config import AuthConfig, PermissionConfig
    from gateway.core.broker import Broker
    from gateway.store.base import Store

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
    """A user: as sessions carry it after login, and as `list_users` reports it."""

    name: str
    tags: tuple[str, ...] = ()
    password_hash: str = field(default="", repr=False, compare=False)


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


def _regex(what: str, pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise PreconditionFailed(f"{what}: expected a string, got {pattern!r}")
    try:
        return _compile(pattern)
    except re.error as exc:
        raise PreconditionFailed(f"{what}: not a valid regular expression {pattern!r}: "
                                 f"{exc}") from exc


class AuthService:
    """Authentication and authorisation over users, vhosts and permissions.

    The config's users, vhosts and permissions are where a broker starts from; with a store
    (`attach`, then `restore` at start) every change made through the methods below is
    written to it and read back at the next start. As RabbitMQ seeds its default user and
    vhost only on the first boot of a node, the config seeds the store only when the store
    has never held users (a fresh data directory); after that the store is the source of
    truth and the config's `[[users]]`/`[[vhosts]]`/`[[permissions]]` are not read again.
    """

    def __init__(self, config: AuthConfig) -> None:
        self._users: dict[str, User] = {
            u.name: User(u.name, tuple(u.tags), u.password_hash) for u in config.users}
        self._vhosts: dict[str, None] = dict.fromkeys(config.vhosts)
        self._perms: dict[tuple[str, str], tuple[str, str, str]] = {
            (p.user, p.vhost): (p.configure, p.write, p.read) for p in config.permissions}
        self._grants = {key: _Grant(*(_compile(x) for x in value))
                        for key, value in self._perms.items()}
        self._loopback_users = config.loopback_users
        self._store: Store | None = None
        self._broker: Broker | None = None
        # Checked against when the user is unknown, so that an unknown name costs the
        # same as a wrong password and does not reveal which names exist.
        self._decoy_hash = hash_password("")

    # -- persistence -----------------------------------------------------------------------

    def attach(self, store: Store | None = None, broker: Broker | None = None) -> None:
        """Write every later change to `store`; keep `broker`'s vhosts in step with ours."""
        self._store = store
        self._broker = broker
        if broker is not None:
            for name in self._vhosts:
                broker.add_vhost(name)
            broker.snapshot_hooks.append(self.snapshot_into)

    def snapshot_into(self, state: Recovered) -> None:
        """Add users, vhosts and permissions to a snapshot of the durable state."""
        state.seeded = True
        state.users = [UserRecord(u.name, u.password_hash, list(u.tags))
                       for u in self._users.values()]
        state.vhosts = list(self._vhosts)
        state.permissions = [PermissionRecord(user, vhost, c, w, r)
                             for (user, vhost), (c, w, r) in self._perms.items()]

    def restore(self, state: Recovered) -> None:
        """Take users, vhosts and permissions from a recovered store; on a store that was
        never seeded, write the config's into it instead (first boot)."""
        if not state.seeded:
            if self._store is not None:
                for u in self._users.values():
                    self._store.put_user(UserRecord(u.name, u.password_hash, list(u.tags)))
                for v in self._vhosts:
                    self._store.put_vhost(v)
                for (user, vhost), (c, w, r) in self._perms.items():
                    self._store.put_permission(PermissionRecord(user, vhost, c, w, r))
                self._store.mark_seeded()
            return
        self._users = {u.name: User(u.name, tuple(u.tags), u.password_hash)
                       for u in state.users}
        self._vhosts = dict.fromkeys(state.vhosts)
        self._perms = {(p.user, p.vhost): (p.configure, p.write, p.read)
                       for p in state.permissions}
        self._grants = {key: _Grant(*(_compile(x) for x in value))
                        for key, value in self._perms.items()}
        if self._broker is not None:
            for name in [v for v in self._broker.vhosts if v not in self._vhosts]:
                del self._broker.vhosts[name]  # from the config; deleted since (still empty)
            for name in self._vhosts:
                self._broker.add_vhost(name)

    # -- users -----------------------------------------------------------------------------

    def list_users(self) -> list[User]:
        return list(self._users.values())

    def add_user(self, name: str, *, password: str | None = None,
                 password_hash: str | None = None, tags: Iterable[str] = ()) -> User:
        """Create or replace a user (as the HTTP API's PUT does). Give a password or a
        RabbitMQ SHA-256 hash, not both; neither (or "") makes a user who cannot log in
        with a password."""
        if not isinstance(name, str) or not name:
            raise PreconditionFailed("user name must be a non-empty string")
        if password is not None and password_hash is not None:
            raise PreconditionFailed("give a password or a password_hash, not both")
        if password is not None:
            digest = hash_password(password) if password else ""
        elif password_hash:
            if not is_password_hash(password_hash):
                raise PreconditionFailed(
                    "password_hash is not a RabbitMQ salted SHA-256 hash (base64 of 4 salt "
                    "bytes + 32 digest bytes)")
            digest = password_hash
        else:
            digest = ""
        user = User(name, _tags(tags), digest)
        self._users[name] = user
        self._write_user(user)
        return user

    def delete_user(self, name: str) -> None:
        if name not in self._users:
            raise NotFound(f"user '{name}' not found")
        del self._users[name]
        for key in [k for k in self._perms if k[0] == name]:
            del self._perms[key]
            self._grants.pop(key, None)
        if self._store is not None:
            self._store.delete_user(name)

    def change_password(self, name: str, password: str) -> None:
        user = self._get_user(name)
        self._users[name] = replace(user, password_hash=hash_password(password)
                                    if password else "")
        self._write_user(self._users[name])

    def set_user_tags(self, name: str, tags: Iterable[str]) -> None:
        user = self._get_user(name)
        self._users[name] = replace(user, tags=_tags(tags))
        self._write_user(self._users[name])

    def _get_user(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise NotFound(f"user '{name}' not found")
        return user

    def _write_user(self, user: User) -> None:
        if self._store is not None:
            self._store.put_user(UserRecord(user.name, user.password_hash, list(user.tags)))

    # -- vhosts ----------------------------------------------------------------------------

    @property
    def vhosts(self) -> tuple[str, ...]:
        return tuple(self._vhosts)

    def list_vhosts(self) -> list[str]:
        return list(self._vhosts)

    def vhost_exists(self, vhost: str) -> bool:
        return vhost in self._vhosts

    def add_vhost(self, name: str) -> None:
        """Create a vhost (no-op when it exists, as RabbitMQ's PUT is)."""
        if not isinstance(name, str) or not name:
            raise PreconditionFailed("vhost name must be a non-empty string")
        if name in self._vhosts:
            return
        self._vhosts[name] = None
        if self._store is not None:
            self._store.put_vhost(name)
        if self._broker is not None:
            self._broker.add_vhost(name)

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost with everything in it; its connections are closed by the broker's
        vhost-deleted hook (`Broker.on_vhost_deleted`)."""
        if name not in self._vhosts:
            raise NotFound(f"vhost '{name}' not found")
        del self._vhosts[name]
        for key in [k for k in self._perms if k[1] == name]:
            del self._perms[key]
            self._grants.pop(key, None)
        if self._broker is not None:
            self._broker.delete_vhost(name)  # writes the store record itself
        elif self._store is not None:
            self._store.delete_vhost(name)

    # -- permissions -----------------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str,
                        read: str) -> None:
        if user not in self._users:
            raise NotFound(f"user '{user}' not found")
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        grant = _Grant(_regex("configure", configure), _regex("write", write),
                       _regex("read", read))
        self._perms[(user, vhost)] = (configure, write, read)
        self._grants[(user, vhost)] = grant
        if self._store is not None:
            self._store.put_permission(PermissionRecord(user, vhost, configure, write, read))

    def clear_permissions(self, user: str, vhost: str) -> None:
        if (user, vhost) not in self._perms:
            raise NotFound(f"no permissions for user '{user}' on vhost '{vhost}'")
        del self._perms[(user, vhost)]
        self._grants.pop((user, vhost), None)
        if self._store is not None:
            self._store.delete_permission(user, vhost)

    def list_permissions(self) -> list[PermissionConfig]:
        from gateway.config import PermissionConfig

        return [PermissionConfig(user, vhost, c, w, r)
                for (user, vhost), (c, w, r) in self._perms.items()]

    # -- the questions sessions ask --------------------------------------------------------

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
        found = self._users.get(username)
        stored = found.password_hash if found is not None else None
        matches = check_password(stored or self._decoy_hash, password)
        if found is None or not stored or not password or not matches:
            raise LoginRefused(mechanism, f"user '{username}' - invalid credentials")
        if username in self._loopback_users and not loopback:
            raise LoginRefused(mechanism, f"user '{username}' can only connect via localhost")
        return found

    def authenticate_certificate(self, username: str, *, loopback: bool,
                                 mechanism: str = "EXTERNAL") -> User:
        """The user a verified client certificate names (RabbitMQ's
        rabbitmq_auth_mechanism_ssl): no password is checked, but the user must exist and
        the loopback rule applies. Raises `LoginRefused` otherwise."""
        found = self._users.get(username)
        if found is None:
            raise LoginRefused(mechanism, f"user '{username}' (from a client certificate) "
                                          "does not exist")
        if username in self._loopback_users and not loopback:
            raise LoginRefused(mechanism, f"user '{username}' can only connect via localhost")
        return found

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


def _tags(tags: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(tags, str):  # "administrator,management", as the HTTP API sends them
        tags = tags.split(",")
    return tuple(t.strip() for t in tags if t.strip())


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
