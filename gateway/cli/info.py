"""`gateway info`: a live terminal view of a running broker, refreshed in place: queues
with depth bars, consumers and rates, and connections per protocol (every protocol).

It reads the HTTP API like `gateway ctl` does (same --host/--port/--config options);
`--once` prints one frame and exits, for scripts and logs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any, TextIO

from gateway.cli.client import (
    EX_SOFTWARE,
    EX_USAGE,
    Client,
    CtlError,
    add_endpoint_options,
    connect,
    seg,
)

CLEAR = "\x1b[H\x1b[2J"
BAR_FULL, BAR_EMPTY = "█", "·"
MAX_QUEUES = 200  # queues fetched per frame (the deepest first)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "info", help="live view of queues and connections of a running broker",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_endpoint_options(p)
    p.add_argument("--username", "-U", dest="api_user", default=None,
                   help="broker user for the HTTP API (env GATEWAY_USER; default guest)")
    p.add_argument("--password", "-P", dest="api_password", default=None,
                   help="its password (env GATEWAY_PASSWORD; default guest)")
    p.add_argument("--vhost", "-p", default=None, help="only this vhost's queues")
    p.add_argument("--interval", "-n", type=float, default=2.0, help="seconds between frames")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.usage_exit = EX_USAGE  # type: ignore[attr-defined]  # (gateway.cli.main)
    return p


def _bar(value: int, biggest: int, width: int) -> str:
    if width <= 0:
        return ""
    filled = 0 if biggest <= 0 else round(width * value / biggest)
    if value and not filled:
        filled = 1
    return BAR_FULL * filled + BAR_EMPTY * (width - filled)


def _rate(item: dict[str, Any], key: str) -> float:
    stats = item.get("message_stats") or {}
    return float((stats.get(f"{key}_details") or {}).get("rate", 0.0))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def frame(client: Client, vhost: str | None, columns: int) -> str:
    overview = client.call("GET", "/overview")
    path = f"/queues/{seg(vhost)}" if vhost else "/queues"
    page = client.call("GET", path + f"?page=1&page_size={MAX_QUEUES}&sort=messages"
                                     "&sort_reverse=true")
    queues: list[dict[str, Any]] = page["items"]
    connections = client.call("GET", "/connections?columns=protocol,state")
    by_protocol: dict[str, int] = {}
    for c in connections:
        by_protocol[c["protocol"]] = by_protocol.get(c["protocol"], 0) + 1
    totals = overview["queue_totals"]
    stats = overview["message_stats"]
    lines = [
        f"gateway {overview['product_version']} on {overview['node']}   "
        + time.strftime("%H:%M:%S"),
        "connections: " + ("  ".join(f"{p} {n}" for p, n in sorted(by_protocol.items()))
                           or "none"),
        f"messages: {totals['messages']} (ready {totals['messages_ready']}, unacked "
        f"{totals['messages_unacknowledged']})   publish {_rate(overview, 'publish'):.1f}/s"
        f"   deliver {_rate(overview, 'deliver_get'):.1f}/s   "
        f"published {stats.get('publish', 0)}",
        "",
    ]
    name_w = max([5] + [len(q["name"]) for q in queues[:50]])
    name_w = min(name_w, max(12, columns // 3))
    fixed = name_w + 6 * 8 + 2
    bar_w = max(0, min(40, columns - fixed))
    header = (f"{'QUEUE':<{name_w}} {'DEPTH':<{bar_w}} {'READY':>7} {'UNACK':>7} "
              f"{'CONS':>5} {'IN/s':>7} {'OUT/s':>7}")
    lines.append(header)
    biggest = max([q["messages"] for q in queues] + [0])
    for q in queues:
        name = q["name"] if vhost else (q["name"] if q["vhost"] == "/" else
                                        f"{q['vhost']}:{q['name']}")
        lines.append(
            f"{_fit(name, name_w):<{name_w}} {_bar(q['messages'], biggest, bar_w)} "
            f"{q['messages_ready']:>7} {q['messages_unacknowledged']:>7} {q['consumers']:>5} "
            f"{_rate(q, 'publish'):>7.1f} {_rate(q, 'deliver_get'):>7.1f}")
    if page.get("filtered_count", 0) > len(queues):
        lines.append(f"... and {page['filtered_count'] - len(queues)} more queues")
    if not queues:
        lines.append("(no queues)")
    return "\n".join(_fit(line, columns) for line in lines)


def run(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    try:
        client = connect(args)
        while True:
            columns = shutil.get_terminal_size((100, 30)).columns
            text = frame(client, args.vhost, columns)
            if args.once:
                print(text, file=stream)
                return 0
            stream.write(CLEAR + text + "\n")
            stream.flush()
            time.sleep(max(0.2, args.interval))
    except (KeyError, IndexError, TypeError) as exc:
        print(f"Error: the broker's answer lacks what info needs ({type(exc).__name__}: "
              f"{exc})", file=sys.stderr)
        return EX_SOFTWARE
    except CtlError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0
