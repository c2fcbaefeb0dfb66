"""Routes about the node and who is connected: overview, whoami, nodes, connections,
channels, consumers, health checks."""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

import gateway
from gateway.core.exchange import EXCHANGE_TYPES
from gateway.info import close_session
from gateway.management import shapes
from gateway.management.answers import ApiError, dumps, not_found
from gateway.management.history import RETENTION, Ranges, add_overview_samples
from gateway.management.router import Access, App, Ctx, Routes, VhostScope, list_result
from gateway.management.shapes import NODE, details
from gateway.web import Response

if TYPE_CHECKING:
    from gateway.core.queue import Consumer
    from gateway.info import Connected

routes = Routes()
STARTED = time.time()
PROTOCOL_LABELS = {"amqp": "amqp", "mqtt": "mqtt", "stomp": "stomp", "http": "http",
                   # RabbitMQ's names for its TLS listeners
                   "amqps": "amqp/ssl", "mqtts": "mqtt/ssl", "stomps": "stomp/ssl",
                   "https": "https", "web_stomp_tls": "https/web-stomp",
                   "web_mqtt_tls": "https/web-mqtt"}
# what a session must offer to be closed from the API
CLOSE_TEXT = "CONNECTION_FORCED - Closed via management plugin"


# -- process facts ------------------------------------------------------------------------


def memory_used() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss * (1 if sys.platform == "darwin" else 1024)


def fd_used() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def fd_total() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def disk_free(app: App) -> int:
    try:
        return shutil.disk_usage(app.server.config.store.data_dir).free
    except OSError:
        return 0


def node_info(app: App) -> dict[str, Any]:
    limit = app.server.config.limits.memory_high_watermark
    return {
        "name": NODE, "type": "disc", "running": True, "being_drained": False,
        "mem_used": memory_used(), "mem_limit": limit,
        "mem_alarm": app.server.memory_alarm,
        "message_bytes_held": app.broker.meter.held_bytes,
        "disk_free": disk_free(app), "disk_free_limit": 50_000_000, "disk_free_alarm": False,
        "fd_used": fd_used(), "fd_total": fd_total(),
        "sockets_used": len(app.server.sessions),
        "sockets_total": app.server.config.limits.max_connections,
        "proc_used": 1, "proc_total": 1, "processors": os.cpu_count() or 1,
        "uptime": int((time.time() - STARTED) * 1000), "run_queue": 0,
        "partitions": [], "os_pid": str(os.getpid()),
        "rates_mode": "basic", "net_ticktime": 60,
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
    }


def listeners(app: App) -> list[dict[str, Any]]:
    host = app.server.config.listeners.host
    return [{"node": NODE, "protocol": PROTOCOL_LABELS.get(name, name), "ip_address": host,
             "port": port} for name, port in sorted(app.server.ports.items())]


# -- overview -----------------------------------------------------------------------------


@routes.add("GET", "/overview")
def overview(ctx: Ctx) -> dict[str, Any]:
    app = ctx.app
    stats = app.stats
    totals = dict(zip(("publish", "deliver_get", "ack", "redeliver", "messages_ready",
                       "messages_unacknowledged", "publish_in", "unroutable"),
                      stats.totals(), strict=True))
    vhosts = app.visible_vhosts(ctx)
    queues = [q for vh in vhosts for q in vh.queues.values() if not q.hidden]
    ready = sum(q.message_count for q in queues)
    unacked = sum(len(q.unacked) for q in queues)
    infos = [s.info() for s in app.server.sessions if app.may_see_session(ctx, s)]
    by_protocol: dict[str, int] = {}
    for info in infos:
        by_protocol[info.protocol] = by_protocol.get(info.protocol, 0) + 1
    channels = sum(len(info.channels) for info in infos)
    rate = stats.total_rate
    out = {
        "management_version": gateway.__version__,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [RETENTION], "basic": [RETENTION],
                                      "detailed": [RETENTION]},
        "exchange_types": [{"name": t, "description": "", "enabled": True}
                           for t in EXCHANGE_TYPES],
        "product_version": gateway.__version__,
        "product_name": "gateway",
        "rabbitmq_version": gateway.__version__,
        "cluster_name": NODE,
        "erlang_version": f"python {sys.version.split()[0]}",
        "erlang_full_version": sys.version,
        "disable_stats": False,
        "enable_queue_totals": True,
        "message_stats": {
            "publish": totals["publish_in"], "publish_details": details(rate("publish_in")),
            "deliver_get": totals["deliver_get"],
            "deliver_get_details": details(rate("deliver_get")),
            "ack": totals["ack"], "ack_details": details(rate("ack")),
            "redeliver": totals["redeliver"], "redeliver_details": details(rate("redeliver")),
            "return_unroutable": totals["unroutable"],
            "return_unroutable_details": details(rate("unroutable")),
        },
        "churn_rates": {
            "connection_created": sum(stats.opened.values()),
            "connection_closed": sum(stats.closed.values()),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": details(rate("messages_ready")
                                        + rate("messages_unacknowledged")),
            "messages_ready": ready, "messages_ready_details": details(rate("messages_ready")),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": details(rate("messages_unacknowledged")),
        },
        "object_totals": {
            "connections": len(infos),
            "channels": channels,
            "exchanges": sum(len(vh.exchanges) for vh in vhosts),
            "queues": len(queues),
            "consumers": sum(q.consumer_count for q in queues),
        },
        "connections_by_protocol": by_protocol,
        "statistics_db_event_queue": 0,
        "node": NODE,
        "listeners": listeners(app),
        "contexts": [{"node": NODE, "description": "gateway management", "path": "/",
                      "port": str(app.server.ports.get("http", 0))}],
    }
    ranges = Ranges.of(ctx.request.query)
    if ranges:
        add_overview_samples(out, stats, [vh.name for vh in vhosts], ranges)
    return out


