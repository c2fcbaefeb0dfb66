"""`gateway ctl`: the rabbitmqctl commands people use, run against a live broker through its
management API.

On the broker's machine, as the broker's OS user, it needs no credentials: the broker serves
the API on a Unix socket in its data directory (`<data_dir>/ctl.sock`, mode 0600), as
rabbitmqctl needs none on the node itself. ctl uses that socket when it finds it (the data
directory from --data-dir, else from the config: --config or the default) and no --host,
--port, --https or credentials (--username/--password, GATEWAY_USER/GATEWAY_PASSWORD) are
given; otherwise it uses the HTTP API with a broker user's rights (guest/guest by default).
Every answer must come from gateway (`Server: gateway`): another program on the port (a
RabbitMQ, say) is reported, not talked to.

Output follows rabbitmqctl: an info line ("Listing queues for vhost / ...") unless `-q`,
then tab-separated rows with a header row (or `--formatter json`). Options (`-p VHOST`,
`-q`, ...) go before or after the command and its arguments. Exit codes are rabbitmqctl's
(sysexits):
  0   success
  64  usage error (unknown command or option, wrong number of arguments, unknown column)
  65  data error: no such vhost, queue, exchange, policy, connection or permission, or an
      argument the broker refused (a bad regex, a queue in use, a definition that is not JSON)
  67  no such user
  69  no broker reachable, or what answers is not gateway
  70  the broker failed, or answered what ctl did not expect
  75  timed out (30 s)
  77  the broker refused the credentials, or the user is not authorised to do this
      (rabbitmqctl has no such case: it needs no credentials)
  78  the config file (--config) cannot be read
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.client import (
    EX_DATAERR,
    EX_NOPERM,
    EX_SOFTWARE,
    EX_USAGE,
    TIMEOUT,
    Client,
    CtlError,
    add_endpoint_options,
    connect,
    seg,
)

# -- output --------------------------------------------------------------------------------


@dataclass
class Out:
    quiet: bool
    formatter: str
    headers: bool
    stream: TextIO

    def info(self, text: str) -> None:
        if not self.quiet and self.formatter != "json":
            print(text, file=self.stream)

    def table(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        if self.formatter == "json":
            print(json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=1),
                  file=self.stream)
            return
        if self.headers:
            print("\t".join(columns), file=self.stream)
        for r in rows:
            print("\t".join(_cell(r.get(c)) for c in columns), file=self.stream)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _columns(asked: list[str], default: list[str], known: set[str]) -> list[str]:
    cols = asked or default
    unknown = [c for c in cols if c not in known]
    if unknown:
        raise CtlError(f"unknown column(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(known))}", EX_USAGE)
    return cols


# -- commands -------------------------------------------------------------------------------

Command = Callable[[Client, argparse.Namespace, Out], None]
COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None
            ) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = (fn, args, help)
        return fn

    return register


def _pos(*names: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        for n in names:
            p.add_argument(n)

    return add


def _cols(p: argparse.ArgumentParser) -> None:
    p.add_argument("columns", nargs="*", help="columns to show")


@command("add_user", "create a user", _pos("username", "password"))
def add_user(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Adding user "{a.username}" ...')
    c.call("PUT", f"/users/{seg(a.username)}", {"password": a.password, "tags": ""})


@command("delete_user", "delete a user", _pos("username"))
def delete_user(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Deleting user "{a.username}" ...')
    c.call("DELETE", f"/users/{seg(a.username)}")


@command("change_password", "set a user's password", _pos("username", "password"))
def change_password(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Changing password for user "{a.username}" ...')
    user = c.call("GET", f"/users/{seg(a.username)}")
    c.call("PUT", f"/users/{seg(a.username)}", {"password": a.password,
                                                 "tags": user.get("tags", [])})


@command("authenticate_user", "check a user's password", _pos("username", "password"))
def authenticate_user(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Authenticating user "{a.username}" ...')
    try:
        c.call("GET", "/whoami", user=(a.username, a.password))
    except CtlError as exc:
        # a user without management tags is authenticated, only not let into the API
        if exc.code != EX_NOPERM or "Not management user" not in str(exc):
            raise CtlError(f'Error: failed to authenticate user "{a.username}"',
                           EX_DATAERR) from None
    print("Success", file=out.stream)


def _tags_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("tags", nargs="*")


@command("set_user_tags", "replace a user's tags", _tags_args)
def set_user_tags(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Setting tags for user "{a.username}" to [{", ".join(a.tags)}] ...')
    user = c.call("GET", f"/users/{seg(a.username)}")
    c.call("PUT", f"/users/{seg(a.username)}", {"password_hash": user.get("password_hash", ""),
                                                 "tags": a.tags})


@command("list_users", "list users and their tags")
def list_users(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info("Listing users ...")
    rows = [{"user": u["name"], "tags": "[" + ", ".join(u["tags"]) + "]"}
            for u in c.call("GET", "/users")]
    out.table(rows, ["user", "tags"])


def _vhost_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="vhost")  # (not `vhost`: that is -p's)


@command("add_vhost", "create a virtual host", _vhost_name)
def add_vhost(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Adding vhost "{a.name}" ...')
    c.call("PUT", f"/vhosts/{seg(a.name)}", {})


@command("delete_vhost", "delete a virtual host and everything in it", _vhost_name)
def delete_vhost(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Deleting vhost "{a.name}" ...')
    c.call("DELETE", f"/vhosts/{seg(a.name)}")


@command("list_vhosts", "list virtual hosts", _cols)
def list_vhosts(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info("Listing vhosts ...")
    rows = c.call("GET", "/vhosts")
    out.table(rows, _columns(a.columns, ["name"], {"name", "tracing", "messages",
                                                   "messages_ready", "description"}))


@command("set_permissions", "grant a user configure/write/read regexes on a vhost",
         _pos("username", "conf", "write", "read"))
def set_permissions(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Setting permissions for user "{a.username}" in vhost "{a.vhost}" ...')
    c.call("PUT", f"/permissions/{seg(a.vhost)}/{seg(a.username)}",
           {"configure": a.conf, "write": a.write, "read": a.read})


@command("clear_permissions", "revoke a user's permissions on a vhost", _pos("username"))
def clear_permissions(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Clearing permissions for user "{a.username}" in vhost "{a.vhost}" ...')
    c.call("DELETE", f"/permissions/{seg(a.vhost)}/{seg(a.username)}")


@command("set_topic_permissions", "grant a user write/read regexes over the routing keys of a "
         "topic exchange", _pos("username", "exchange", "write", "read"))
def set_topic_permissions(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Setting topic permissions on "{a.exchange}" for user "{a.username}" in vhost '
             f'"{a.vhost}" ...')
    c.call("PUT", f"/topic-permissions/{seg(a.vhost)}/{seg(a.username)}",
           {"exchange": a.exchange, "write": a.write, "read": a.read})


def _clear_topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("exchange", nargs="?", help="only this exchange's (default: all)")


@command("clear_topic_permissions", "revoke a user's topic permissions on a vhost",
         _clear_topic_args)
def clear_topic_permissions(c: Client, a: argparse.Namespace, out: Out) -> None:
    where = f' on "{a.exchange}"' if a.exchange else ""
    out.info(f'Clearing topic permissions{where} for user "{a.username}" in vhost '
             f'"{a.vhost}" ...')
    query = f"?exchange={seg(a.exchange)}" if a.exchange else ""
    c.call("DELETE", f"/topic-permissions/{seg(a.vhost)}/{seg(a.username)}{query}")


def _grant_lister(what: str, per_user: bool, columns: list[str]) -> Command:
    """`list_[user_][topic_]permissions`: the (topic) permissions on a vhost or of a user."""
    def run(c: Client, a: argparse.Namespace, out: Out) -> None:
        if per_user:
            out.info(f'Listing {what} for user "{a.username}" ...')
            rows = c.call("GET", f"/users/{seg(a.username)}/{what.replace(' ', '-')}")
        else:
            out.info(f'Listing {what} for vhost "{a.vhost}" ...')
            rows = c.call("GET", f"/vhosts/{seg(a.vhost)}/{what.replace(' ', '-')}")
        out.table(rows, columns)

    return run


for _what, _grant_columns in (("permissions", ["configure", "write", "read"]),
                              ("topic permissions", ["exchange", "write", "read"])):
    _kind = _what.replace(" ", "_")
    command(f"list_{_kind}", f"list the {_what} on a vhost")(
        _grant_lister(_what, False, ["user", *_grant_columns]))
    command(f"list_user_{_kind}", f"list a user's {_what}", _pos("username"))(
        _grant_lister(_what, True, ["vhost", *_grant_columns]))


QUEUE_COLUMNS = {"name", "messages", "messages_ready", "messages_unacknowledged", "consumers",
                 "durable", "auto_delete", "exclusive", "arguments", "policy", "state",
                 "type", "message_bytes", "memory", "consumer_utilisation", "vhost"}


@command("list_queues", "list queues (columns: name messages consumers ...)", _cols)
def list_queues(c: Client, a: argparse.Namespace, out: Out) -> None:
    cols = _columns(a.columns, ["name", "messages"], QUEUE_COLUMNS)
    out.info(f"Timeout: {TIMEOUT:g} seconds ...\nListing queues for vhost {a.vhost} ...")
    out.table(c.call("GET", f"/queues/{seg(a.vhost)}"), cols)


@command("list_exchanges", "list exchanges", _cols)
def list_exchanges(c: Client, a: argparse.Namespace, out: Out) -> None:
    cols = _columns(a.columns, ["name", "type"], {"name", "type", "durable", "auto_delete",
                                                  "internal", "arguments", "policy"})
    out.info(f"Listing exchanges for vhost {a.vhost} ...")
    out.table(c.call("GET", f"/exchanges/{seg(a.vhost)}"), cols)


@command("list_bindings", "list bindings", _cols)
def list_bindings(c: Client, a: argparse.Namespace, out: Out) -> None:
    known = {"source_name", "source_kind", "destination_name", "destination_kind",
             "routing_key", "arguments"}
    cols = _columns(a.columns, ["source_name", "source_kind", "destination_name",
                                "destination_kind", "routing_key", "arguments"], known)
    out.info(f"Listing bindings for vhost {a.vhost}...")
    rows = [{"source_name": b["source"], "source_kind": "exchange",
             "destination_name": b["destination"], "destination_kind": b["destination_type"],
             "routing_key": b["routing_key"], "arguments": b["arguments"]}
            for b in c.call("GET", f"/bindings/{seg(a.vhost)}")]
    out.table(rows, cols)


@command("list_connections", "list connections of every protocol", _cols)
def list_connections(c: Client, a: argparse.Namespace, out: Out) -> None:
    cols = _columns(a.columns, ["user", "peer_host", "peer_port", "state"],
                    {"name", "user", "vhost", "protocol", "peer_host", "peer_port", "host",
                     "port", "state", "channels", "client_properties", "connected_at",
                     "timeout", "frame_max", "auth_mechanism", "ssl"})
    out.info("Listing connections ...")
    out.table(c.call("GET", "/connections"), cols)


@command("list_channels", "list AMQP channels", _cols)
def list_channels(c: Client, a: argparse.Namespace, out: Out) -> None:
    cols = _columns(a.columns, ["name", "user", "consumer_count", "messages_unacknowledged"],
                    {"name", "number", "user", "vhost", "consumer_count",
                     "messages_unacknowledged", "messages_unconfirmed", "prefetch_count",
                     "global_prefetch_count", "confirm", "transactional", "state"})
    out.info("Listing channels ...")
    out.table(c.call("GET", "/channels"), cols)


@command("list_consumers", "list consumers", _cols)
def list_consumers(c: Client, a: argparse.Namespace, out: Out) -> None:
    known = {"queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count",
             "active", "arguments", "exclusive"}
    cols = _columns(a.columns, ["queue_name", "channel_pid", "consumer_tag", "ack_required",
                                "prefetch_count", "active", "arguments"], known)
    out.info(f"Listing consumers in vhost {a.vhost} ...")
    rows = [{**cons, "queue_name": cons["queue"]["name"],
             "channel_pid": cons.get("channel_details", {}).get("name", "")}
            for cons in c.call("GET", f"/consumers/{seg(a.vhost)}")]
    out.table(rows, cols)


@command("purge_queue", "remove every ready message of a queue", _pos("queue"))
def purge_queue(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f"Purging queue '{a.queue}' in vhost '{a.vhost}' ...")
    c.call("DELETE", f"/queues/{seg(a.vhost)}/{seg(a.queue)}/contents")


def _delete_queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("queue")
    p.add_argument("--if-empty", "-e", action="store_true")
    p.add_argument("--if-unused", "-u", action="store_true")


@command("delete_queue", "delete a queue", _delete_queue_args)
def delete_queue(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f"Deleting queue '{a.queue}' on vhost '{a.vhost}' ...")
    flags = "&".join(f for f, on in (("if-empty=true", a.if_empty),
                                     ("if-unused=true", a.if_unused)) if on)
    path = f"/queues/{seg(a.vhost)}/{seg(a.queue)}"
    c.call("GET", path)  # a queue that does not exist is an error here, as in rabbitmqctl
    c.call("DELETE", path + (f"?{flags}" if flags else ""))


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("pattern")
    p.add_argument("definition", help="JSON object, e.g. '{\"max-length\": 10}'")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--apply-to", default="all", choices=["queues", "exchanges", "all"])


@command("set_policy", "set a policy on a vhost", _policy_args)
def set_policy(c: Client, a: argparse.Namespace, out: Out) -> None:
    try:
        definition = json.loads(a.definition)
    except ValueError as exc:
        raise CtlError(f"the definition is not JSON: {exc}", EX_DATAERR) from None
    out.info(f'Setting policy "{a.name}" for pattern "{a.pattern}" to "{a.definition}" '
             f'with priority "{a.priority}" for vhost "{a.vhost}" ...')
    c.call("PUT", f"/policies/{seg(a.vhost)}/{seg(a.name)}",
           {"pattern": a.pattern, "definition": definition, "priority": a.priority,
            "apply-to": a.apply_to})


@command("clear_policy", "remove a policy", _pos("name"))
def clear_policy(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Clearing policy "{a.name}" on vhost "{a.vhost}" ...')
    c.call("DELETE", f"/policies/{seg(a.vhost)}/{seg(a.name)}")


@command("list_policies", "list the policies of a vhost")
def list_policies(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Listing policies for vhost "{a.vhost}" ...')
    rows = c.call("GET", f"/policies/{seg(a.vhost)}")
    out.table(rows, ["vhost", "name", "pattern", "apply-to", "definition", "priority"])


@command("trace_on", "turn the firehose (amq.rabbitmq.trace) and the message trace on for "
         "a vhost")
def trace_on(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Starting tracing for vhost "{a.vhost}" ...')
    c.call("PUT", f"/traces/{seg(a.vhost)}", {"enabled": True})


@command("trace_off", "turn the firehose and the message trace off for a vhost")
def trace_off(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Stopping tracing for vhost "{a.vhost}" ...')
    c.call("PUT", f"/traces/{seg(a.vhost)}", {"enabled": False})


@command("status", "the node's status")
def status(c: Client, a: argparse.Namespace, out: Out) -> None:
    overview = c.call("GET", "/overview")
    node = c.call("GET", "/nodes")[0]
    if out.formatter == "json":
        print(json.dumps({"overview": overview, "node": node}, indent=1), file=out.stream)
        return
    out.info(f"Status of node {overview['node']} ...")
    totals = overview["object_totals"]
    lines = [
        ("Runtime", ""),
        ("OS PID", node["os_pid"]), ("Product name", overview["product_name"]),
        ("Product version", overview["product_version"]),
        ("Uptime (seconds)", node["uptime"] // 1000),
        ("Memory used (bytes)", node["mem_used"]),
        ("Message bytes held / watermark", f"{node['message_bytes_held']} / "
                                            f"{node['mem_limit']}"),
        ("Memory alarm", node["mem_alarm"]),
        ("File descriptors", f"{node['fd_used']} / {node['fd_total']}"),
        ("Free disk space (bytes)", node["disk_free"]),
        ("Connections", totals["connections"]), ("Channels", totals["channels"]),
        ("Queues", totals["queues"]), ("Consumers", totals["consumers"]),
        ("Messages", overview["queue_totals"]["messages"]),
    ]
    for label, value in lines:
        print(f"{label}: {_cell(value)}" if value != "" else f"\n{label}", file=out.stream)
    print("\nListeners", file=out.stream)
    for listener in overview["listeners"]:
        print(f"Interface: {listener['ip_address']}, port: {listener['port']}, "
              f"protocol: {listener['protocol']}", file=out.stream)


@command("export_definitions", "write definitions as JSON to a file ('-' for stdout)",
         _pos("path"))
def export_definitions(c: Client, a: argparse.Namespace, out: Out) -> None:
    data = c.call("GET", "/definitions")
    text = json.dumps(data, indent=2)
    if a.path == "-":
        print(text, file=out.stream)
        return
    out.info(f'Exporting definitions in JSON to a file at "{a.path}" ...')
    Path(a.path).write_text(text + "\n")


@command("import_definitions", "load definitions from a JSON file ('-' for stdin)",
         _pos("path"))
def import_definitions(c: Client, a: argparse.Namespace, out: Out) -> None:
    try:
        text = sys.stdin.read() if a.path == "-" else Path(a.path).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot read definitions from {a.path}: {exc}", EX_DATAERR) from None
    out.info(f'Importing definitions in JSON from a file at "{a.path}" ...')
    c.call("POST", "/definitions", data)
    out.info("Definitions imported.")


@command("close_connection", "close a connection (name as list_connections shows it)",
         _pos("connection", "reason"))
def close_connection(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f"Closing connection {a.connection}, reason: {a.reason}...")
    req_path = f"/connections/{seg(a.connection)}"
    c.call("GET", req_path)
    c.call("DELETE", req_path)


# -- runtime limits (RabbitMQ's set_vhost_limits / set_user_limits) ---------------------------


def _limits_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CtlError(f"Could not parse JSON document: {exc}", EX_USAGE) from None
    if not isinstance(value, dict):
        raise CtlError('the limits must be a JSON object, e.g. \'{"max-connections": 10}\'',
                       EX_USAGE)
    return value


def _set_vhost_limits_args(p: argparse.ArgumentParser) -> None:
    # -p VHOST, like every command's options, goes before or after the arguments
    p.add_argument("definition", help='e.g. \'{"max-connections": 64, "max-queues": 256}\'')


def _current_limits(c: Client, path: str) -> dict[str, Any]:
    rows = c.call("GET", path) or []
    return dict(rows[0]["value"]) if rows else {}


@command("set_vhost_limits", "set a vhost's limits (max-connections, max-queues; negative: "
         "no limit), replacing the ones set before", _set_vhost_limits_args)
def set_vhost_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    wanted = _limits_json(a.definition)
    out.info(f'Setting vhost limits to "{a.definition}" for vhost "{a.vhost}" ...')
    base = f"/vhost-limits/{seg(a.vhost)}"
    for name, value in wanted.items():
        c.call("PUT", f"{base}/{seg(str(name))}", {"value": value})
    for name in _current_limits(c, base):
        if name not in wanted:
            c.call("DELETE", f"{base}/{seg(name)}")


@command("clear_vhost_limits", "clear a vhost's limits")
def clear_vhost_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    out.info(f'Clearing vhost "{a.vhost}" limits ...')
    base = f"/vhost-limits/{seg(a.vhost)}"
    for name in _current_limits(c, base):
        c.call("DELETE", f"{base}/{seg(name)}")


def _list_vhost_limits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global", dest="all", action="store_true", help="every vhost's")


@command("list_vhost_limits", "show a vhost's limits (--global: every vhost's)",
         _list_vhost_limits_args)
def list_vhost_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    _list_limits(c, out, "vhost", None if a.all else a.vhost)


def _list_limits(c: Client, out: Out, scope: str, name: str | None) -> None:
    """rabbitmqctl's list_vhost_limits / list_user_limits: one object's limits as JSON, or
    (name None: --global) a table of every vhost's or user's."""
    if name is None:
        out.info(f"Listing limits for all {scope}s ...")
        rows = [{scope: r[scope], "limits": r["value"]}
                for r in c.call("GET", f"/{scope}-limits")]
        out.table(rows, [scope, "limits"])
        return
    out.info(f'Listing limits for {scope} "{name}" ...')
    print(json.dumps(_current_limits(c, f"/{scope}-limits/{seg(name)}"),
                     separators=(",", ":")), file=out.stream)


@command("set_user_limits", "set a user's limits (max-connections, max-channels; negative: "
         "no limit), added to the ones set before", _pos("username", "definition"))
def set_user_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    wanted = _limits_json(a.definition)
    out.info(f'Setting user limits to "{a.definition}" for user "{a.username}" ...')
    for name, value in wanted.items():
        c.call("PUT", f"/user-limits/{seg(a.username)}/{seg(str(name))}", {"value": value})


@command("clear_user_limits", "clear one of a user's limits, or all of them ('all')",
         _pos("username", "limit_type"))
def clear_user_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    base = f"/user-limits/{seg(a.username)}"
    if a.limit_type == "all":
        out.info(f'Clearing all limits for user "{a.username}" ...')
        names = list(_current_limits(c, base))
    else:
        out.info(f'Clearing "{a.limit_type}" limit for user "{a.username}" ...')
        names = [a.limit_type]
    for name in names:
        c.call("DELETE", f"{base}/{seg(name)}")


def _list_user_limits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default=None, help="this user's (default: the API user's)")
    p.add_argument("--global", dest="all", action="store_true", help="every user's")


@command("list_user_limits", "show a user's limits (--global: every user's)",
         _list_user_limits_args)
def list_user_limits(c: Client, a: argparse.Namespace, out: Out) -> None:
    _list_limits(c, out, "user", None if a.all else a.user or c.user)


# -- entry point ------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    ctl: argparse.ArgumentParser = sub.add_parser(
        "ctl", help="rabbitmqctl-style commands against a running broker", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _options(ctl, suppress=False)
    cmds = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    for name, (_fn, add_args, help_text) in COMMANDS.items():
        p = cmds.add_parser(name, help=help_text)
        add_args(p)
        _options(p, suppress=True)
    cert = cmds.add_parser(
        "generate_cert", help="write a development CA, server and client certificate (no "
        "broker needed)")
    cert.add_argument("directory", type=Path)
    cert.add_argument("--client-cn", default="guest",
                      help="the client certificate's common name: the broker user it logs "
                      "in as with EXTERNAL or ssl_cert_login (default: guest)")
    cert.add_argument("--host", dest="cert_hosts", action="append", default=None,
                      help="a name or address the server certificate is for (repeatable; "
                      "default: localhost, 127.0.0.1, ::1)")
    cert.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    cert.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS)
    for parser in (ctl, *cmds.choices.values()):
        parser.usage_exit = EX_USAGE  # type: ignore[attr-defined]  # (gateway.cli.main)
    return ctl


def _options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options of every command. They are on `ctl` and again on each command's parser
    (`suppress`: there they change nothing unless given), so that they may come before or
    after the command and its arguments, as rabbitmqctl's do."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--vhost", "-p", default=default("/"),
                   help="virtual host (default: /)")
    p.add_argument("--quiet", "-q", action="store_true", default=default(False))
    p.add_argument("--formatter", choices=["table", "json"], default=default("table"))
    p.add_argument("--no-table-headers", action="store_true", default=default(False))
    p.add_argument("--username", "-U", dest="api_user", default=default(None),
                   help="broker user for the HTTP API (env GATEWAY_USER; default guest)")
    p.add_argument("--password", "-P", dest="api_password", default=default(None),
                   help="its password (env GATEWAY_PASSWORD; default guest)")
    add_endpoint_options(p, suppress=suppress)


def generate_cert(args: argparse.Namespace, out: Out) -> None:
    """Local: `gateway ctl generate_cert DIR` writes PEM files and the [tls] to use them."""
    # imported here, not at the top: cryptography is needed by this command alone, and
    # every other `gateway ctl` command starts faster without it
    from gateway.cli.certs import DEFAULT_HOSTS, generate

    if args.days < 1:
        raise CtlError("--days must be at least 1", EX_USAGE)
    try:
        files = generate(args.directory, client_cn=args.client_cn,
                         hosts=args.cert_hosts or DEFAULT_HOSTS, days=args.days)
    except OSError as exc:
        raise CtlError(f"cannot write certificates to {args.directory}: {exc}") from None
    out.info(f"Wrote a development CA, a server certificate and a client certificate "
             f"(CN={args.client_cn}) to {args.directory}. For conf/gateway.toml:")
    pem = {"certfile": files.server_certificate, "keyfile": files.server_key,
           "cafile": files.ca_certificate}
    print("[tls]", file=out.stream)
    for key, path in pem.items():  # a JSON string is a TOML basic string
        print(f"{key} = {json.dumps(str(path.resolve()))}", file=out.stream)


def run(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    try:
        if args.ctl_command == "generate_cert":
            generate_cert(args, Out(args.quiet, args.formatter, True, stream))
            return 0
        client = connect(args)
        out = Out(args.quiet, args.formatter, not args.no_table_headers, stream)
        try:
            COMMANDS[args.ctl_command][0](client, args, out)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CtlError(f"the broker's answer lacks what {args.ctl_command} needs "
                           f"({type(exc).__name__}: {exc})", EX_SOFTWARE) from None
    except CtlError as exc:
        text = str(exc)
        print(text if text.startswith("Error") else f"Error: {text}", file=sys.stderr)
        return exc.code
    return 0
