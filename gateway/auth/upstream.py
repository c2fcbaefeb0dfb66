"""Users, vhosts and permissions from a RabbitMQ cluster (`--backend rabbitmq`).

In front of RabbitMQ, gateway keeps no users of its own: RabbitMQ decides who logs in,
and its permissions decide what a user may do, on every protocol (`AuthService` takes them
from a `RabbitMQUsers`, `gateway.auth.source`; `access` decides with them as with local
ones: the same regex search, topic permissions with `{username}`, `{vhost}`,
`{client_id}`).

- Password: checked by RabbitMQ itself, by an AMQP handshake with the client's own
  credentials (connection.start-ok -> tune means the password is right, a 403 close means
  it is not; the open of the vhost that follows and its close only end the handshake
  politely: 530 there is RabbitMQ refusing the vhost, after the password was accepted).
  This works for every user: RabbitMQ's HTTP API refuses users without a management tag,
  so /api/whoami cannot check an MQTT device's password. The handshake is a blocking
  socket driving the sans-IO client (`protocols.amqp.client`) in a worker thread: the I/O
  layer already runs `PendingCheck.verify` there, so sessions and the server are
  unchanged; the nodes of `urls` are tried in order until one answers. A success is
  remembered for `auth_cache_ttl` seconds (an HMAC of the password, never the password:
  `login.VerifiedCache`) so a reconnect storm is not an upstream connection storm;
  failures are never cached and `FailedLogins` counts them as for local users. A node that
  does not answer refuses the login without counting it against the client's address.
- Tags, permissions, topic permissions, vhosts: RabbitMQ's management HTTP API, with the
  gateway's own management credentials (a user tagged `administrator`: only it may read
  other users' permissions). At login: GET /api/users/NAME, /api/users/NAME/permissions
  and /api/users/NAME/topic-permissions (every vhost of the user in three requests); then,
  every `permissions_cache_ttl` seconds (`run`), GET /api/users, /api/permissions,
  /api/topic-permissions and /api/vhosts refresh every cached user at once (four requests
  per interval, however many users are connected). A change in RabbitMQ takes effect
  within that interval; while the API does not answer, the last answer stands.

The HTTP client is the standard library's (`urllib.request`), in worker threads like the
password check: a few requests per interval need no pool, and the gateway gains no
run-time dependency.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import trio

from gateway.auth.login import VerifiedCache
from gateway.auth.permissions import Grant, Permission
from gateway.auth.source import Answer
from gateway.auth.topics import TopicGrants, TopicPermission, compile_pattern
from protocols.amqp.client import (
    ACCESS_REFUSED,
    ClientConnection,
    ConnectionClosed,
    ConnectionOpened,
)
from protocols.amqp.frames import NEED_DATA, ProtocolError

__all__ = ["RabbitMQAuthConfig", "RabbitMQUsers", "UpstreamUnavailable", "amqp_login"]

log = logging.getLogger("gateway.auth.upstream")

NOT_ALLOWED: Final = 530  # connection.open refused: the password was accepted before it
MAX_USERS: Final = 100_000  # cached users; past that the least recently used go


class UpstreamUnavailable(Exception):
    """No RabbitMQ node (or its management API) gave an answer."""


# -- configuration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RabbitMQAuthConfig:
    """This module's keys of `[backend.rabbitmq]` (the table's other keys are not ours)."""

    auth_cache_ttl: float = 60.0  # s a successful password check is remembered (0: never)
    permissions_cache_ttl: float = 30.0  # s between refreshes of tags and permissions
    auth_timeout: float = 5.0  # s for one node's AMQP handshake or one HTTP request
    auth_max_checks: int = 16  # upstream password checks at once (worker threads)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> RabbitMQAuthConfig:
        """From the `[backend.rabbitmq]` table; keys not this module's are ignored. Raises
        ValueError for a value of the wrong type or range."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in table:
                continue
            value = table[f.name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"backend.rabbitmq.{f.name}: expected a number, got {value!r}")
            if f.name == "auth_max_checks":
                if not isinstance(value, int) or value < 1:
                    raise ValueError(f"backend.rabbitmq.{f.name}: expected an integer >= 1")
            elif value < 0 or (f.name != "auth_cache_ttl" and value <= 0):
                raise ValueError(f"backend.rabbitmq.{f.name}: out of range: {value!r}")
            values[f.name] = value
        return cls(**values)


