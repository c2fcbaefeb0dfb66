"""Configuration: a TOML file read once at start into frozen dataclasses.

Where the default comes from
----------------------------
The default configuration is `conf/gateway.toml` in the source tree. The package carries a
byte-for-byte copy as the resource `gateway/default.toml`, read with `importlib.resources`,
so the same default is found by an editable install, a wheel and the Docker image alike
(none of them can rely on the source tree sitting next to the installed package).
`tests/test_packaging.py` fails when the two files differ: edit `conf/gateway.toml` and copy
it over `gateway/default.toml`.

How a file is read
------------------
`load_config(path)` reads the embedded default and then the file, and merges them: every key
missing from the file keeps its default, so a file only names what it changes. The
`[[users]]`, `[[vhosts]]` and `[[permissions]]` tables go together: a file that has any of
them replaces all three (a missing one is empty), so a default `guest` never survives into a
file that defines its own users. The merged document is then validated in full; a problem
raises `ConfigError` naming the file and the key path (`listeners.amqp`, `users[1].name`).

Relative paths (`store.data_dir`) are kept relative and so resolve against the working
directory of the process, as the command line's `--data-dir` does.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

from gateway.auth.oauth import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, load_signing_key
from gateway.auth.passwords import derive_cra_key, hash_password, is_password_hash
from gateway.auth.permissions import PermissionConfig

__all__ = [
    "AMQPConfig",
    "AuthConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "DefinitionsConfig",
    "KEEP",
    "Keep",
    "Limits",
    "Listeners",
    "LogConfig",
    "MQTTConfig",
    "PermissionConfig",
    "PortError",
    "RabbitMQBackendConfig",
    "StompConfig",
    "StoreConfig",
    "TLSConfig",
    "TLS_LISTENERS",
    "TLS_VERSIONS",
    "OAuth2Config",
    "UserConfig",
    "default_config_text",
    "load_config",
    "parse_port",
    "with_overrides",
]

DEFAULT_RESOURCE: Final = "default.toml"
DEFAULT_SOURCE: Final = "<embedded default config>"

_MAX_PORT: Final = 65535
_AMQP_LONG_MAX: Final = 0xFFFFFFFF
_AMQP_SHORT_MAX: Final = 0xFFFF
_MAX_MESSAGE_SIZE: Final = 512 * 1024 * 1024  # RabbitMQ's hard ceiling as well
_USER_TABLES: Final = ("users", "vhosts", "permissions")
_SECTIONS: Final = ("listeners", "store", "definitions", "amqp", "stomp", "limits", "auth", "mqtt",
                    "tls", "wamp", "http", "oauth2", "log", "backend")
BACKENDS: Final = ("embedded", "rabbitmq")
# tables inside a section merged key by key too ([backend.rabbitmq])
_SUBTABLES: Final = {"backend": ("rabbitmq",)}
SESSION_QUEUE_TYPES: Final = ("quorum", "classic")
# the TLS listeners (RabbitMQ's ports: 5671, 8883, 61614, 15671, 15673, 15676), all off by
# default; each needs [tls] certfile and keyfile
TLS_LISTENERS: Final = ("amqps", "mqtts", "stomps", "https", "web_stomp_tls", "web_mqtt_tls")
TLS_VERSIONS: Final = ("TLSv1.2", "TLSv1.3")
_VERIFY_MODES: Final = ("none", "peer", "require")


class ConfigError(Exception):
    """A configuration problem; the message names the source and the key path."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class PortError(ValueError, argparse.ArgumentTypeError):
    """A bad port on the command line (argparse prints the message as it is)."""


class Keep(Enum):
    """Marker for `with_overrides`: leave this setting as the config file has it."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True)
class Listeners:
    host: str
    amqp: int | None
    mqtt: int | None
    stomp: int | None
    http: int | None
    # WebSocket-only listeners as RabbitMQ's Web-STOMP and Web-MQTT plugins have them
    # (path /ws); the HTTP port's /ws serves every WebSocket protocol already
    web_stomp: int | None = None
    web_mqtt: int | None = None
    # the same over TLS (see TLS_LISTENERS and [tls]); https serves what http serves
    amqps: int | None = None
    mqtts: int | None = None
    stomps: int | None = None
    https: int | None = None
    web_stomp_tls: int | None = None
    web_mqtt_tls: int | None = None

    def ports(self) -> dict[str, int | None]:
        """Each protocol's port (None = no listener), in a fixed order."""
        return {"amqp": self.amqp, "mqtt": self.mqtt, "stomp": self.stomp, "http": self.http}

    def tls_ports(self) -> dict[str, int | None]:
        """Each TLS listener's port (None = no listener), in TLS_LISTENERS order."""
        return {name: getattr(self, name) for name in TLS_LISTENERS}


@dataclass(frozen=True)
class StoreConfig:
    data_dir: Path
    fsync: bool
    # bytes of message bodies held in memory, over all queues, past which queues keep the
    # bodies of newly arriving messages on disk only (paging)
    paging_threshold: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class DefinitionsConfig:
    file: Path | None = None  # a RabbitMQ definitions JSON file imported at every start


