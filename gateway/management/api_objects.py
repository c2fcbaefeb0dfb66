"""Routes for exchanges, queues and bindings: list, show, declare, delete, purge, and the
two message operations RabbitMQ's API has (publish to an exchange, get from a queue).

Every operation asks `gateway.auth.access`, as an AMQP client of the same user would be
asked, before it changes anything: declaring and deleting need configure (and an alternate
or dead-letter exchange write), binding write on the destination, read on the source and
the topic read permission on the binding key, publishing write and the topic write
permission on the routing key, getting and purging read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.auth import access
from gateway.core.exchange import Exchange
from gateway.core.message import Message, Properties
from gateway.core.queue import Queue
from gateway.core.vhost import VirtualHost
from gateway.management import shapes
from gateway.management.answers import ApiError, jsonable, not_found
from gateway.management.history import Ranges, add_queue_samples
from gateway.management.router import Ctx, Routes, list_result
from gateway.web import Response

routes = Routes()
DEFAULT_EXCHANGE_URL = "amq.default"  # the default exchange's name in URLs
GET_MAX = 1000  # messages one get request may take


def _exchange_name(raw: str) -> str:
    return "" if raw == DEFAULT_EXCHANGE_URL else raw


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _intish(value: Any) -> Any:
    """rabbitmqadmin sends numbers as strings ("count": "1")."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _arguments(body: dict[str, Any]) -> dict[str, Any]:
    args = body.get("arguments") or {}
    if not isinstance(args, dict):
        raise ApiError(400, "arguments must be a JSON object")
    return args


def _created(existed: bool) -> Response:
    return Response(204 if existed else 201, b"")


# -- exchanges -----------------------------------------------------------------------------


def _exchanges(ctx: Ctx, vhosts: list[VirtualHost]) -> Any:
    return list_result(ctx, [shapes.exchange(x, vh.delayed.by_exchange)
                             for vh in vhosts for x in vh.exchanges.values()])


@routes.add("GET", "/exchanges")
def exchanges(ctx: Ctx) -> Any:
    return _exchanges(ctx, ctx.app.login_vhosts(ctx))


@routes.add("GET", "/exchanges/{vhost}")
def vhost_exchanges(ctx: Ctx) -> Any:
    return _exchanges(ctx, [ctx.app.vhost(ctx, ctx.params["vhost"])])


def _get_exchange(ctx: Ctx) -> tuple[VirtualHost, Exchange]:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    x = vh.exchanges.get(_exchange_name(ctx.params["name"]))
    if x is None:
        raise not_found()
    return vh, x


@routes.add("GET", "/exchanges/{vhost}/{name}")
def exchange(ctx: Ctx) -> dict[str, Any]:
    vh, x = _get_exchange(ctx)
    return shapes.exchange(x, vh.delayed.by_exchange)


@routes.add("PUT", "/exchanges/{vhost}/{name}")
def declare_exchange(ctx: Ctx) -> Response:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    name = _exchange_name(ctx.params["name"])
    body = ctx.body_json()
    xtype = body.get("type")
    if not isinstance(xtype, str):
        raise ApiError(400, "[{key_missing,type}]")
    args = _arguments(body)
    access.declare_exchange(ctx.app.auth, ctx.user, vh, name, arguments=args)
    existed = name in vh.exchanges
    vh.declare_exchange(name, xtype, durable=_bool(body, "durable", True),
                        auto_delete=_bool(body, "auto_delete"),
                        internal=_bool(body, "internal"), arguments=args)
    ctx.app.changed()
    return _created(existed)


@routes.add("DELETE", "/exchanges/{vhost}/{name}")
def delete_exchange(ctx: Ctx) -> None:
    vh, x = _get_exchange(ctx)
    access.delete_exchange(ctx.app.auth, ctx.user, vh, x.name)
    vh.delete_exchange(x.name, if_unused=ctx.flag("if-unused"))
    ctx.app.changed()


@routes.add("GET", "/exchanges/{vhost}/{name}/bindings/source")
def exchange_bindings_source(ctx: Ctx) -> Any:
    vh, x = _get_exchange(ctx)
    if x.name == "":
        items = [shapes.default_binding(q) for q in vh.queues.values() if not q.hidden]
    else:
        items = [shapes.binding(b, vh.name) for b in x.bindings]
    return list_result(ctx, items)


