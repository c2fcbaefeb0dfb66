"""The container image's entry points: `python -m gateway.container serve [serve flags]` (the
image's CMD) and `python -m gateway.container healthcheck` (its HEALTHCHECK).

Inside a container every client arrives from a non-loopback address (published ports go
through the bridge), so the image must not leave the default `guest`/`guest` administrator
reachable, and it must not let anonymous clients in as an administrator. As RabbitMQ's
image does with RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, the administrator comes from
the environment:

- GATEWAY_DEFAULT_USER and GATEWAY_DEFAULT_PASS (else RABBITMQ_DEFAULT_USER and
  RABBITMQ_DEFAULT_PASS) replace the config's [[users]], [[vhosts]] and [[permissions]]:
  one administrator with every permission on GATEWAY_DEFAULT_VHOST (else
  RABBITMQ_DEFAULT_VHOST, else "/"), allowed from any address. Like the config's users
  they seed a fresh data directory only (see docs/operations.md).
- Without them, `guest` stays loopback-only (usable from inside the container: the
  health check, `docker exec ... gateway ctl`). A config that lifts that rule for guest
  while guest's password is "guest", or that lets anonymous clients from outside in as an
  administrator, is refused: the broker does not start.

Everything else is `gateway serve`: the same flags, the same config file, the same logs.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from gateway.auth.passwords import check_password, derive_cra_key, hash_password
from gateway.cli.main import build_parser, run_serve, serve_config
from gateway.config import (
    Config,
    ConfigError,
    PermissionConfig,
    UserConfig,
    load_config,
)
from gateway.logging_setup import configure_logging
from gateway.store.disk import LOG_NAME, OLD_LOG_NAMES

DEFAULT_PASSWORD = "guest"  # noqa: S105 - the well-known default, refused from outside
ENV_SOURCE = "environment"
HEALTH_TIMEOUT = 5.0  # seconds
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"

log = logging.getLogger("gateway.container")


class StartRefused(Exception):
    """The configuration would expose an administrator to anyone: the reason, for the
    operator."""


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """GATEWAY_<name>, else RABBITMQ_<name> (as RabbitMQ's image reads it); "" = unset."""
    for prefix in ("GATEWAY_", "RABBITMQ_"):
        value = environ.get(prefix + name, "")
        if value:
            return value
    return None


def default_user(environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(user, password, vhost) from the environment, or None when no user is given."""
    user, password = _env(environ, "DEFAULT_USER"), _env(environ, "DEFAULT_PASS")
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = "GATEWAY_DEFAULT_PASS" if password is None else "GATEWAY_DEFAULT_USER"
        raise ConfigError(ENV_SOURCE, missing, "must be set together with "
                          + ("GATEWAY_DEFAULT_USER" if password is None
                             else "GATEWAY_DEFAULT_PASS"))
    return user, password, _env(environ, "DEFAULT_VHOST") or "/"


def apply_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """The config with the environment's default user applied, checked: raises
    `StartRefused` when an administrator would be open to anyone."""
    given = default_user(environ)
    auth = config.auth
    if given is not None:
        name, password, vhost = given
        if password == DEFAULT_PASSWORD:
            raise StartRefused(f"the default user's password is {DEFAULT_PASSWORD!r}: "
                               "choose another GATEWAY_DEFAULT_PASS")
        user = UserConfig(name=name, password_hash=hash_password(password),
                          tags=("administrator",), wampcra=derive_cra_key(password).encode())
        perm = PermissionConfig(user=name, vhost=vhost, configure=".*", write=".*", read=".*")
        # the user chose this password: it may log in from anywhere (guest stays loopback)
        auth = replace(auth, users=(user,), vhosts=(vhost,), permissions=(perm,),
                       loopback_users=(auth.loopback_users | {"guest"}) - {name})
        config = replace(config, auth=auth)
    _refuse_open_administrators(config)
    return config


def _refuse_open_administrators(config: Config) -> None:
    auth = config.auth
    for user in auth.users:
        if user.name in auth.loopback_users:
            continue
        if check_password(user.password_hash, DEFAULT_PASSWORD):
            raise StartRefused(
                f"user {user.name!r} has the password {DEFAULT_PASSWORD!r} and may log in "
                "from any address: set GATEWAY_DEFAULT_USER and GATEWAY_DEFAULT_PASS, or "
                f"keep {user.name!r} in [auth] loopback_users")
    admins = {u.name for u in auth.users if "administrator" in u.tags}
    for section in ("mqtt", "stomp", "wamp"):
        proto = getattr(config, section)
        anonymous = proto.anonymous_user
        if proto.allow_anonymous and anonymous in admins \
                and anonymous not in auth.loopback_users:
            raise StartRefused(
                f"[{section}] allow_anonymous lets clients from any address in as "
                f"{anonymous!r}, an administrator: set allow_anonymous = false or name "
                "another anonymous_user")


def data_dir_seeded(data_dir: Path) -> bool:
    """Whether the data directory was used before (its users are then in the store)."""
    return any((data_dir / name).is_file() and (data_dir / name).stat().st_size > 0
               for name in (LOG_NAME, *OLD_LOG_NAMES))


def serve(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """`gateway serve` with the environment's default user and the checks above."""
    args = build_parser().parse_args(["serve", *argv])
    try:
        config = apply_environment(serve_config(args), environ)
        configure_logging(config.log, args.log_level)
    except (ConfigError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except StartRefused as exc:
        print(f"gateway: refusing to start: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    if default_user(environ) is not None and data_dir_seeded(config.store.data_dir):
        log.warning("GATEWAY_DEFAULT_USER is not applied: the data directory %s holds users "
                    "already (it seeds a fresh one only; see docs/operations.md)",
                    config.store.data_dir)
    if config.backend.workers > 1:  # the parent of the workers (gateway/cli/workers.py)
        from gateway.cli.workers import run_workers

        return run_workers(config, ["serve", *argv])
    return run_serve(config)


def healthcheck(config: Config, host: str = "127.0.0.1") -> str | None:
    """None when the broker answers: the AMQP listener greets a protocol header with
    connection.start (or, with AMQP off, the HTTP listener answers a request for the UI);
    otherwise what went wrong."""
    ports = config.listeners.ports()
    try:
        if ports.get("amqp") is not None:
            with socket.create_connection((host, ports["amqp"]), HEALTH_TIMEOUT) as s:
                s.settimeout(HEALTH_TIMEOUT)
                s.sendall(AMQP_HEADER)
                reply = s.recv(7)
            # a method frame on channel 0: connection.start
            return None if reply[:3] == b"\x01\x00\x00" else f"AMQP answered {reply!r}"
        if ports.get("http") is not None:
            with socket.create_connection((host, ports["http"]), HEALTH_TIMEOUT) as s:
                s.settimeout(HEALTH_TIMEOUT)
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                reply = s.recv(12)
            return None if reply.startswith(b"HTTP/1.1 200") else f"HTTP answered {reply!r}"
    except OSError as exc:
        return str(exc)
    return "neither the AMQP nor the HTTP listener is on"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args[:1] == ["serve"]:
        return serve(args[1:], env)
    if args[:1] == ["healthcheck"]:
        config_path = args[1] if len(args) > 1 else None
        try:
            config = load_config(Path(config_path) if config_path else None)
        except ConfigError as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 1
        problem = healthcheck(config)
        if problem is not None:
            print(f"unhealthy: {problem}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m gateway.container serve [gateway serve flags] | "
          "healthcheck [CONFIG]", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