@dataclass(frozen=True)
class AMQPConfig:
    frame_max: int
    channel_max: int
    heartbeat: int
    consumer_timeout: int = 1_800_000  # ms; 0 = none


@dataclass(frozen=True)
class StompConfig:
    max_frame_size: int
    max_headers: int
    max_header_length: int
    heartbeat_min: int
    allow_anonymous: bool
    anonymous_user: str
    # a client on a TLS port with a verified certificate and no login header logs in as the
    # certificate's common name (RabbitMQ's stomp.ssl_cert_login)
    ssl_cert_login: bool = False


@dataclass(frozen=True)
class MQTTConfig:
    default_vhost: str
    allow_anonymous: bool
    anonymous_user: str
    max_packet_size: int
    max_keepalive: int
    max_session_expiry: int
    topic_alias_maximum: int
    receive_maximum: int
    retained_max_messages: int
    retained_max_bytes: int
    # a client on a TLS port with a verified certificate and no user name logs in as the
    # certificate's common name (RabbitMQ's mqtt.ssl_cert_login)
    ssl_cert_login: bool = False
    # seconds between two publications of the $SYS/broker/... topics (0 = none), as
    # Mosquitto's sys_interval
    sys_interval: int = 10


@dataclass(frozen=True)
class TLSConfig:
    """The [tls] section: one server certificate for every TLS listener."""

    certfile: Path | None = None  # PEM: the server certificate (and its chain)
    keyfile: Path | None = None  # PEM: its private key
    cafile: Path | None = None  # PEM: CAs a client certificate must be signed by
    verify: str = "none"  # "none", "peer" (ask, check if given), "require" (must give one)
    minimum_version: str = "TLSv1.2"
    handshake_timeout: int = 5_000  # ms for a client to finish the TLS handshake


@dataclass(frozen=True)
class Limits:
    max_message_size: int
    max_connections: int
    connection_buffer: int
    memory_high_watermark: int
    # every limit below: docs/limits.md; 0 = no limit where a count is meant
    handshake_timeout: int = 10_000  # ms from accept to a logged-in session
    handshake_max_bytes: int = 65_536  # bytes a client may send before it is logged in
    send_timeout: int = 15_000  # ms a write to a client may make no progress
    max_connections_per_user: int = 0
    max_connections_per_address: int = 0
    consumer_max_per_channel: int = 0
    max_queues_per_vhost: int = 0
    websocket_max_message_size: int = 16 * 1024 * 1024
    # delayed messages one vhost holds (x-delayed-message exchanges, MQTT $delayed/)
    delayed_max_messages: int = 100_000
    delayed_max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class UserConfig:
    name: str
    password_hash: str
    tags: tuple[str, ...]
    wampcra: str = ""  # the WAMP-CRA key of a plain `password` (`CraKey.encode()`)


@dataclass(frozen=True)
class AuthConfig:
    users: tuple[UserConfig, ...]
    vhosts: tuple[str, ...]
    permissions: tuple[PermissionConfig, ...]
    loopback_users: frozenset[str]
    # failed logins per source address: `failed_login_limit` within `failed_login_window`
    # seconds block the address for `failed_login_block` seconds (limit 0 = never)
    failed_login_limit: int = 10
    failed_login_window: int = 60
    failed_login_block: int = 60
    failed_login_exempt: tuple[str, ...] = ()  # networks never blocked ("127.0.0.0/8")


@dataclass(frozen=True)
class HTTPConfig:
    """What a browser may do (see gateway/server/origin.py)."""

    # Origins ("https://app.example.com", "http://localhost:8080"; "*" = any) besides the
    # broker's own from which WebSocket upgrades and API writes are accepted.
    allowed_origins: tuple[str, ...] = ()
    # Host header names besides IP addresses and "localhost" that requests may carry
    # ("broker.example.com"; "*" = any): a defence against DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class WAMPConfig:
    allow_anonymous: bool = False  # a HELLO without authid/authmethods joins as anonymous_user
    anonymous_user: str = "guest"


LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogConfig:
    """Where `gateway serve` logs (see gateway/logging_setup.py)."""

    file: Path | None = None  # None: standard error
    level: str = "info"  # one of LOG_LEVELS
    json: bool = False  # one JSON object per line instead of text


@dataclass(frozen=True)
class OAuth2Config:
    """OAuth 2.0 / JWT access tokens as passwords (gateway/auth/oauth.py); RabbitMQ's
    rabbitmq_auth_backend_oauth2 names. `resource_server_id` "" = off."""

    resource_server_id: str = ""
    signing_keys: tuple[tuple[str, Path], ...] = ()  # key id -> PEM (or secret) file
    default_key: str = ""  # for tokens whose header names no `kid`
    algorithms: tuple[str, ...] = ()  # () = every one that fits the key
    preferred_username_claims: tuple[str, ...] = ()  # tried before "sub" and "client_id"
    additional_scopes_key: str = ""  # claims (dotted paths, space-separated) with scopes
    scope_prefix: str = ""  # "" = resource_server_id + "."