@routes.add("GET", "/exchanges/{vhost}/{name}/bindings/destination")
def exchange_bindings_destination(ctx: Ctx) -> Any:
    vh, x = _get_exchange(ctx)
    return list_result(ctx, [shapes.binding(b, vh.name) for b in vh.bindings()
                             if b.destination is x])


_STR_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to",
                   "expiration", "message_id", "type", "user_id", "app_id", "cluster_id")


def properties_from_json(data: Any) -> Properties:
    """AMQP basic properties from the API's JSON, checked so that every protocol can
    carry them afterwards (a number where AMQP wants a short string is refused here)."""
    if not isinstance(data, dict):
        raise ApiError(400, "properties must be a JSON object")
    props = Properties()
    for key, value in data.items():
        if key not in Properties.__slots__:
            raise ApiError(400, f"unknown message property '{key}'")
        if value is None:
            continue
        if key == "headers":
            if not isinstance(value, dict):
                raise ApiError(400, "headers must be a JSON object")
        elif key in _STR_PROPERTIES:
            if not isinstance(value, str) or len(value.encode()) > 255:
                raise ApiError(400, f"{key} must be a string of at most 255 bytes")
        elif key in ("delivery_mode", "priority", "timestamp"):
            high = {"delivery_mode": 2, "priority": 255, "timestamp": 253402300799}[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise ApiError(400, f"{key} must be an integer from 0 to {high}")
            if key == "timestamp":
                from datetime import UTC, datetime

                value = datetime.fromtimestamp(value, UTC)
        setattr(props, key, value)
    return props


def decode_payload(body: dict[str, Any]) -> bytes:
    payload = body.get("payload", "")
    if not isinstance(payload, str):
        raise ApiError(400, "payload must be a string")
    encoding = body.get("payload_encoding", "string")
    if encoding == "string":
        return payload.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise ApiError(400, "payload is not valid base64") from None
    raise ApiError(400, "payload_encoding must be 'string' or 'base64'")


@routes.add("POST", "/exchanges/{vhost}/{name}/publish")
def publish(ctx: Ctx) -> dict[str, Any]:
    vh, x = _get_exchange(ctx)
    body = ctx.body_json()
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):
        raise ApiError(400, "routing_key must be a string")
    props = properties_from_json(body.get("properties") or {})
    payload = decode_payload(body)
    access.publish(ctx.app.auth, ctx.user, vh, x.name, routing_key)
    vh.exchange_for_publish(x.name)
    message = Message(vh.next_message_id(), x.name, routing_key, props, payload, "management")
    result = vh.publish(x, routing_key, message, ctx.app.now())
    ctx.app.changed()
    return {"routed": result.routed}


# -- queues -------------------------------------------------------------------------------


def _queue(ctx: Ctx, q: Queue, ranges: Ranges) -> dict[str, Any]:
    out = shapes.queue(q, ctx.app.stats, ctx.app.now())
    if ranges:
        add_queue_samples(out, ctx.app.stats, q, ranges)
    return out


def _queues(ctx: Ctx, vhosts: list[VirtualHost]) -> Any:
    ranges = Ranges.of(ctx.request.query)
    return list_result(ctx, [_queue(ctx, q, ranges) for vh in vhosts
                             for q in vh.queues.values() if not q.hidden])


@routes.add("GET", "/queues")
def queues(ctx: Ctx) -> Any:
    return _queues(ctx, ctx.app.login_vhosts(ctx))


@routes.add("GET", "/queues/detailed")
def queues_detailed(ctx: Ctx) -> Any:
    return _queues(ctx, ctx.app.login_vhosts(ctx))


@routes.add("GET", "/queues/{vhost}")
def vhost_queues(ctx: Ctx) -> Any:
    return _queues(ctx, [ctx.app.vhost(ctx, ctx.params["vhost"])])


def get_queue(ctx: Ctx) -> tuple[VirtualHost, Queue]:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    q = vh.queues.get(ctx.params["name"])
    if q is None or q.hidden:
        raise not_found()
    return vh, q


