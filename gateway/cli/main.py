"""`gateway serve`: start the broker from a config file, with flags that override it;
`gateway ctl` (rabbitmqctl commands over the HTTP API) and `gateway info` (a live view)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

import gateway
from gateway.config import (
    KEEP,
    TLS_LISTENERS,
    ConfigError,
    load_config,
    parse_port,
    with_overrides,
)
from gateway.logging_setup import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=gateway.__doc__)
    parser.add_argument("--version", action="version", version=gateway.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", type=Path, default=None,
                       help="TOML config file (default: the embedded conf/gateway.toml)")
    serve.add_argument("--host", default=None, help="address every listener binds")
    for proto in ("amqp", "mqtt", "stomp", "http"):
        serve.add_argument(f"--{proto}-port", type=parse_port, default=KEEP,
                           help=f"{proto.upper()} port; 0 picks a free port, 'off' disables")
    for name in TLS_LISTENERS:
        serve.add_argument(f"--{name.replace('_', '-')}-port", type=parse_port, default=KEEP,
                           dest=f"{name}_port",
                           help=f"{name} (TLS) port; needs [tls] in the config file")
    serve.add_argument("--data-dir", type=Path, default=None,
                       help="directory for durable state")
    serve.add_argument("--log-level", default=None,
                       choices=["debug", "info", "warning", "error"],
                       help="overrides [log] level of the config file")
    from gateway.cli import ctl, info

    ctl.add_parser(sub)
    info.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ctl":
        from gateway.cli import ctl

        return ctl.run(args)
    if args.command == "info":
        from gateway.cli import info

        return info.run(args)
    try:
        config = with_overrides(
            load_config(args.config), host=args.host, amqp_port=args.amqp_port,
            mqtt_port=args.mqtt_port, stomp_port=args.stomp_port, http_port=args.http_port,
            data_dir=args.data_dir,
            tls_ports={name: getattr(args, f"{name}_port") for name in TLS_LISTENERS})
        configure_logging(config.log, args.log_level)  # [log]: file, level, json
    except (ConfigError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    from gateway.server.app import run_server

    try:
        trio.run(run_server, config)
    except ConfigError as exc:  # a TLS certificate or key that cannot be loaded
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("gateway.server").info("stopped")
    return 0