@routes.add("GET", "/whoami")
def whoami(ctx: Ctx) -> dict[str, Any]:
    return {"name": ctx.user.name, "tags": list(ctx.user.tags)}


@routes.add("GET", "/nodes", Access.MONITORING)
def nodes(ctx: Ctx) -> Any:
    return list_result(ctx, [node_info(ctx.app)])


@routes.add("GET", "/nodes/{node}", Access.MONITORING)
def node(ctx: Ctx) -> dict[str, Any]:
    if ctx.params["node"] != NODE:
        raise not_found()
    return node_info(ctx.app)


@routes.add("GET", "/extensions")
def extensions(ctx: Ctx) -> list[Any]:
    return []


@routes.add("GET", "/cluster-name")
def cluster_name(ctx: Ctx) -> dict[str, str]:
    return {"name": NODE}


# Objects this broker does not have: answered as empty lists, as a RabbitMQ with none
# configured answers, so tools that read them (rabbitmqadmin list ..., exporters) work.
def _none(ctx: Ctx) -> list[Any]:
    return []


for _path in ("/feature-flags", "/parameters", "/global-parameters",
              "/operator-policies", "/federation-links", "/shovels"):
    routes.add("GET", _path)(_none)


# -- connections, channels, consumers ------------------------------------------------------


def _sessions(ctx: Ctx, vhost: str | None = None) -> list[Connected]:
    app = ctx.app
    out = [s for s in app.server.sessions if app.may_see_session(ctx, s)]
    if vhost is not None:
        app.vhost(ctx, vhost)
        out = [s for s in out if s.info().vhost == vhost]
    return sorted(out, key=lambda s: s.info().peer)


def _connections(ctx: Ctx, sessions: list[Connected]) -> Any:
    app = ctx.app
    now = app.now()
    return list_result(ctx, [shapes.connection(s, app.stats, now, app.listening)
                             for s in sessions])


@routes.add("GET", "/connections")
def connections(ctx: Ctx) -> Any:
    return _connections(ctx, _sessions(ctx))


@routes.add("GET", "/vhosts/{vhost}/connections")
def vhost_connections(ctx: Ctx) -> Any:
    return _connections(ctx, _sessions(ctx, ctx.params["vhost"]))


def _session_named(ctx: Ctx, name: str) -> Any:
    for s in _sessions(ctx):
        if shapes.connection_ref(s.info(), ctx.app.listening)["name"] == name:
            return s
    raise not_found()


@routes.add("GET", "/connections/{name}")
def connection(ctx: Ctx) -> dict[str, Any]:
    s = _session_named(ctx, ctx.params["name"])
    return shapes.connection(s, ctx.app.stats, ctx.app.now(), ctx.app.listening)


@routes.add("DELETE", "/connections/{name}")
def close_connection(ctx: Ctx) -> None:
    """Administrators close any connection, others only their own (RabbitMQ's rule:
    monitoring users see every connection but close only theirs)."""
    s = _session_named(ctx, ctx.params["name"])
    if not (ctx.has(Access.ADMINISTRATOR) or ctx.app.owns_session(ctx, s)):
        raise ApiError(401, "User not authorised to close another user's connection",
                       "not_authorised")
    reason = ctx.request.header("x-reason")
    text = f"CONNECTION_FORCED - {reason}" if reason else CLOSE_TEXT
    close_session(s, text)