@routes.add("GET", "/queues/{vhost}/{name}")
def queue(ctx: Ctx) -> dict[str, Any]:
    _, q = get_queue(ctx)
    out = _queue(ctx, q, Ranges.of(ctx.request.query))
    out["consumer_details"] = [shapes.consumer(c, q, ctx.app.listening) for c in q.consumers]
    out["deliveries"] = []
    out["incoming"] = []
    return out


@routes.add("PUT", "/queues/{vhost}/{name}")
def declare_queue(ctx: Ctx) -> Response:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    name = ctx.params["name"]
    body = ctx.body_json()
    args = _arguments(body)
    qtype = body.get("type")
    if qtype is not None and "x-queue-type" not in args:
        args["x-queue-type"] = qtype  # the core checks it as a declare does
    access.declare_queue(ctx.app.auth, ctx.user, vh, name, arguments=args)
    existed = name in vh.queues
    vh.declare_queue(name, durable=_bool(body, "durable", True),
                     auto_delete=_bool(body, "auto_delete"), arguments=args,
                     now=ctx.app.now())
    ctx.app.changed()
    return _created(existed)


@routes.add("DELETE", "/queues/{vhost}/{name}")
def delete_queue(ctx: Ctx) -> None:
    vh, q = get_queue(ctx)
    access.delete_queue(ctx.app.auth, ctx.user, vh, q.name)
    vh.delete_queue(q.name, if_unused=ctx.flag("if-unused"), if_empty=ctx.flag("if-empty"),
                    owner=q.exclusive_owner)
    ctx.app.changed()


@routes.add("DELETE", "/queues/{vhost}/{name}/contents")
def purge_queue(ctx: Ctx) -> None:
    vh, q = get_queue(ctx)
    access.purge(ctx.app.auth, ctx.user, vh, q.name)
    q.purge()
    ctx.app.changed()


@routes.add("GET", "/queues/{vhost}/{name}/bindings")
def queue_bindings(ctx: Ctx) -> Any:
    vh, q = get_queue(ctx)
    items = [shapes.default_binding(q)]
    items += [shapes.binding(b, vh.name) for b in q.bound_by]
    return list_result(ctx, items)


def message_json(entry_message: Message, redelivered: bool, remaining: int,
                 encoding: str, truncate: int | None) -> dict[str, Any]:
    body = entry_message.body
    shown = body[:truncate] if truncate is not None else body
    payload: str
    payload_encoding = "string"
    if encoding == "base64":
        payload, payload_encoding = base64.b64encode(shown).decode(), "base64"
    else:
        try:
            payload = shown.decode("utf-8")
        except UnicodeDecodeError:
            payload, payload_encoding = base64.b64encode(shown).decode(), "base64"
    props = {k: jsonable(getattr(entry_message.properties, k))
             for k in Properties.__slots__
             if getattr(entry_message.properties, k) is not None}
    return {"payload_bytes": len(body), "redelivered": redelivered,
            "exchange": entry_message.exchange, "routing_key": entry_message.routing_key,
            "message_count": remaining, "properties": props, "payload": payload,
            "payload_encoding": payload_encoding}


@routes.add("POST", "/queues/{vhost}/{name}/get")
def get_messages(ctx: Ctx) -> list[dict[str, Any]]:
    vh, q = get_queue(ctx)
    body = ctx.body_json()
    count = _intish(body.get("count", 1))
    ackmode = body.get("ackmode", "ack_requeue_true")
    # rabbitmqadmin 3.x still sends the older requeue flag instead of ackmode
    if "ackmode" not in body and "requeue" in body:
        ackmode = "ack_requeue_true" if _bool(body, "requeue") else "ack_requeue_false"
    encoding = body.get("encoding", "auto")
    truncate = _intish(body.get("truncate"))
    if not isinstance(count, int) or not 1 <= count <= GET_MAX:
        raise ApiError(400, f"count must be an integer from 1 to {GET_MAX}")
    if ackmode not in ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
                       "reject_requeue_false"):
        raise ApiError(400, f"unknown ackmode '{ackmode}'")
    if encoding not in ("auto", "base64"):
        raise ApiError(400, "encoding must be 'auto' or 'base64'")
    if truncate is not None and (not isinstance(truncate, int) or truncate < 0):
        raise ApiError(400, "truncate must be a non-negative integer")
    access.get(ctx.app.auth, ctx.user, vh, q.name)
    now = ctx.app.now()
    requeue = ackmode.endswith("requeue_true")
    taken = []
    out = []
    for _ in range(count):
        entry = q.get(no_ack=ackmode == "ack_requeue_false", now=now)
        if entry is None:
            break
        out.append(message_json(entry.message, entry.redelivered, q.message_count,
                                encoding, truncate))
        taken.append(entry)
    if requeue:
        q.requeue(taken, now)
    elif ackmode == "reject_requeue_false":
        for entry in taken:
            q.reject(entry, now)
    ctx.app.changed()
    return out