@dataclass(frozen=True)
class RabbitMQBackendConfig:
    """`[backend.rabbitmq]`: the RabbitMQ cluster a `rabbitmq` backend fronts."""

    urls: tuple[str, ...] = ()  # amqp://USER:PASS@HOST:PORT/VHOST, one per node
    management_url: str = ""  # http://USER:PASS@HOST:PORT, an administrator
    session_queue_type: str = "quorum"  # MQTT persistent session queues
    heartbeat: int = 30  # s, the upstream connection's AMQP heartbeat (0 = off)
    prefetch: int = 100  # unacknowledged upstream deliveries per consumed queue
    # retained MQTT messages: one stream every node reads (gateway/upstream/retained.py)
    retained_stream: str = "gateway.retained"
    retained_max_age: str = "7D"  # the stream's x-max-age ("" = none)
    retained_max_bytes: int = 0  # the stream's x-max-length-bytes (0 = none)
    retained_segment_bytes: int = 4 * 1024 * 1024  # x-stream-max-segment-size-bytes
    retained_refresh: int = 86400  # s after which a live message is appended again (0 = never)
    # the keys gateway/auth/upstream.py reads (RabbitMQAuthConfig.from_dict)
    auth: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BackendConfig:
    """`[backend]`: embedded (own core and store) or rabbitmq (a RabbitMQ cluster)."""

    kind: str = "embedded"
    workers: int = 1
    rabbitmq: RabbitMQBackendConfig = RabbitMQBackendConfig()


@dataclass(frozen=True)
class Config:
    listeners: Listeners
    store: StoreConfig
    amqp: AMQPConfig
    stomp: StompConfig
    limits: Limits
    auth: AuthConfig
    mqtt: MQTTConfig
    definitions: DefinitionsConfig = DefinitionsConfig()
    tls: TLSConfig = TLSConfig()
    http: HTTPConfig = HTTPConfig()
    wamp: WAMPConfig = WAMPConfig()
    oauth2: OAuth2Config = OAuth2Config()
    log: LogConfig = LogConfig()
    backend: BackendConfig = BackendConfig()


# --------------------------------------------------------------------------- public API