# -- the AMQP password check -------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """Where one RabbitMQ node listens for AMQP, and the vhost the check opens."""

    host: str
    port: int
    vhost: str = "/"

    @classmethod
    def parse(cls, url: str) -> Node:
        """From an amqp:// URL (RabbitMQ's URI spec: the vhost is the percent-decoded path;
        credentials in it are not used here)."""
        parts = urlsplit(url)
        if parts.scheme != "amqp" or not parts.hostname:
            raise ValueError(f"upstream URL must be amqp://HOST[:PORT][/VHOST]: {url!r}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(parts.hostname, parts.port or 5672, unquote(path) if parts.path else "/")


def amqp_login(nodes: Iterable[Node], username: str, password: str, *,
               timeout: float = 5.0) -> bool:
    """Whether RabbitMQ accepts this user name and password (blocking: a worker thread's).
    Tries the nodes in order; raises `UpstreamUnavailable` when none answers."""
    if "\0" in username or "\0" in password or not username or not password:
        return False  # cannot be said in PLAIN; RabbitMQ refuses empty passwords too
    problems = []
    for node in nodes:
        try:
            return _handshake(node, username, password, timeout)
        except (OSError, ProtocolError, UpstreamUnavailable) as exc:
            problems.append(f"{node.host}:{node.port}: {exc or type(exc).__name__}")
    raise UpstreamUnavailable("no RabbitMQ node answered: " + "; ".join(problems))


def _handshake(node: Node, username: str, password: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    client = ClientConnection(username=username, password=password, vhost=node.vhost,
                              heartbeat=0, client_properties={
                                  "connection_name": "gateway login check"})
    client.initiate()
    with socket.create_connection((node.host, node.port), timeout=timeout) as sock:
        while True:
            event = client.next_event()
            out = client.data_to_send()  # what answering the last frames queued
            if out:
                sock.sendall(out)
            if event is NEED_DATA:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamUnavailable("handshake timed out")
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    raise UpstreamUnavailable("connection closed during the handshake")
                client.receive_data(data)
            elif isinstance(event, ConnectionOpened):
                client.close()  # the password was right; end politely, wait for close-ok
                sock.sendall(client.data_to_send())
            elif isinstance(event, ConnectionClosed):
                if not event.by_server or event.reply_code == NOT_ALLOWED:
                    return True
                if event.reply_code == ACCESS_REFUSED:
                    return False
                raise UpstreamUnavailable(f"closed with {event.reply_code} "
                                          f"{event.reply_text}")


# -- the management API ------------------------------------------------------------------------

class ManagementAPI:
    """GET requests to RabbitMQ's HTTP API with the gateway's credentials (blocking)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("upstream management URL must be http://USER:PASS@HOST:PORT: "
                             f"{parts.scheme}://{parts.hostname}")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        credentials = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout = timeout

    def __repr__(self) -> str:  # never the password
        return f"ManagementAPI({self.base!r})"

    def get(self, *segments: str) -> Any:
        """The JSON at /api/SEGMENTS (each percent-encoded), or None for 404."""
        path = "/api/" + "/".join(quote(s, safe="") for s in segments)
        request = urllib.request.Request(self.base + path, headers={
            "Authorization": self._authorization, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise UpstreamUnavailable(f"GET {path}: {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise UpstreamUnavailable(f"GET {path}: {exc}") from None


# -- what is cached per user -------------------------------------------------------------------

@dataclass
class _UserEntry:
    tags: tuple[str, ...]
    grants: dict[str, Grant] = field(default_factory=dict)  # by vhost
    topics: TopicGrants = field(default_factory=TopicGrants)
    fetched: float = 0.0


def _tags(value: object) -> tuple[str, ...]:
    if isinstance(value, str):  # RabbitMQ before 3.9: "administrator,management"
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    return tuple(str(t).strip() for t in value if str(t).strip())


def _grant(row: Mapping[str, Any]) -> Grant | None:
    try:
        return Grant(*(compile_pattern(str(row.get(k, ""))) for k in
                        ("configure", "write", "read")))
    except re.error as exc:  # an Erlang regex Python cannot read: grants nothing
        log.warning("RabbitMQ permission of user %r on vhost %r not understood: %s",
                    row.get("user"), row.get("vhost"), exc)
        return None


def _entry(user: Mapping[str, Any], permissions: Iterable[Mapping[str, Any]],
           topic_permissions: Iterable[Mapping[str, Any]], now: float) -> _UserEntry:
    entry = _UserEntry(_tags(user.get("tags")), fetched=now)
    for row in permissions:
        grant = _grant(row)
        if grant is not None:
            entry.grants[str(row.get("vhost"))] = grant
    topics = []
    for row in topic_permissions:
        topics.append(TopicPermission(str(row.get("user")), str(row.get("vhost")),
                                      str(row.get("exchange")), str(row.get("write", "")),
                                      str(row.get("read", ""))))
    entry.topics = TopicGrants(topics)
    return entry


# -- the source --------------------------------------------------------------------------------

class RabbitMQUsers:
    """RabbitMQ as `AuthService`'s source of users (`gateway.auth.source.UserSource`).

    `run()` (a task of the server's) refreshes what is cached; the questions sessions ask
    are answered from the cache, at once.
    """

    def __init__(self, nodes: list[Node], management: ManagementAPI,
                 config: RabbitMQAuthConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not nodes:
            raise ValueError("at least one upstream amqp:// URL is needed")
        self.nodes = nodes
        self.api = management
        self.config = config or RabbitMQAuthConfig()
        self.clock = clock
        self.limiter: trio.CapacityLimiter | None = trio.CapacityLimiter(
            self.config.auth_max_checks)
        self.verified = VerifiedCache(ttl=self.config.auth_cache_ttl)
        self._users: OrderedDict[str, _UserEntry] = OrderedDict()
        self._vhosts: frozenset[str] = frozenset()
        self._vhosts_at: float | None = None

    @classmethod
    def from_urls(cls, amqp_urls: Iterable[str], management_url: str,
                  config: Mapping[str, Any] | RabbitMQAuthConfig | None = None
                  ) -> RabbitMQUsers:
        """From `[backend.rabbitmq]`'s `urls` and `management_url` (or `--upstream` and
        `--upstream-management`) and the table itself (this module's keys are read)."""
        if isinstance(config, Mapping):
            config = RabbitMQAuthConfig.from_dict(config)
        config = config or RabbitMQAuthConfig()
        return cls([Node.parse(u) for u in amqp_urls],
                   ManagementAPI(management_url, config.auth_timeout), config)

    # -- logins ----------------------------------------------------------------------------

    def password_check(self, name: str, password: str) -> _Check:
        cached = (self.config.auth_cache_ttl > 0 and name in self._users
                  and self.verified.hit(name, "", password, self.clock()))
        return _Check(self, name, password, cached)

    def fetch_user(self, name: str) -> _UserEntry | None:
        """The user's tags and permissions from the API (blocking); None: no such user."""
        user = self.api.get("users", name)
        if not isinstance(user, dict):
            return None
        permissions = self.api.get("users", name, "permissions") or []
        topics = self.api.get("users", name, "topic-permissions") or []
        return _entry(user, permissions, topics, self.clock())

    def fetch_vhosts(self) -> frozenset[str]:
        rows = self.api.get("vhosts") or []
        return frozenset(str(row.get("name")) for row in rows if isinstance(row, dict))

    def _store(self, name: str, entry: _UserEntry | None) -> None:
        if entry is None:
            self._users.pop(name, None)
            return
        self._users[name] = entry
        self._users.move_to_end(name)
        while len(self._users) > MAX_USERS:
            self._users.popitem(last=False)

    # -- the questions of `AuthService` ----------------------------------------------------

    def tags(self, name: str) -> tuple[str, ...] | None:
        entry = self._users.get(name)
        return entry.tags if entry is not None else None

    def vhost_exists(self, vhost: str) -> bool:
        return vhost in self._vhosts or any(vhost in e.grants for e in self._users.values())

    def vhost_refusal(self, name: str, vhost: str) -> str | None:
        """None if RabbitMQ would let the user open the vhost (it has a permission row
        there), else the 530 text RabbitMQ gives."""
        entry = self._users.get(name)
        if entry is not None and vhost in entry.grants:
            return None
        if not self.vhost_exists(vhost):
            return f"vhost {vhost} not found"
        return f"access to vhost '{vhost}' refused for user '{name}'"

    def grant(self, name: str, vhost: str) -> Grant | None:
        entry = self._users.get(name)
        return entry.grants.get(vhost) if entry is not None else None

    def topic_allowed(self, name: str, vhost: str, exchange: str, permission: Permission,
                      routing_key: str, *, client_id: str | None = None) -> bool:
        entry = self._users.get(name)
        if entry is None:
            return False
        return entry.topics.allowed(name, vhost, exchange, permission, routing_key,
                                    client_id=client_id)

    # -- refreshing ------------------------------------------------------------------------

    def fetch_all(self) -> tuple[dict[str, _UserEntry], frozenset[str]]:
        """Every user's entry and every vhost, in four requests (blocking)."""
        now = self.clock()
        users = {str(u.get("name")): u for u in self.api.get("users") or []
                 if isinstance(u, dict)}
        permissions: dict[str, list[dict[str, Any]]] = {}
        for row in self.api.get("permissions") or []:
            permissions.setdefault(str(row.get("user")), []).append(row)
        topics: dict[str, list[dict[str, Any]]] = {}
        for row in self.api.get("topic-permissions") or []:
            topics.setdefault(str(row.get("user")), []).append(row)
        entries = {name: _entry(u, permissions.get(name, []), topics.get(name, []), now)
                   for name, u in users.items()}
        return entries, self.fetch_vhosts()

    async def refresh(self) -> None:
        """Refresh the vhosts and every cached user (users RabbitMQ no longer has are
        dropped, so they hold nothing). Raises `UpstreamUnavailable`."""
        entries, vhosts = await trio.to_thread.run_sync(self.fetch_all)
        self._vhosts, self._vhosts_at = vhosts, self.clock()
        for name in list(self._users):
            self._store(name, entries.get(name))

    async def run(self) -> None:
        """Refresh every `permissions_cache_ttl` seconds, for ever (a server task)."""
        failing = False
        while True:
            try:
                await self.refresh()
                if failing:
                    log.warning("RabbitMQ management API answers again")
                failing = False
            except UpstreamUnavailable as exc:
                if not failing:
                    log.warning("RabbitMQ management API did not answer (cached users and "
                                "permissions stay in force): %s", exc)
                failing = True
            await trio.sleep(self.config.permissions_cache_ttl)


class _Check:
    """One password check against RabbitMQ (`gateway.auth.source.SourceCheck`)."""

    def __init__(self, source: RabbitMQUsers, name: str, password: str, cached: bool) -> None:
        self.source = source
        self.name = name
        self.password = password
        self.cached = cached
        self._entry: _UserEntry | None = None
        self._vhosts: frozenset[str] | None = None
        self._problem = ""

    def verify(self) -> bool:
        """The AMQP handshake, then the user's tags and permissions (a worker thread)."""
        if self.cached:
            return True
        source = self.source
        try:
            if not amqp_login(source.nodes, self.name, self.password,
                              timeout=source.config.auth_timeout):
                return False
            self._entry = source.fetch_user(self.name)
            at = source._vhosts_at
            if at is None or source.clock() - at >= source.config.permissions_cache_ttl:
                self._vhosts = source.fetch_vhosts()
        except UpstreamUnavailable as exc:
            self._problem = str(exc)
            return False
        return True

    def finish(self, ok: bool) -> Answer:
        source = self.source
        if self._problem:
            return Answer(None, f"RabbitMQ did not answer: {self._problem}", count=False)
        if not ok:
            return Answer(None, "invalid credentials (RabbitMQ refused them)")
        if self._vhosts is not None:
            source._vhosts, source._vhosts_at = self._vhosts, source.clock()
        if not self.cached:
            if self._entry is None:
                return Answer(None, "accepted by RabbitMQ but not in its management API",
                              count=False)
            source._store(self.name, self._entry)
            if source.config.auth_cache_ttl > 0:
                source.verified.put(self.name, "", self.password, source.clock())
        tags = source.tags(self.name)
        if tags is None:  # dropped meanwhile (deleted in RabbitMQ)
            return Answer(None, "no longer known to RabbitMQ")
        return Answer(tags)