# -- bindings -----------------------------------------------------------------------------


@routes.add("GET", "/bindings")
def bindings(ctx: Ctx) -> Any:
    return list_result(ctx, [b for vh in ctx.app.login_vhosts(ctx)
                             for b in shapes.bindings_of(vh)])


@routes.add("GET", "/bindings/{vhost}")
def vhost_bindings(ctx: Ctx) -> Any:
    return list_result(ctx, shapes.bindings_of(ctx.app.vhost(ctx, ctx.params["vhost"])))


def _ends(ctx: Ctx, kind: str) -> tuple[VirtualHost, Exchange, Queue | Exchange]:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    source = vh.exchanges.get(_exchange_name(ctx.params["source"]))
    dest: Queue | Exchange | None
    if kind == "q":
        dest = vh.queues.get(ctx.params["dest"])
    else:
        dest = vh.exchanges.get(_exchange_name(ctx.params["dest"]))
    if source is None or dest is None:
        raise not_found()
    return vh, source, dest


def _list_between(ctx: Ctx, kind: str) -> Any:
    vh, source, dest = _ends(ctx, kind)
    if source.name == "" and isinstance(dest, Queue):
        return [shapes.default_binding(dest)]
    return list_result(ctx, [shapes.binding(b, vh.name) for b in source.bindings
                             if b.destination is dest])


def _create_binding(ctx: Ctx, kind: str) -> Response:
    vh, source, dest = _ends(ctx, kind)
    body = ctx.body_json()
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):
        raise ApiError(400, "routing_key must be a string")
    args = _arguments(body)
    access.bind(ctx.app.auth, ctx.user, vh, source=source.name, destination=dest.name,
                destination_kind="queue" if isinstance(dest, Queue) else "exchange",
                routing_key=routing_key)
    vh.bind(dest, source.name, routing_key, args)
    ctx.app.changed()
    key = shapes.properties_key(routing_key, args)
    location = f"{ctx.request.path.rstrip('/')}/{_quote(key)}"
    return Response(201, b"", headers=[("location", location)])


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="~")


def _binding_named(ctx: Ctx, kind: str) -> tuple[VirtualHost, Any]:
    vh, source, dest = _ends(ctx, kind)
    props = ctx.params["props"]
    for b in source.bindings:
        if b.destination is dest and shapes.properties_key(b.routing_key, b.arguments) == props:
            return vh, b
    raise not_found()


def _delete_binding(ctx: Ctx, kind: str) -> None:
    vh, b = _binding_named(ctx, kind)
    dest = b.destination
    access.unbind(ctx.app.auth, ctx.user, vh, source=b.source.name, destination=dest.name,
                  destination_kind="queue" if isinstance(dest, Queue) else "exchange",
                  routing_key=b.routing_key)
    vh.unbind(dest, b.source.name, b.routing_key, b.arguments)
    ctx.app.changed()


for _kind in ("q", "e"):
    def _make(kind: str) -> None:
        base = f"/bindings/{{vhost}}/e/{{source}}/{kind}/{{dest}}"
        routes.add("GET", base)(lambda ctx: _list_between(ctx, kind))
        routes.add("POST", base)(lambda ctx: _create_binding(ctx, kind))
        routes.add("GET", base + "/{props}")(
            lambda ctx: shapes.binding(_binding_named(ctx, kind)[1], ctx.params["vhost"]))
        routes.add("DELETE", base + "/{props}")(lambda ctx: _delete_binding(ctx, kind))

    _make(_kind)
