"""Who may log in, into which virtual host, and touch which resources.

The rules are RabbitMQ's internal backend (`rabbit_auth_backend_internal`,
`rabbit_access_control`), so users, vhosts and permission regexes copied from a RabbitMQ
definitions export behave the same here:

- Login: the password is checked against the salted hash (`passwords`: scrypt for passwords
  set here, RabbitMQ's SHA-256 for pasted hashes, upgraded to scrypt at the user's next
  successful login); every check costs one scrypt, whoever the user is, or whether they
  exist (`passwords.check_password_evenly`); a user listed in `loopback_users` is
  refused unless the peer is a loopback address. The client is told only "Login was
  refused using authentication mechanism <M>. ..." (as RabbitMQ tells a client that
  announced `authentication_failure_close`); the reason goes to the log, with the protocol,
  source address and user name of every failed login. Failures are counted per source
  address (`login.FailedLogins`); a blocked address is refused without a password check.
  A scrypt check is handed to the I/O layer to run in a worker thread (`login`).
- Vhost: a vhost that does not exist -> 530 "vhost X not found"; a user with no permission
  row on it -> 530 "access to vhost 'X' refused for user 'U'".
- Resource: each permission (configure, write, read) is a regex *searched* in the resource
  name (Erlang `re:run`, unanchored unless the pattern anchors itself), so ".*" allows
  everything, "^app-" allows names starting "app-", "app" allows any name containing "app".
  The empty pattern "" stands for "^$": it matches only the empty name, and the only
  resource with an empty name, the default exchange, is checked as "amq.default", so ""
  grants nothing. A refusal is 403 "access to queue 'q' in vhost '/' refused for user 'u'".
- Topic: RabbitMQ's topic permissions (`set_topic_permissions`, rules in `topics`): per
  user, vhost and topic exchange, a write and a read regex searched in the routing key
  (publish) or binding key (subscribe). A refusal is 403 "access to topic 'k' in exchange
  'x' in vhost '/' refused for user 'u'".

With a `source` (`gateway.auth.source`; `gateway.auth.upstream`: a RabbitMQ cluster's), the
users, tags, vhosts, permissions and topic permissions are the source's, not the store's;
the rules above are applied to them unchanged.

Users, vhosts and permissions can change at run time (the management API calls the
methods of `AuthService`); regexes are compiled once per change, here.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

from gateway.auth.limits import RuntimeLimits, Scope, check_limits
from gateway.auth.login import FailedLogins, PendingCheck, VerifiedCache
from gateway.auth.oauth import (
    TokenGrant,
    TokenRefused,
    TokenVerifier,
    load_signing_key,
    looks_like_token,
)
from gateway.auth.passwords import (
    DECOY_HASH,
    CraKey,
    check_password_evenly,
    derive_cra_key,
    hash_password,
    is_password_hash,
    is_slow_hash,
)
from gateway.auth.permissions import Grant, Permission, PermissionConfig
from gateway.auth.topics import (
    TopicGrants,
    TopicPermission,
    checked_pattern,
    compile_pattern,
)
from gateway.core.broker import Broker
from gateway.core.errors import AccessRefused, NotAllowed, NotFound, PreconditionFailed
from gateway.store.base import (
    LimitsRecord,
    MemoryStore,
    PermissionRecord,
    Recovered,
    UserRecord,
)

if TYPE_CHECKING:
    import trio

    from gateway.auth.source import UserSource
    from gateway.config import AuthConfig, OAuth2Config
    from gateway.core.vhost import VirtualHost
    from gateway.store.base import Store

__all__ = [
    "AuthService",
    "LoginRefused",
    "Permission",
    "DECOY_HASH",
    "ResourceKind",
    "User",
    "is_loopback",
]

log = logging.getLogger("gateway.auth")

ResourceKind = Literal["queue", "exchange"]

DEFAULT_EXCHANGE_RESOURCE: Final = "amq.default"


@dataclass(frozen=True)
class User:
    """A user: as sessions carry it after login, and as `list_users` reports it."""

    name: str
    tags: tuple[str, ...] = ()
    password_hash: str = field(default="", repr=False, compare=False)
    wampcra: str = field(default="", repr=False, compare=False)  # `CraKey.encode()` or ""
    # the broker's own operator on the local control channel (`gateway ctl` over the
    # data directory's socket): not a stored user, holds every permission, as rabbitmqctl
    node_local: bool = field(default=False, compare=False)
    # a token user (`gateway.auth.oauth`): its permissions are the token's scopes, and it
    # exists only for the connection that presented the token
    token: TokenGrant | None = field(default=None, repr=False, compare=False)

    def record(self) -> UserRecord:
        return UserRecord(self.name, self.password_hash, list(self.tags), self.wampcra)


class LoginRefused(AccessRefused):
    """A refused login (403). `text` is what the client is told; `reason` is for the log."""

    def __init__(self, mechanism: str, reason: str) -> None:
        super().__init__(
            f"Login was refused using authentication mechanism {mechanism}. "
            "For details see the broker logfile."
        )
        self.mechanism = mechanism
        self.reason = reason


class AuthService:
    """Authentication and authorisation over users, vhosts and permissions.

    The vhosts are the broker's (`Broker.vhosts`): this service creates and deletes them,
    and asks the broker which exist. Without a broker it keeps a small one of its own (tests,
    tools).

    The config's users, vhosts and permissions are where a broker starts from; with a store
    (given, then `restore` at start) every change made through the methods below is
    written to it and read back at the next start. As RabbitMQ seeds its default user and
    vhost only on the first boot of a node, the config seeds the store only when the store
    has never held users (a fresh data directory); after that the store is the source of
    truth and the config's `[[users]]`/`[[vhosts]]`/`[[permissions]]` are not read again.
    """

    def __init__(self, config: AuthConfig, oauth2: OAuth2Config | None = None, *,
                 store: Store | None = None, broker: Broker | None = None,
                 inline_checks: bool = True,
                 check_limiter: trio.CapacityLimiter | None = None,
                 source: UserSource | None = None) -> None:
        """`store`: where changes are written; `broker`: whose vhosts these are (the
        config's are added to it). `inline_checks` False: slow password checks are handed
        out as a `PendingCheck` for the I/O layer to run in a worker thread, under
        `check_limiter` (the server's: at most so many at once); True: run at once
        (sans-IO tests, tools). `source`: where users and permissions come from instead
        (RabbitMQ's: `gateway.auth.upstream.RabbitMQUsers`)."""
        self.source = source
        self._users: dict[str, User] = {
            u.name: User(u.name, tuple(u.tags), u.password_hash, u.wampcra)
            for u in config.users}
        self._perms: dict[tuple[str, str], tuple[str, str, str]] = {
            (p.user, p.vhost): (p.configure, p.write, p.read) for p in config.permissions}
        self._grants = {key: Grant(*(compile_pattern(x) for x in value))
                        for key, value in self._perms.items()}
        self._topic = TopicGrants()
        self.limits = RuntimeLimits()
        self._loopback_users = config.loopback_users
        self._store: Store | None = None
        self._broker = Broker(MemoryStore(), config.vhosts)  # until `attach` gives one
        self.attach(store, broker)
        self.failed_logins = FailedLogins(config.failed_login_limit,
                                          config.failed_login_window,
                                          config.failed_login_block,
                                          config.failed_login_exempt)
        self._verified = VerifiedCache()
        self.inline_checks = inline_checks
        self.check_limiter = check_limiter
        self.tokens = TokenVerifier()
        if oauth2 is not None and oauth2.resource_server_id:
            self.tokens = TokenVerifier(
                oauth2.resource_server_id,
                signing_keys={kid: load_signing_key(path) for kid, path in oauth2.signing_keys},
                default_key=oauth2.default_key, algorithms=oauth2.algorithms,
                preferred_username_claims=oauth2.preferred_username_claims,
                additional_scopes_key=oauth2.additional_scopes_key,
                scope_prefix=oauth2.scope_prefix)
        # what token checks compare `exp` with (epoch seconds)
        self.wall_clock: Callable[[], float] = time.time

    # -- persistence -----------------------------------------------------------------------

    def attach(self, store: Store | None = None, broker: Broker | None = None) -> None:
        """Write every later change to `store`; take the vhosts to `broker` and ask it from
        then on (the constructor's `store` and `broker`, for a service made before them)."""
        self._store = store
        if broker is not None:
            for name in self._broker.vhosts:
                broker.add_vhost(name)
            self._broker = broker
            broker.snapshot_hooks.append(self.snapshot_into)

    @property
    def _vhosts(self) -> dict[str, VirtualHost]:
        """The vhosts that exist: the broker's."""
        return self._broker.vhosts

    def snapshot_into(self, state: Recovered) -> None:
        """Add users, vhosts and permissions to a snapshot of the durable state."""
        state.seeded = True
        state.users = [u.record() for u in self._users.values()]
        state.vhosts = list(self._vhosts)
        state.permissions = [PermissionRecord(user, vhost, c, w, r)
                             for (user, vhost), (c, w, r) in self._perms.items()]
        state.topic_permissions = [t.record() for t in self._topic.all()]
        state.limits = self.limits.records()

    def restore(self, state: Recovered) -> None:
        """Take users, vhosts and permissions from a recovered store; on a store that was
        never seeded, write the config's into it instead (first boot)."""
        if not state.seeded:
            if self._store is not None:
                for u in self._users.values():
                    self._store.put_user(u.record())
                for v in self._vhosts:
                    self._store.put_vhost(v)
                for (user, vhost), (c, w, r) in self._perms.items():
                    self._store.put_permission(PermissionRecord(user, vhost, c, w, r))
                self._store.mark_seeded()
            return
        self._users = {u.name: User(u.name, tuple(u.tags), u.password_hash, u.wampcra)
                       for u in state.users}
        self._perms = {(p.user, p.vhost): (p.configure, p.write, p.read)
                       for p in state.permissions}
        self._grants = {key: Grant(*(compile_pattern(x) for x in value))
                        for key, value in self._perms.items()}
        self._topic = TopicGrants([
            TopicPermission(t.user, t.vhost, t.exchange, t.write, t.read)
            for t in state.topic_permissions])
        self.limits = RuntimeLimits(state.limits)
        kept = dict.fromkeys(state.vhosts)
        vhosts = self._broker.vhosts
        for name in [v for v in vhosts if v not in kept]:
            del vhosts[name]  # from the config; deleted since (still empty)
        for name in kept:
            self._broker.add_vhost(name)
            vhosts[name] = vhosts.pop(name)  # in the store's order
            self._apply_vhost_limits(name)

    # -- users -----------------------------------------------------------------------------

    def list_users(self) -> list[User]:
        return list(self._users.values())

    def add_user(self, name: str, *, password: str | None = None,
                 password_hash: str | None = None, tags: Iterable[str] = ()) -> User:
        """Create or replace a user (as the HTTP API's PUT does). Give a password (stored
        as a scrypt hash and a WAMP-CRA key) or a hash (scrypt, or RabbitMQ's SHA-256), not
        both; neither (or "") makes a user who cannot log in with a password."""
        if not isinstance(name, str) or not name:
            raise PreconditionFailed("user name must be a non-empty string")
        if password is not None and password_hash is not None:
            raise PreconditionFailed("give a password or a password_hash, not both")
        wampcra = ""
        if password is not None:
            digest, wampcra = _secrets_of(password)
        elif password_hash:
            if not is_password_hash(password_hash):
                raise PreconditionFailed(
                    "password_hash is neither a RabbitMQ salted SHA-256 hash (base64 of 4 "
                    "salt bytes + 32 digest bytes) nor a gateway scrypt hash "
                    "($scrypt$ln=..,r=..,p=..$salt$key)")
            digest = password_hash
            old = self._users.get(name)
            if old is not None and old.password_hash == password_hash:
                wampcra = old.wampcra  # the same password (a tags change): keep its key
        else:
            digest = ""
        user = User(name, _tags(tags), digest, wampcra)
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
        self._topic.remove(name, None)
        self.limits.remove("user", name)
        if self._store is not None:
            self._store.delete_user(name)

    def change_password(self, name: str, password: str) -> None:
        user = self._get_user(name)
        digest, wampcra = _secrets_of(password)
        self._users[name] = replace(user, password_hash=digest, wampcra=wampcra)
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
            self._store.put_user(user.record())

    # -- vhosts ----------------------------------------------------------------------------

    @property
    def vhosts(self) -> tuple[str, ...]:
        return tuple(self._vhosts)

    def list_vhosts(self) -> list[str]:
        return list(self._vhosts)

    def vhost_exists(self, vhost: str) -> bool:
        if self.source is not None:
            return self.source.vhost_exists(vhost)
        return vhost in self._vhosts

    def add_vhost(self, name: str) -> None:
        """Create a vhost (no-op when it exists, as RabbitMQ's PUT is)."""
        if not isinstance(name, str) or not name:
            raise PreconditionFailed("vhost name must be a non-empty string")
        if name in self._vhosts:
            return
        if self._store is not None:
            self._store.put_vhost(name)
        self._broker.add_vhost(name)
        self._apply_vhost_limits(name)

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost with everything in it; its connections are closed by the broker's
        vhost-deleted hook (`Broker.on_vhost_deleted`)."""
        if name not in self._vhosts:
            raise NotFound(f"vhost '{name}' not found")
        for key in [k for k in self._perms if k[1] == name]:
            del self._perms[key]
            self._grants.pop(key, None)
        self._topic.remove(None, name)
        self.limits.remove("vhost", name)
        self._broker.delete_vhost(name)  # writes the store record itself (its store's)
        if self._store is not None and self._store is not self._broker.store:
            self._store.delete_vhost(name)

    # -- permissions -----------------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str,
                        read: str) -> None:
        if user not in self._users:
            raise NotFound(f"user '{user}' not found")
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        grant = Grant(checked_pattern("configure", configure), checked_pattern("write", write),
                       checked_pattern("read", read))
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
        return [PermissionConfig(user, vhost, c, w, r)
                for (user, vhost), (c, w, r) in self._perms.items()]

    # -- topic permissions -----------------------------------------------------------------

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str,
                              read: str) -> None:
        """Create or replace the user's topic permission on `exchange` in `vhost`."""
        if user not in self._users:
            raise NotFound(f"user '{user}' not found")
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        if not isinstance(exchange, str) or not exchange:
            raise PreconditionFailed("exchange: expected a non-empty exchange name")
        perm = TopicPermission(user, vhost, exchange, write, read)
        self._topic.put(perm)
        if self._store is not None:
            self._store.put_topic_permission(perm.record())

    def clear_topic_permissions(self, user: str, vhost: str,
                                exchange: str | None = None) -> None:
        """Remove the user's topic permission on `exchange` (on every exchange: None)."""
        keys = self._topic.remove(user, vhost, exchange)
        if not keys:
            where = f" on exchange '{exchange}'" if exchange is not None else ""
            raise NotFound(f"no topic permissions for user '{user}' in vhost '{vhost}'{where}")
        for key in keys:
            if self._store is not None:
                self._store.delete_topic_permission(*key)

    @property
    def has_topic_permissions(self) -> bool:
        """Whether any topic permission exists, or tokens may be presented, whose topic
        access comes from their scopes (publish paths skip the check otherwise)."""
        return bool(self._topic) or self.tokens.enabled or self.source is not None

    def list_topic_permissions(self) -> list[TopicPermission]:
        return self._topic.all()

    def topic_allowed(self, user: User, vhost: str, exchange: str, permission: Permission,
                      routing_key: str, *, client_id: str | None = None) -> bool:
        """True if `user` may write (publish) or read (bind) `routing_key` on the topic
        exchange; always True without a topic permission for that user, vhost, exchange.
        A token user: a scope with a routing-key pattern must allow it."""
        if user.node_local:
            return True
        if user.token is not None:
            return user.token.topic_access(vhost, exchange, permission, routing_key,
                                           self.wall_clock())
        if self.source is not None:
            return self.source.topic_allowed(user.name, vhost, exchange, permission,
                                             routing_key, client_id=client_id)
        return not self._topic or self._topic.allowed(user.name, vhost, exchange, permission,
                                                      routing_key, client_id=client_id)

    def check_topic(self, user: User, vhost: str, exchange: str, permission: Permission,
                    routing_key: str, *, client_id: str | None = None) -> None:
        """Raises `AccessRefused` (403) unless `topic_allowed`."""
        if not self.topic_allowed(user, vhost, exchange, permission, routing_key,
                                  client_id=client_id):
            raise AccessRefused(
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                f"'{vhost}' refused for user '{user.name}'")

    # -- runtime limits (`gateway.auth.limits`) ----------------------------------------------

    def vhost_limits(self, vhost: str) -> dict[str, int]:
        return self.limits.get("vhost", vhost)

    def user_limits(self, user: str) -> dict[str, int]:
        return self.limits.get("user", user)

    def list_vhost_limits(self) -> list[tuple[str, dict[str, int]]]:
        return [(v, lim) for v, lim in self.limits.all("vhost") if v in self._vhosts]

    def list_user_limits(self) -> list[tuple[str, dict[str, int]]]:
        return [(u, lim) for u, lim in self.limits.all("user") if u in self._users]

    def set_vhost_limits(self, vhost: str, limits: object) -> None:
        """Replace the vhost's limits (`set_vhost_limits`; {} clears them)."""
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        self._put_limits("vhost", vhost, check_limits("vhost", limits))

    def set_vhost_limit(self, vhost: str, name: str, value: object) -> None:
        """Set one of the vhost's limits, keeping the others (the HTTP API's PUT)."""
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        merged = {**self.vhost_limits(vhost), **check_limits("vhost", {name: value})}
        self._put_limits("vhost", vhost, merged)

    def clear_vhost_limits(self, vhost: str, name: str | None = None) -> None:
        """Clear one of the vhost's limits, or all of them (None)."""
        if vhost not in self._vhosts:
            raise NotFound(f"vhost '{vhost}' not found")
        kept = {} if name is None else {
            k: v for k, v in self.vhost_limits(vhost).items() if k != name}
        self._put_limits("vhost", vhost, kept)

    def set_user_limits(self, user: str, limits: object) -> None:
        """Add to the user's limits (`set_user_limits`, as RabbitMQ's: merged)."""
        if user not in self._users:
            raise NotFound(f"user '{user}' not found")
        merged = {**self.user_limits(user), **check_limits("user", limits)}
        self._put_limits("user", user, merged)

    def clear_user_limits(self, user: str, name: str = "all") -> None:
        """Clear one of the user's limits, or all of them ("all")."""
        if user not in self._users:
            raise NotFound(f"user '{user}' not found")
        kept = {} if name == "all" else {
            k: v for k, v in self.user_limits(user).items() if k != name}
        self._put_limits("user", user, kept)

    def vhost_limit(self, vhost: str, name: str) -> int | None:
        """The vhost's limit in force (None: no limit)."""
        return self.limits.limit("vhost", vhost, name)

    def user_limit(self, user: str, name: str) -> int | None:
        """The user's limit in force (None: no limit)."""
        return self.limits.limit("user", user, name)

    def _put_limits(self, scope: Scope, name: str, limits: dict[str, int]) -> None:
        self.limits.put(scope, name, limits)
        if self._store is not None:
            if limits:
                self._store.put_limits(LimitsRecord(scope, name, dict(limits)))
            else:
                self._store.delete_limits(scope, name)
        if scope == "vhost":
            self._apply_vhost_limits(name)

    def _apply_vhost_limits(self, vhost: str) -> None:
        """Hand max-queues to the core's vhost (over the config's default)."""
        vh = self._broker.vhosts.get(vhost)
        if vh is not None:
            if "max-queues" in self.vhost_limits(vhost):
                vh.max_queues = self.vhost_limit(vhost, "max-queues")
            else:
                vh.max_queues = self._broker.max_queues_per_vhost or None

    # -- the questions sessions ask --------------------------------------------------------

    def user(self, name: str) -> User | None:
        """The user of that name, without checking a password (None if there is none)."""
        if self.source is not None:
            tags = self.source.tags(name)  # known once logged in
            return User(name, tags) if tags is not None else None
        return self._users.get(name)

    def login(
        self,
        username: str,
        password: str,
        *,
        peer: str,
        protocol: str,
        now: float,
        then: Callable[[User | LoginRefused], None],
        mechanism: str = "PLAIN",
        loopback: bool | None = None,
    ) -> PendingCheck | None:
        """Check a password login from source address `peer` over `protocol` (for the log).
        `loopback` (whether `peer` is a loopback address) is worked out from `peer` unless
        given.

        The answer (the user, or the `LoginRefused` to send) goes to `then`: at once, and
        None is returned, unless the check is slow (scrypt) and `inline_checks` is off;
        then a `PendingCheck` is returned, and `then` is called when it finishes.
        """
        blocked = self.failed_logins.blocked_for(peer, now)
        if blocked:
            then(self._refused(username, peer, protocol, mechanism, now,
                               f"user '{username}' - address blocked for {blocked:.0f} s "
                               "more after repeated failed logins", count=False))
            return None
        if loopback is None:
            loopback = is_loopback(peer)
        if self.tokens.enabled and looks_like_token(password):
            then(self._token_login(username, password, peer, loopback, protocol, mechanism,
                                   now))
            return None
        if self.source is not None:
            return self._source_login(username, password, peer, loopback, protocol,
                                      mechanism, now, then)
        found = self._users.get(username)
        stored = found.password_hash if found is not None else ""
        if found is not None and stored and password and self._verified.hit(
                username, stored, password, now):
            then(self._conclude(username, found, password, True, peer, loopback, protocol,
                                mechanism, now))
            return None
        # every check costs one scrypt (`check_password_evenly`): an unknown name, a user
        # without a password and a legacy SHA-256 hash are checked against the decoy too
        upgraded: list[tuple[str, str]] = []

        def verify() -> bool:
            ok = check_password_evenly(stored, password)
            if ok and not is_slow_hash(stored):
                # a legacy hash matched: its scrypt successor (and a WAMP-CRA key), made
                # here, in the worker thread, and stored by `finish`
                upgraded.append(_secrets_of(password))
            return ok

        def finish(ok: bool) -> None:
            user = found
            if ok and user is not None and upgraded:
                user = self._upgrade_hash(user, stored, *upgraded[0])
            then(self._conclude(username, user, password, ok, peer, loopback, protocol,
                                mechanism, now))

        if self.inline_checks:
            finish(verify())
            return None
        return PendingCheck(verify, finish, self.check_limiter)

    def _source_login(self, username: str, password: str, peer: str, loopback: bool,
                      protocol: str, mechanism: str, now: float,
                      then: Callable[[User | LoginRefused], None]) -> PendingCheck | None:
        """The password checked by the source (RabbitMQ: a round trip, so in a worker
        thread like scrypt, unless its cache of recent successes answers)."""
        assert self.source is not None
        check = self.source.password_check(username, password)

        def finish(ok: bool) -> None:
            answer = check.finish(ok)
            if answer.tags is None:
                then(self._refused(username, peer, protocol, mechanism, now,
                                   f"user '{username}' - {answer.reason}", count=answer.count))
            elif username in self._loopback_users and not loopback:
                then(self._refused(username, peer, protocol, mechanism, now,
                                   f"user '{username}' can only connect via localhost",
                                   count=False))
            else:
                then(User(username, answer.tags))

        if check.cached or self.inline_checks:
            finish(check.verify())
            return None
        return PendingCheck(check.verify, finish, self.source.limiter or self.check_limiter)

    def _upgrade_hash(self, user: User, old_hash: str, new_hash: str, wampcra: str) -> User:
        """Replace a user's legacy (RabbitMQ SHA-256) hash by the scrypt hash of the
        password that just matched it, with a WAMP-CRA key, and persist them; unless the
        hash changed meanwhile."""
        current = self._users.get(user.name)
        if current is None or current.password_hash != old_hash:
            return user
        upgraded = replace(current, password_hash=new_hash, wampcra=wampcra)
        self._users[user.name] = upgraded
        self._write_user(upgraded)
        log.info("user %r: legacy SHA-256 password hash upgraded to scrypt", user.name)
        return upgraded

    def _conclude(self, username: str, found: User | None, password: str, ok: bool,
                  peer: str, loopback: bool, protocol: str, mechanism: str, now: float
                  ) -> User | LoginRefused:
        if found is None or not found.password_hash or not password or not ok:
            return self._refused(username, peer, protocol, mechanism, now,
                                 f"user '{username}' - invalid credentials")
        if found.name in self._loopback_users and not loopback:
            return self._refused(username, peer, protocol, mechanism, now,
                                 f"user '{username}' can only connect via localhost",
                                 count=False)
        self._verified.put(found.name, found.password_hash, password, now)
        return found

    def _token_login(self, username: str, token: str, peer: str, loopback: bool,
                     protocol: str, mechanism: str, now: float) -> User | LoginRefused:
        """A token as the password: verified here, at once (no scrypt); the user name the
        client sent is not used (the token's is)."""
        try:
            name, grant = self.tokens.verify(token)
        except TokenRefused as exc:
            return self._refused(username, peer, protocol, mechanism, now,
                                 f"user '{username}' - OAuth 2 token refused: {exc}")
        if name in self._loopback_users and not loopback:
            return self._refused(name, peer, protocol, mechanism, now,
                                 f"user '{name}' can only connect via localhost",
                                 count=False)
        log.info("login: protocol=%s address=%s user=%r with an OAuth 2 token (%d scopes, "
                 "tags %s)", protocol, peer, name, len(grant.scopes), list(grant.tags))
        return User(name, grant.tags, token=grant)

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

    def _refused(self, username: str, peer: str, protocol: str, mechanism: str, now: float,
                 reason: str, *, count: bool = True) -> LoginRefused:
        log.warning("login failed: protocol=%s address=%s user=%r: %s", protocol, peer,
                    username, reason)
        if count and self.failed_logins.failed(peer, now):
            log.warning("login: address %s blocked for %d s after %d failed logins within "
                        "%d s", peer, self.failed_logins.block, self.failed_logins.limit,
                        self.failed_logins.window)
        return LoginRefused(mechanism, reason)

    def refuse_login(self, username: str, *, peer: str, protocol: str, now: float,
                     why: str, mechanism: str = "PLAIN") -> LoginRefused:
        """Record and log a failed login decided elsewhere (a WAMP-CRA signature)."""
        return self._refused(username, peer, protocol, mechanism, now,
                             f"user '{username}' - {why}")

    def login_blocked(self, peer: str, now: float) -> bool:
        return self.failed_logins.blocked_for(peer, now) > 0

    def authenticate(self, username: str, password: str, *, loopback: bool | None = None,
                     peer: str | None = None, mechanism: str = "PLAIN",
                     protocol: str = "AMQP", now: float = 0.0) -> User:
        """`login` with the check run at once: the user, or raises `LoginRefused` (403)."""
        answer: list[User | LoginRefused] = []
        pending = self.login(username, password, peer=peer or "", protocol=protocol, now=now,
                             then=answer.append, mechanism=mechanism,
                             loopback=loopback if loopback is not None else peer is None)
        if pending is not None:
            pending.finish(pending.verify())
        result = answer[0]
        if isinstance(result, LoginRefused):
            raise result
        return result

    def wampcra_key(self, name: str) -> CraKey | None:
        """The user's WAMP-CRA key (None: no such user, or only an imported hash)."""
        user = self._users.get(name)
        if user is None or not user.wampcra:
            return None
        return CraKey.decode(user.wampcra)

    def check_vhost(self, user: User, vhost: str) -> None:
        """Raises `NotAllowed` (530) unless the vhost exists and the user has a permission
        row on it."""
        if self.source is not None and user.token is None and not user.node_local:
            refusal = self.source.vhost_refusal(user.name, vhost)
            if refusal is not None:
                raise NotAllowed(refusal)
            self._broker.add_vhost(vhost)  # RabbitMQ has it: so does this node's core
            return
        if vhost not in self._vhosts:
            raise NotAllowed(f"vhost {vhost} not found")
        if user.token is not None:
            if not user.token.vhost_access(vhost, self.wall_clock()):
                raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}'")
            return
        if (user.name, vhost) not in self._grants and not user.node_local:
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
        if user.node_local:
            return vhost in self._vhosts
        if user.token is not None:
            return vhost in self._vhosts and user.token.resource_access(
                vhost, _resource_name(resource, resource_kind), permission, self.wall_clock())
        grant = (self._grants.get((user.name, vhost)) if self.source is None
                 else self.source.grant(user.name, vhost))
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


def _secrets_of(password: str) -> tuple[str, str]:
    """The scrypt hash and the WAMP-CRA key of a new password ("" and "" for none)."""
    if not password:
        return "", ""
    return hash_password(password), derive_cra_key(password).encode()


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
