"""`gateway serve`: start the broker from a config file, with flags that override it;
`gateway ctl` (rabbitmqctl commands over the HTTP API) and `gateway info` (a live view)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trio

import gateway
from gateway.cli import ctl, info, workers
from gateway.config import (
    KEEP,
    TLS_LISTENERS,
    Config,
    ConfigError,
    load_config,
    parse_port,
    with_overrides,
)
from gateway.logging_setup import configure_logging

if TYPE_CHECKING:
    from gateway.server.worker import WorkerRole


class Parser(argparse.ArgumentParser):
    """argparse with the exit code of a usage error set per command: `gateway ctl` and
    `gateway info` exit 64 (EX_USAGE, as rabbitmqctl does), the rest argparse's 2."""

    usage_exit = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    parser = Parser(prog="gateway", description=gateway.__doc__)
    parser.add_argument("--version", action="version", version=gateway.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", type=Path, default=None,
                       help="TOML config file (default: the embedded conf/gateway.toml)")
    serve.add_argument("--host", default=None, help="address every listener binds")
    for proto in ("amqp", "mqtt", "stomp", "http"):
        serve.add_argument(f"--{proto}-port", type=parse_port, default=KEEP,
                           help=f"{proto.upper()} port; 0 picks a free port, 'off' disables")
    for name, what in (("web_stomp", "Web-STOMP (STOMP-only WebSocket, RabbitMQ's 15674)"),
                       ("web_mqtt", "Web-MQTT (MQTT-only WebSocket, RabbitMQ's 15675)")):
        serve.add_argument(f"--{name.replace('_', '-')}-port", type=parse_port, default=KEEP,
                           dest=f"{name}_port",
                           help=f"{what} port; 0 picks a free port, 'off' disables")
    for name in TLS_LISTENERS:
        serve.add_argument(f"--{name.replace('_', '-')}-port", type=parse_port, default=KEEP,
                           dest=f"{name}_port",
                           help=f"{name} (TLS) port; needs [tls] in the config file")
    serve.add_argument("--data-dir", type=Path, default=None,
                       help="directory for durable state")
    serve.add_argument("--backend", default=None, choices=["embedded", "rabbitmq"],
                       help="where messages live: this process (embedded) or a RabbitMQ "
                            "cluster (rabbitmq); overrides [backend] kind")
    serve.add_argument("--upstream", action="append", default=None,
                       metavar="amqp://USER:PASS@HOST:PORT/VHOST",
                       help="a RabbitMQ node of the cluster (once per node); overrides "
                            "[backend.rabbitmq] urls")
    serve.add_argument("--upstream-management", default=None,
                       metavar="http://USER:PASS@HOST:PORT",
                       help="RabbitMQ's management API, as an administrator; overrides "
                            "[backend.rabbitmq] management_url")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="gateway processes sharing the ports (SO_REUSEPORT), each a "
                            "full node; more than 1 needs --backend rabbitmq; overrides "
                            "[backend] workers")
    workers.add_worker_flags(serve)
    serve.add_argument("--log-level", default=None,
                       choices=["debug", "info", "warning", "error"],
                       help="overrides [log] level of the config file")
    parser.commands = {"serve": serve, "ctl": ctl.add_parser(sub),  # type: ignore[attr-defined]
                       "info": info.add_parser(sub)}
    return parser


def _first_leaf(group: BaseExceptionGroup[BaseException],
                kinds: tuple[type[Exception], ...]) -> Exception | None:
    """The first exception of `kinds` in a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_leaf(exc, kinds)
            if found is not None:
                return found
        elif isinstance(exc, kinds):
            return exc
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's parser, with its exit code
        parser.commands[args.command].error(  # type: ignore[attr-defined]
            f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "ctl":
        return ctl.run(args)
    if args.command == "info":
        return info.run(args)
    try:
        config = serve_config(args)
        configure_logging(config.log, args.log_level)  # [log]: file, level, json
    except (ConfigError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if args.worker_index is not None:  # one of the parent's workers (gateway/cli/workers.py)
        from gateway.server.worker import WorkerRole

        return run_serve(config, WorkerRole(args.worker_index, args.worker_ready_fd,
                                            lifeline_fd=0))
    if config.backend.workers > 1:
        return workers.run_workers(config, sys.argv[1:] if argv is None else list(argv))
    return run_serve(config)


def serve_config(args: argparse.Namespace) -> Config:
    """The config `gateway serve` runs: the file's (or the default), with the flags over it."""
    return with_overrides(
        load_config(args.config), host=args.host, amqp_port=args.amqp_port,
        mqtt_port=args.mqtt_port, stomp_port=args.stomp_port, http_port=args.http_port,
        web_stomp_port=args.web_stomp_port, web_mqtt_port=args.web_mqtt_port,
        data_dir=args.data_dir, backend=args.backend, upstream=args.upstream,
        upstream_management=args.upstream_management, workers=args.workers,
        tls_ports={name: getattr(args, f"{name}_port") for name in TLS_LISTENERS})


def run_serve(config: Config, worker: WorkerRole | None = None) -> int:
    """Run the broker until it stops; its exit status (a start-up failure: one line).
    `worker`: as one of the workers of `--workers N`."""
    # imported here, not at the top: the server (every protocol, management) is only for
    # `gateway serve`, and `gateway ctl` / `gateway info` start faster without it
    from gateway.server.app import StartupError, run_server

    try:
        trio.run(run_server, config, worker)
    except ConfigError as exc:  # a TLS certificate or key that cannot be loaded
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except (OSError, StartupError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # a listener that cannot be bound fails inside the server's nurseries: one line
        reason = _first_leaf(group, (StartupError, ConfigError, OSError))
        if reason is None:
            raise
        print(f"gateway: {reason}", file=sys.stderr)
        return 2 if isinstance(reason, ConfigError) else 1
    logging.getLogger("gateway.server").info("stopped")
    return 0