@routes.add("GET", "/connections/{name}/channels")
def connection_channels(ctx: Ctx) -> Any:
    s = _session_named(ctx, ctx.params["name"])
    return list_result(ctx, shapes.channels_of(s, ctx.app.listening, ctx.app.stats))


def _channels(ctx: Ctx, vhost: str | None = None) -> Any:
    out: list[dict[str, Any]] = []
    for s in _sessions(ctx, vhost):
        out += shapes.channels_of(s, ctx.app.listening, ctx.app.stats)
    return list_result(ctx, out)


@routes.add("GET", "/channels")
def channels(ctx: Ctx) -> Any:
    return _channels(ctx)


@routes.add("GET", "/vhosts/{vhost}/channels")
def vhost_channels(ctx: Ctx) -> Any:
    return _channels(ctx, ctx.params["vhost"])


@routes.add("GET", "/channels/{name}")
def channel(ctx: Ctx) -> dict[str, Any]:
    for s in _sessions(ctx):
        for ch in shapes.channels_of(s, ctx.app.listening, ctx.app.stats):
            if ch["name"] == ctx.params["name"]:
                return ch
    raise not_found()


def _consumers(ctx: Ctx, vhosts: list[Any]) -> Any:
    """Monitoring users and administrators see every consumer, others those on their
    own connections (RabbitMQ's rule)."""
    every = ctx.has(Access.MONITORING)
    out = []
    for vh in vhosts:
        for q in vh.queues.values():
            out += [shapes.consumer(c, q, ctx.app.listening) for c in q.consumers
                    if every or _consumer_user(c) == ctx.user.name]
    return list_result(ctx, out)


def _consumer_user(consumer: Consumer) -> str | None:
    owner = shapes.owner_of(consumer)
    return owner.connection.info().user if owner is not None else None


@routes.add("GET", "/consumers")
def consumers(ctx: Ctx) -> Any:
    return _consumers(ctx, ctx.app.visible_vhosts(ctx))


@routes.add("GET", "/consumers/{vhost}", vhost_scope=VhostScope.VISIBLE)
def vhost_consumers(ctx: Ctx) -> Any:
    return _consumers(ctx, [ctx.app.vhost(ctx, ctx.params["vhost"])])


# -- health checks --------------------------------------------------------------------------


def _health(ok: bool, reason: str) -> Any:
    if ok:
        return {"status": "ok"}
    return Response(503, dumps({"status": "failed", "reason": reason}))


@routes.add("GET", "/health/checks/alarms", Access.MONITORING)
def alarms(ctx: Ctx) -> Any:
    alarm = ctx.app.server.memory_alarm
    return _health(not alarm, "resource alarm(s) in effect: memory")


@routes.add("GET", "/health/checks/local-alarms", Access.MONITORING)
def local_alarms(ctx: Ctx) -> Any:
    return alarms(ctx)


@routes.add("GET", "/health/checks/virtual-hosts", Access.MONITORING)
def vhosts_health(ctx: Ctx) -> Any:
    return {"status": "ok"}


@routes.add("GET", "/health/checks/ready-to-serve-clients", Access.MONITORING)
def ready(ctx: Ctx) -> Any:
    return _health(bool(ctx.app.server.ports), "no listeners")


@routes.add("GET", "/health/checks/node-is-quorum-critical", Access.MONITORING)
def quorum_critical(ctx: Ctx) -> Any:
    return {"status": "ok"}


@routes.add("GET", "/health/checks/port-listener/{port}", Access.MONITORING)
def port_listener(ctx: Ctx) -> Any:
    try:
        port = int(ctx.params["port"])
    except ValueError:
        raise ApiError(400, "port must be an integer") from None
    ok = port in ctx.app.server.ports.values()
    return _health(ok, f"No active listener on port {port}")


@routes.add("GET", "/health/checks/protocol-listener/{protocol}", Access.MONITORING)
def protocol_listener(ctx: Ctx) -> Any:
    wanted = ctx.params["protocol"].lower()
    known = {protocol_key_alias(name) for name in ctx.app.server.ports}
    return _health(protocol_key_alias(wanted) in known,
                   f"No active listener for protocol {wanted}")


def protocol_key_alias(name: str) -> str:
    """RabbitMQ accepts protocol names like `amqp091`, `amqp0-9-1`, `mqtt`, `stomp`."""
    name = name.lower()
    if name.startswith("amqp"):
        return "amqp"
    if name.startswith("http") or name == "management":
        return "http"
    return name


@routes.add("GET", "/aliveness-test/{vhost}")
def aliveness(ctx: Ctx) -> Any:
    ctx.app.vhost(ctx, ctx.params["vhost"])
    return {"status": "ok"}