def default_config_text() -> str:
    """The embedded default config file, as text."""
    return resources.files("gateway").joinpath(DEFAULT_RESOURCE).read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file merged over the embedded default (None = default only)."""
    defaults = _parse_toml(default_config_text(), DEFAULT_SOURCE)
    if path is None:
        return _build(defaults, DEFAULT_SOURCE)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text: {exc}") from exc
    document = _parse_toml(text, source)
    # with the rabbitmq backend the AMQP listener is off unless this file gives it another
    # port than the default's (a copy of the default file keeps it off)
    listeners, default_listeners = document.get("listeners"), defaults.get("listeners")
    amqp_set = (isinstance(listeners, dict) and "amqp" in listeners
                and isinstance(default_listeners, dict)
                and listeners["amqp"] != default_listeners.get("amqp"))
    return _build(_merge(defaults, document, source), source, amqp_set)


def parse_port(text: str) -> int | None:
    """A port from the command line: "off" -> None (no listener), "0".."65535" -> int.

    0 asks the OS for a free port. Raises `PortError` (a ValueError) otherwise.
    """
    value = text.strip()
    if value.lower() == "off":
        return None
    if value.isascii() and value.isdigit():
        port = int(value)
        if port <= _MAX_PORT:
            return port
    raise PortError(
        f"invalid port {text!r}: expected an integer from 0 to {_MAX_PORT} "
        "(0 = pick a free port) or 'off' (no listener)"
    )


def with_overrides(
    config: Config,
    *,
    host: str | None = None,
    amqp_port: int | None | Keep = KEEP,
    mqtt_port: int | None | Keep = KEEP,
    stomp_port: int | None | Keep = KEEP,
    http_port: int | None | Keep = KEEP,
    web_stomp_port: int | None | Keep = KEEP,
    web_mqtt_port: int | None | Keep = KEEP,
    data_dir: Path | str | None = None,
    tls_ports: Mapping[str, int | None | Keep] | None = None,
    backend: str | None = None,
    upstream: Iterable[str] | None = None,
    upstream_management: str | None = None,
    workers: int | None = None,
) -> Config:
    """The config with command-line values applied.

    For a port, None means "off" (no listener), so "not given" is `KEEP`; use `KEEP` as the
    argparse default of the port flags (argparse does not pass non-string defaults through
    the `type` function). For host and data_dir, None means "not given". `tls_ports` gives
    TLS listeners by name (`{"amqps": 0}`); turning one on needs the file's [tls] section.
    `backend`, `upstream` (URLs, replacing the file's), `upstream_management` and `workers`
    override `[backend]`; with the rabbitmq backend the AMQP listener is off unless the
    file or `amqp_port` sets it.
    """
    source = "command line"
    listeners = config.listeners
    if host is not None:
        if not host.strip():
            raise ConfigError(source, "listeners.host", "must not be empty")
        listeners = replace(listeners, host=host)
    requested = {"amqp": amqp_port, "mqtt": mqtt_port, "stomp": stomp_port, "http": http_port,
                 "web_stomp": web_stomp_port, "web_mqtt": web_mqtt_port, **(tls_ports or {})}
    web = {"web_stomp": listeners.web_stomp, "web_mqtt": listeners.web_mqtt}
    ports = {**listeners.ports(), **web, **listeners.tls_ports()}
    for name, port in requested.items():
        if isinstance(port, Keep):
            continue
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT
        ):
            raise ConfigError(
                source, f"listeners.{name}", f"port must be 0-{_MAX_PORT} or off, got {port!r}"
            )
        ports[name] = port
    unknown = sorted(set(ports) - set(listeners.ports()) - set(web) - set(TLS_LISTENERS))
    if unknown:
        raise ConfigError(source, f"listeners.{unknown[0]}", "no such listener")
    changes: dict[str, Any] = dict(ports)
    listeners = replace(listeners, **changes)
    _check_tls(config.tls, listeners, source)
    store = config.store
    if data_dir is not None:
        if not str(data_dir).strip():
            raise ConfigError(source, "store.data_dir", "must not be empty")
        store = replace(store, data_dir=Path(data_dir).expanduser())
    chosen = _backend_overrides(config.backend, source, backend, upstream, upstream_management,
                                workers)
    if (chosen.kind == "rabbitmq" and config.backend.kind != "rabbitmq"
            and isinstance(amqp_port, Keep) and listeners.amqp == _default_amqp_port()):
        # switched to rabbitmq here: the AMQP listener is off unless set (as in load_config)
        listeners = replace(listeners, amqp=None)
    return replace(config, listeners=listeners, store=store, backend=chosen)


def _default_amqp_port() -> object:
    listeners = _parse_toml(default_config_text(), DEFAULT_SOURCE).get("listeners")
    return listeners.get("amqp") if isinstance(listeners, dict) else None


def _backend_overrides(config: BackendConfig, source: str, kind: str | None,
                       upstream: Iterable[str] | None, management: str | None,
                       workers: int | None) -> BackendConfig:
    if kind is None and upstream is None and management is None and workers is None:
        return config
    backend = config
    if kind is not None:
        if kind not in BACKENDS:
            raise ConfigError(source, "backend.kind",
                              f"must be one of {', '.join(BACKENDS)}, got {kind!r}")
        backend = replace(backend, kind=kind)
    rabbitmq = backend.rabbitmq
    if upstream is not None:
        urls = tuple(upstream)
        for url in urls:
            problem = upstream_url_problem(url)
            if problem is not None:
                raise ConfigError(source, "--upstream", problem)
        rabbitmq = replace(rabbitmq, urls=urls)
    if management is not None:
        problem = management_url_problem(management)
        if problem is not None:
            raise ConfigError(source, "--upstream-management", problem)
        rabbitmq = replace(rabbitmq, management_url=management)
    if workers is not None:
        if workers < 1:
            raise ConfigError(source, "--workers", f"must be 1 or more, got {workers}")
        backend = replace(backend, workers=workers)
    backend = replace(backend, rabbitmq=rabbitmq)
    _check_backend(backend, source)
    return backend


# --------------------------------------------------------------------------- reading


_Doc: TypeAlias = dict[str, object]


def _parse_toml(text: str, source: str) -> _Doc:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc


def _merge(defaults: _Doc, document: _Doc, source: str) -> _Doc:
    """The document's keys over the defaults', one section deep (see the module doc)."""
    merged: _Doc = {}
    for key, value in defaults.items():
        if key in _SECTIONS and isinstance(value, dict):
            override = document.get(key, {})
            if not isinstance(override, dict):
                raise ConfigError(source, key, f"must be a table, got {_kind(override)}")
            merged[key] = {**value, **override}
            for sub in _SUBTABLES.get(key, ()):
                inner = override.get(sub)
                if isinstance(inner, dict) and isinstance(value.get(sub), dict):
                    merged[key][sub] = {**value[sub], **inner}  # type: ignore[index]
        elif key not in _USER_TABLES:
            merged[key] = value
    if any(key in document for key in _USER_TABLES):
        for key in _USER_TABLES:
            merged[key] = document.get(key, [])
    else:
        for key in _USER_TABLES:
            merged[key] = defaults.get(key, [])
    for key, value in document.items():
        if key not in merged:
            merged[key] = value  # unknown: kept so validation reports it by name
    return merged


class _Table:
    """One TOML table being read: typed getters that know their key path, and a check
    that every key present was read (so a misspelt key is an error, not ignored)."""

    def __init__(self, source: str, path: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"must be a table, got {_kind(data)}")
        self.source = source
        self.path = path
        self.data: Mapping[str, object] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> object:
        self.seen.add(name)
        if name not in self.data:
            raise self.error(name, "missing")
        return self.data[name]

    def string(self, name: str, *, allow_empty: bool = False) -> str:
        value = self.raw(name)
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {_kind(value)}")
        if not allow_empty and not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {_kind(value)}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {value}")
        return value

    def port(self, name: str) -> int | None:
        value = self.raw(name)
        if value == "off":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_PORT:
            return value
        raise self.error(
            name,
            f'must be a port number 0-{_MAX_PORT} (0 = pick a free port) or "off", got {value!r}',
        )

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(name, f"must be a list of strings, got {_kind(value)}")
        return tuple(str(item) for item in value)

    def table(self, name: str) -> _Table:
        return _Table(self.source, self.key(name), self.raw(name))

    def tables(self, name: str) -> list[_Table]:
        value = self.raw(name)
        if not isinstance(value, list):
            raise self.error(name, f"must be an array of tables ([[{name}]]), got {_kind(value)}")
        return [_Table(self.source, f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]

    def regex(self, name: str) -> str:
        pattern = self.string(name, allow_empty=True)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.error(name, f"not a valid regular expression {pattern!r}: {exc}") from exc
        return pattern

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key" + _did_you_mean(unknown[0], self.seen))


def _build(document: _Doc, source: str, amqp_set: bool = False) -> Config:
    root = _Table(source, "", document)

    listeners_t = root.table("listeners")
    listeners = Listeners(
        host=listeners_t.string("host"),
        amqp=listeners_t.port("amqp"),
        mqtt=listeners_t.port("mqtt"),
        stomp=listeners_t.port("stomp"),
        http=listeners_t.port("http"),
        web_stomp=listeners_t.port("web_stomp"),
        web_mqtt=listeners_t.port("web_mqtt"),
        **{name: listeners_t.port(name) for name in TLS_LISTENERS},
    )
    listeners_t.done()

    store_t = root.table("store")
    store = StoreConfig(
        data_dir=Path(store_t.string("data_dir")).expanduser(),
        fsync=store_t.boolean("fsync"),
        paging_threshold=store_t.integer("paging_threshold", 0, 2**50),
    )
    store_t.done()

    definitions_t = root.table("definitions")
    definitions_file = definitions_t.string("file", allow_empty=True)
    definitions = DefinitionsConfig(
        file=Path(definitions_file).expanduser() if definitions_file.strip() else None)
    definitions_t.done()

    amqp_t = root.table("amqp")
    amqp = AMQPConfig(
        frame_max=amqp_t.integer("frame_max", 4096, _AMQP_LONG_MAX),
        channel_max=amqp_t.integer("channel_max", 1, _AMQP_SHORT_MAX),
        heartbeat=amqp_t.integer("heartbeat", 0, _AMQP_SHORT_MAX),
        consumer_timeout=amqp_t.integer("consumer_timeout", 0, 2**53),
    )
    amqp_t.done()

    stomp_t = root.table("stomp")
    stomp = StompConfig(
        max_frame_size=stomp_t.integer("max_frame_size", 1024, _MAX_MESSAGE_SIZE),
        max_headers=stomp_t.integer("max_headers", 1, 100_000),
        max_header_length=stomp_t.integer("max_header_length", 64, _MAX_MESSAGE_SIZE),
        heartbeat_min=stomp_t.integer("heartbeat_min", 0, 3_600_000),
        allow_anonymous=stomp_t.boolean("allow_anonymous"),
        anonymous_user=stomp_t.string("anonymous_user"),
        ssl_cert_login=stomp_t.boolean("ssl_cert_login"),
    )
    stomp_t.done()

    limits_t = root.table("limits")
    limits = Limits(
        max_message_size=limits_t.integer("max_message_size", 1, _MAX_MESSAGE_SIZE),
        max_connections=limits_t.integer("max_connections", 1, 10_000_000),
        connection_buffer=limits_t.integer("connection_buffer", 4096, 2**40),
        memory_high_watermark=limits_t.integer("memory_high_watermark", 1, 2**50),
        handshake_timeout=limits_t.integer("handshake_timeout", 100, 3_600_000),
        handshake_max_bytes=limits_t.integer("handshake_max_bytes", 4096, _MAX_MESSAGE_SIZE),
        send_timeout=limits_t.integer("send_timeout", 100, 3_600_000),
        max_connections_per_user=limits_t.integer("max_connections_per_user", 0, 10_000_000),
        max_connections_per_address=limits_t.integer("max_connections_per_address", 0,
                                                     10_000_000),
        consumer_max_per_channel=limits_t.integer("consumer_max_per_channel", 0, 10_000_000),
        max_queues_per_vhost=limits_t.integer("max_queues_per_vhost", 0, 10_000_000),
        websocket_max_message_size=limits_t.integer("websocket_max_message_size", 1024,
                                                    _MAX_MESSAGE_SIZE),
        delayed_max_messages=limits_t.integer("delayed_max_messages", 0, 1_000_000_000),
        delayed_max_bytes=limits_t.integer("delayed_max_bytes", 0, 2**50),
    )
    limits_t.done()

    mqtt_t = root.table("mqtt")
    mqtt = MQTTConfig(
        default_vhost=mqtt_t.string("default_vhost"),
        allow_anonymous=mqtt_t.boolean("allow_anonymous"),
        anonymous_user=mqtt_t.string("anonymous_user"),
        max_packet_size=mqtt_t.integer("max_packet_size", 64, 268_435_460),
        max_keepalive=mqtt_t.integer("max_keepalive", 0, _AMQP_SHORT_MAX),
        max_session_expiry=mqtt_t.integer("max_session_expiry", 0, _AMQP_LONG_MAX),
        topic_alias_maximum=mqtt_t.integer("topic_alias_maximum", 0, _AMQP_SHORT_MAX),
        receive_maximum=mqtt_t.integer("receive_maximum", 1, _AMQP_SHORT_MAX),
        retained_max_messages=mqtt_t.integer("retained_max_messages", 0, 2**40),
        retained_max_bytes=mqtt_t.integer("retained_max_bytes", 0, 2**50),
        ssl_cert_login=mqtt_t.boolean("ssl_cert_login"),
        sys_interval=mqtt_t.integer("sys_interval", 0, 86_400),
    )
    mqtt_t.done()

    http_t = root.table("http")
    http = HTTPConfig(
        allowed_origins=tuple(_origin(http_t, o) for o in http_t.strings("allowed_origins")),
        allowed_hosts=tuple(h.strip().lower() for h in http_t.strings("allowed_hosts")),
    )
    http_t.done()

    wamp_t = root.table("wamp")
    wamp = WAMPConfig(
        allow_anonymous=wamp_t.boolean("allow_anonymous"),
        anonymous_user=wamp_t.string("anonymous_user"),
    )
    wamp_t.done()

    log_t = root.table("log")
    log_file = log_t.string("file", allow_empty=True)
    log_level = log_t.string("level").strip().lower()
    if log_level not in LOG_LEVELS:
        raise log_t.error("level", f"must be one of {', '.join(LOG_LEVELS)}, got "
                                   f"{log_t.data.get('level')!r}")
    log_config = LogConfig(file=Path(log_file).expanduser() if log_file.strip() else None,
                           level=log_level, json=log_t.boolean("json"))
    log_t.done()

    tls = _build_tls(root)
    _check_tls(tls, listeners, source)
    auth = _build_auth(root)
    oauth2 = _build_oauth2(root)
    backend = _build_backend(root)
    if backend.kind == "rabbitmq" and not amqp_set:
        listeners = replace(listeners, amqp=None)
    root.done()
    return Config(listeners=listeners, store=store, amqp=amqp, stomp=stomp, limits=limits,
                  auth=auth, mqtt=mqtt,
                  definitions=definitions, tls=tls, http=http, wamp=wamp, oauth2=oauth2,
                  log=log_config, backend=backend)


_RABBITMQ_AUTH_KEYS: Final = ("auth_cache_ttl", "permissions_cache_ttl", "auth_timeout",
                              "auth_max_checks")


def _build_backend(root: _Table) -> BackendConfig:
    table = root.table("backend")
    kind = table.string("kind").strip()
    if kind not in BACKENDS:
        raise table.error("kind", f"must be one of {', '.join(BACKENDS)}, got {kind!r}")
    workers = table.integer("workers", 1, 1024)
    rt = table.table("rabbitmq")
    urls = rt.strings("urls")
    for i, url in enumerate(urls):
        problem = upstream_url_problem(url)
        if problem is not None:
            raise ConfigError(rt.source, f"{rt.key('urls')}[{i}]", problem)
    management_url = rt.string("management_url", allow_empty=True).strip()
    if management_url:
        problem = management_url_problem(management_url)
        if problem is not None:
            raise rt.error("management_url", problem)
    queue_type = rt.string("session_queue_type").strip()
    if queue_type not in SESSION_QUEUE_TYPES:
        raise rt.error("session_queue_type",
                       f"must be one of {', '.join(SESSION_QUEUE_TYPES)}, got {queue_type!r}")
    auth: dict[str, Any] = {}
    for key in _RABBITMQ_AUTH_KEYS:
        value = rt.raw(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise rt.error(key, f"must be a number, got {_kind(value)}")
        if key == "auth_max_checks" and (not isinstance(value, int) or value < 1):
            raise rt.error(key, f"must be an integer >= 1, got {value!r}")
        if value < 0 or (key != "auth_cache_ttl" and value <= 0):
            raise rt.error(key, f"must be greater than 0, got {value!r}")
        auth[key] = value
    rabbitmq = RabbitMQBackendConfig(
        urls=urls, management_url=management_url, session_queue_type=queue_type,
        heartbeat=rt.integer("heartbeat", 0, _AMQP_SHORT_MAX),
        prefetch=rt.integer("prefetch", 1, _AMQP_SHORT_MAX), auth=auth,
        **_build_retained(rt))
    rt.done()
    table.done()
    backend = BackendConfig(kind=kind, workers=workers, rabbitmq=rabbitmq)
    _check_backend(backend, root.source)
    return backend


_STREAM_AGE: Final = re.compile(r"^(\d+)([YMDhms])$")
_STREAM_AGE_UNIT: Final = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600,
                           "m": 60, "s": 1}


def stream_max_age_seconds(max_age: str) -> int | None:
    """RabbitMQ's stream `x-max-age` (`7D`, `12h`, `30m`; units Y M D h m s) in seconds;
    None if it is not one."""
    match = _STREAM_AGE.match(max_age)
    if match is None:
        return None
    return int(match[1]) * _STREAM_AGE_UNIT[match[2]]


def _build_retained(rt: _Table) -> dict[str, Any]:
    """The retained stream's keys of `[backend.rabbitmq]`."""
    name = rt.string("retained_stream").strip()
    if name.startswith("amq."):
        raise rt.error("retained_stream", f"'amq.*' names are RabbitMQ's own, got {name!r}")
    max_age = rt.string("retained_max_age", allow_empty=True).strip()
    age = stream_max_age_seconds(max_age) if max_age else None
    if max_age and not age:
        raise rt.error("retained_max_age", "must be RabbitMQ's x-max-age: a number > 0 and a "
                       f"unit of Y M D h m s (e.g. \"7D\"), or \"\" for none; got {max_age!r}")
    refresh = rt.integer("retained_refresh", 0, 10 * 365 * 86400)
    if age is not None and not 0 < refresh < age:
        raise rt.error("retained_refresh", f"must be greater than 0 and less than "
                       f"retained_max_age ({age} s), or the stream loses live messages; "
                       f"got {refresh}")
    return {"retained_stream": name, "retained_max_age": max_age,
            "retained_max_bytes": rt.integer("retained_max_bytes", 0, 2**62),
            "retained_segment_bytes": rt.integer("retained_segment_bytes", 0, 2**31),
            "retained_refresh": refresh}


def _check_backend(backend: BackendConfig, source: str) -> None:
    """What a backend needs to start: RabbitMQ's URLs; one worker when embedded."""
    if backend.kind == "rabbitmq":
        if not backend.rabbitmq.urls:
            raise ConfigError(source, "backend.rabbitmq.urls",
                              'backend "rabbitmq" needs the URL of at least one RabbitMQ node '
                              "(--upstream amqp://USER:PASS@HOST:PORT/VHOST)")
        if not backend.rabbitmq.management_url:
            raise ConfigError(source, "backend.rabbitmq.management_url",
                              'backend "rabbitmq" needs RabbitMQ\'s management API '
                              "(--upstream-management http://USER:PASS@HOST:PORT): users "
                              "and permissions are read from it")
    if backend.workers > 1 and backend.kind == "embedded":
        raise ConfigError(source, "backend.workers",
                          "more than one worker needs backend \"rabbitmq\": embedded "
                          "nodes each keep their own store, so they cannot share ports")


def upstream_url_problem(url: str) -> str | None:
    """Why `url` is not an amqp:// URL of a RabbitMQ node (None: it is)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL {_redact(url)!r}: {exc}"
    if parts.scheme != "amqp":
        why = " (TLS to RabbitMQ is not built yet)" if parts.scheme == "amqps" else ""
        return f"must be an amqp:// URL{why}, got {_redact(url)!r}"
    if not parts.hostname:
        return f"has no host: {_redact(url)!r}"
    if port == 0:
        return f"port must be 1-{_MAX_PORT}: {_redact(url)!r}"
    return None


def management_url_problem(url: str) -> str | None:
    """Why `url` is not an http(s):// URL of RabbitMQ's management API (None: it is)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as exc:
        return f"not a valid URL {_redact(url)!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http://USER:PASS@HOST:PORT URL, got {_redact(url)!r}"
    return None


def _redact(url: str) -> str:
    """`url` without its password (what may go to a terminal or a log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _build_oauth2(root: _Table) -> OAuth2Config:
    t = root.table("oauth2")
    keys_t = t.table("signing_keys")
    keys = []
    for kid in keys_t.data:
        path = Path(keys_t.string(kid)).expanduser()
        try:
            load_signing_key(path)
        except ValueError as exc:
            raise keys_t.error(kid, str(exc)) from None
        keys.append((kid, path))
    keys_t.done()
    algorithms = t.strings("algorithms")
    known = (*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS)
    for alg in algorithms:
        if alg not in known:
            raise t.error("algorithms", f"unknown algorithm {alg!r}; known: {', '.join(known)}")
    oauth2 = OAuth2Config(
        resource_server_id=t.string("resource_server_id", allow_empty=True).strip(),
        signing_keys=tuple(keys),
        default_key=t.string("default_key", allow_empty=True),
        algorithms=algorithms,
        preferred_username_claims=t.strings("preferred_username_claims"),
        additional_scopes_key=t.string("additional_scopes_key", allow_empty=True),
        scope_prefix=t.string("scope_prefix", allow_empty=True),
    )
    t.done()
    if oauth2.default_key and oauth2.default_key not in dict(keys):
        raise t.error("default_key", f"{oauth2.default_key!r} is not a key of signing_keys")
    if oauth2.resource_server_id and not keys:
        raise t.error("signing_keys", "must name at least one key when resource_server_id "
                                      "is set")
    return oauth2


def _origin(table: _Table, text: str) -> str:
    """An allowed origin as browsers send it: scheme://host[:port], lower-case, no path."""
    value = text.strip().lower().rstrip("/")
    if value == "*":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise table.error("allowed_origins",
                          f"{text!r} is not an origin (scheme://host[:port], e.g. "
                          "\"https://app.example.com\") or \"*\"")
    return value


def _build_tls(root: _Table) -> TLSConfig:
    tls_t = root.table("tls")

    def path(name: str) -> Path | None:
        text = tls_t.string(name, allow_empty=True)
        return Path(text).expanduser() if text.strip() else None

    verify = tls_t.string("verify")
    if verify not in _VERIFY_MODES:
        raise tls_t.error("verify", f"must be one of {', '.join(_VERIFY_MODES)}, got {verify!r}")
    version = tls_t.string("minimum_version")
    if version not in TLS_VERSIONS:
        raise tls_t.error("minimum_version",
                          f"must be one of {', '.join(TLS_VERSIONS)}, got {version!r}")
    timeout = tls_t.integer("handshake_timeout", 100, 3_600_000)
    tls = TLSConfig(certfile=path("certfile"), keyfile=path("keyfile"), cafile=path("cafile"),
                    verify=verify, minimum_version=version, handshake_timeout=timeout)
    tls_t.done()
    return tls


def _check_tls(tls: TLSConfig, listeners: Listeners, source: str) -> None:
    """A TLS listener needs a certificate and key; checking clients needs a CA file."""
    on = [name for name, port in listeners.tls_ports().items() if port is not None]
    if not on:
        return
    for name in ("certfile", "keyfile"):
        if getattr(tls, name) is None:
            raise ConfigError(source, f"tls.{name}",
                              f"must be set: the TLS listener listeners.{on[0]} is on")
    if tls.verify != "none" and tls.cafile is None:
        raise ConfigError(source, "tls.cafile",
                          f'must be set to check client certificates (verify = "{tls.verify}")')


def _build_auth(root: _Table) -> AuthConfig:
    auth_t = root.table("auth")
    loopback_users = frozenset(auth_t.strings("loopback_users"))
    limit = auth_t.integer("failed_login_limit", 0, 1_000_000)
    window = auth_t.integer("failed_login_window", 1, 86400)
    block = auth_t.integer("failed_login_block", 0, 86400)
    exempt = auth_t.strings("failed_login_exempt")
    for index, network in enumerate(exempt):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise auth_t.error(f"failed_login_exempt[{index}]",
                               f"not an IP address or network: {network!r}") from None
    auth_t.done()

    users: list[UserConfig] = []
    for user_t in root.tables("users"):
        name = user_t.string("name")
        password_hash = _password_hash(user_t)
        plain = user_t.string("password") if user_t.has("password") else ""
        users.append(
            UserConfig(
                name=name,
                password_hash=password_hash,
                tags=user_t.strings("tags") if user_t.has("tags") else (),
                wampcra=derive_cra_key(plain).encode() if plain else "",
            )
        )
        user_t.done()
    _no_duplicates(root, "users", [f"user {user.name!r}" for user in users])

    vhosts: list[str] = []
    for vhost_t in root.tables("vhosts"):
        vhosts.append(vhost_t.string("name"))
        vhost_t.done()
    _no_duplicates(root, "vhosts", [f"vhost {vhost!r}" for vhost in vhosts])

    known_users = {user.name for user in users}
    known_vhosts = set(vhosts)
    permissions: list[PermissionConfig] = []
    for perm_t in root.tables("permissions"):
        user = perm_t.string("user")
        if user not in known_users:
            raise perm_t.error("user", f"no [[users]] entry is named {user!r}")
        vhost = perm_t.string("vhost")
        if vhost not in known_vhosts:
            raise perm_t.error("vhost", f"no [[vhosts]] entry is named {vhost!r}")
        permissions.append(
            PermissionConfig(
                user=user,
                vhost=vhost,
                configure=perm_t.regex("configure"),
                write=perm_t.regex("write"),
                read=perm_t.regex("read"),
            )
        )
        perm_t.done()
    _no_duplicates(
        root,
        "permissions",
        [f"permission for user {p.user!r} on vhost {p.vhost!r}" for p in permissions],
    )

    return AuthConfig(
        users=tuple(users),
        vhosts=tuple(vhosts),
        permissions=tuple(permissions),
        loopback_users=loopback_users,
        failed_login_limit=limit,
        failed_login_window=window,
        failed_login_block=block,
        failed_login_exempt=exempt,
    )


def _password_hash(user_t: _Table) -> str:
    has_hash, has_plain = user_t.has("password_hash"), user_t.has("password")
    if has_hash == has_plain:
        raise user_t.error("password_hash", 'give exactly one of "password_hash" or "password"')
    if has_plain:
        return hash_password(user_t.string("password"))
    value = user_t.string("password_hash", allow_empty=True)
    if value and not is_password_hash(value):
        raise user_t.error(
            "password_hash",
            "not a RabbitMQ salted SHA-256 hash (base64 of 4 salt bytes + 32 digest bytes) "
            'nor a "$scrypt$ln=..,r=..,p=..$salt$key" hash; "" disables password login',
        )
    return value


def _no_duplicates(root: _Table, name: str, labels: Iterable[str]) -> None:
    seen: set[str] = set()
    for index, label in enumerate(labels):
        if label in seen:
            raise ConfigError(root.source, f"{name}[{index}]", f"duplicate {label}")
        seen.add(label)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
