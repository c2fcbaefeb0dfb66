"""Routes for users, vhosts, permissions, topic permissions, policies and definitions.

Reads come from `AuthService` and the vhosts; changes go through `AuthService`,
`VirtualHost.set_policy/clear_policy` and `gateway.definitions`, which persist them. An
operation whose backing API this build lacks answers 501 with a JSON error naming it.
"""

from __future__ import annotations

from typing import Any

from gateway import definitions
from gateway.auth.passwords import (
    HASHING_SCRYPT,
    HASHING_SHA256,
    hashing_algorithm,
    is_password_hash,
)
from gateway.core.vhost import VirtualHost
from gateway.management.answers import ApiError, not_found
from gateway.management.router import Access, Ctx, Routes, VhostScope, list_result
from gateway.management.shapes import NODE
from gateway.web import Response

routes = Routes()


def call(obj: object, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a backing API by name; 501 when this build does not have it."""
    fn = getattr(obj, name, None)
    if fn is None:
        raise ApiError(501, f"{type(obj).__name__}.{name} is not available in this build")
    return fn(*args, **kwargs)


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise ApiError(400, "tags must be a comma-separated string or a list of strings")


# -- users --------------------------------------------------------------------------------


def user_json(u: Any) -> dict[str, Any]:
    password_hash = getattr(u, "password_hash", "")
    return {"name": u.name, "password_hash": password_hash,
            "hashing_algorithm": hashing_algorithm(password_hash), "tags": list(u.tags),
            "limits": {}}


def _users(ctx: Ctx) -> list[Any]:
    return sorted(call(ctx.app.auth, "list_users"), key=lambda u: u.name)


@routes.add("GET", "/users", Access.ADMINISTRATOR)
def users(ctx: Ctx) -> Any:
    return list_result(ctx, [user_json(u) for u in _users(ctx)])


@routes.add("GET", "/users/without-permissions", Access.ADMINISTRATOR)
def users_without_permissions(ctx: Ctx) -> Any:
    granted = {p.user for p in call(ctx.app.auth, "list_permissions")}
    return list_result(ctx, [user_json(u) for u in _users(ctx) if u.name not in granted])


@routes.add("GET", "/users/{user}", Access.ADMINISTRATOR)
def user(ctx: Ctx) -> dict[str, Any]:
    u = ctx.app.auth.user(ctx.params["user"])
    if u is None:
        raise not_found()
    return user_json(u)


@routes.add("PUT", "/users/{user}", Access.ADMINISTRATOR)
def put_user(ctx: Ctx) -> Response:
    name = ctx.params["user"]
    body = ctx.body_json()
    existed = ctx.app.auth.user(name) is not None
    password = body.get("password")
    password_hash = body.get("password_hash")
    if password is not None and not isinstance(password, str):
        raise ApiError(400, "password must be a string")
    if password_hash is not None and not isinstance(password_hash, str):
        raise ApiError(400, "password_hash must be a string")
    if password is None and password_hash is None:
        raise ApiError(400, "[{key_missing,password_hash}]")
    algorithm = body.get("hashing_algorithm")
    if password_hash and algorithm is not None and not is_password_hash(password_hash,
                                                                       algorithm):
        raise ApiError(400, f"hashing_algorithm {algorithm!r} is not supported here or "
                            "does not match password_hash (supported: "
                            f"{HASHING_SHA256}, {HASHING_SCRYPT})")
    call(ctx.app.auth, "add_user", name, password=password, password_hash=password_hash,
         tags=_tags(body.get("tags")))
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/users/{user}", Access.ADMINISTRATOR)
def delete_user(ctx: Ctx) -> None:
    call(ctx.app.auth, "delete_user", ctx.params["user"])
    ctx.app.changed()


@routes.add("POST", "/users/bulk-delete", Access.ADMINISTRATOR)
def bulk_delete_users(ctx: Ctx) -> None:
    names = ctx.body_json().get("users")
    if not isinstance(names, list):
        raise ApiError(400, "users must be a list of names")
    for name in names:
        if isinstance(name, str) and ctx.app.auth.user(name) is not None:
            call(ctx.app.auth, "delete_user", name)
    ctx.app.changed()


@routes.add("GET", "/users/{user}/permissions", Access.ADMINISTRATOR)
def user_permissions(ctx: Ctx) -> Any:
    if ctx.app.auth.user(ctx.params["user"]) is None:
        raise not_found()
    return list_result(ctx, [p for p in _permissions(ctx) if p["user"] == ctx.params["user"]])


# -- vhosts --------------------------------------------------------------------------------


def vhost_json(ctx: Ctx, vh: VirtualHost) -> dict[str, Any]:
    queues = [q for q in vh.queues.values() if not q.hidden]
    ready = sum(q.message_count for q in queues)
    unacked = sum(len(q.unacked) for q in queues)
    return {"name": vh.name, "description": "", "tags": [], "default_queue_type": "classic",
            "metadata": {"description": "", "tags": []},
            "tracing": ctx.app.tracer.enabled(vh.name),
            "cluster_state": {NODE: "running"},
            "messages": ready + unacked, "messages_ready": ready,
            "messages_unacknowledged": unacked,
            "message_stats": {"publish": vh.stats_published}}


@routes.add("GET", "/vhosts")
def vhosts(ctx: Ctx) -> Any:
    return list_result(ctx, [vhost_json(ctx, vh) for vh in
                             sorted(ctx.app.visible_vhosts(ctx), key=lambda v: v.name)])


@routes.add("GET", "/vhosts/{vhost}", vhost_scope=VhostScope.VISIBLE)
def vhost(ctx: Ctx) -> dict[str, Any]:
    return vhost_json(ctx, ctx.app.vhost(ctx, ctx.params["vhost"]))


@routes.add("PUT", "/vhosts/{vhost}", Access.ADMINISTRATOR)
def put_vhost(ctx: Ctx) -> Response:
    name = ctx.params["vhost"]
    body = ctx.body_json()
    existed = name in ctx.app.broker.vhosts
    call(ctx.app.auth, "add_vhost", name)
    if not existed and not ctx.user.node_local:
        # as RabbitMQ's API does: whoever creates a vhost may use it
        call(ctx.app.auth, "set_permissions", ctx.user.name, name, ".*", ".*", ".*")
    if "tracing" in body:
        ctx.app.tracer.enable(name, bool(body["tracing"]))
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/vhosts/{vhost}", Access.ADMINISTRATOR)
def delete_vhost(ctx: Ctx) -> None:
    name = ctx.params["vhost"]
    if name not in ctx.app.broker.vhosts:
        raise not_found()
    call(ctx.app.auth, "delete_vhost", name)
    ctx.app.tracer.enable(name, False)
    ctx.app.changed()


@routes.add("GET", "/vhosts/{vhost}/permissions", Access.ADMINISTRATOR)
def vhost_permissions(ctx: Ctx) -> Any:
    ctx.app.vhost(ctx, ctx.params["vhost"])
    return list_result(ctx, [p for p in _permissions(ctx)
                             if p["vhost"] == ctx.params["vhost"]])


# -- permissions -------------------------------------------------------------------------


def _permissions(ctx: Ctx) -> list[dict[str, Any]]:
    out = [{"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write,
            "read": p.read} for p in call(ctx.app.auth, "list_permissions")]
    return sorted(out, key=lambda p: (p["vhost"], p["user"]))


@routes.add("GET", "/permissions", Access.ADMINISTRATOR)
def permissions(ctx: Ctx) -> Any:
    return list_result(ctx, _permissions(ctx))


@routes.add("GET", "/permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def permission(ctx: Ctx) -> dict[str, Any]:
    for p in _permissions(ctx):
        if p["vhost"] == ctx.params["vhost"] and p["user"] == ctx.params["user"]:
            return p
    raise not_found()


def _grant_body(ctx: Ctx, keys: tuple[str, ...]) -> tuple[str, str, list[str]]:
    """(vhost, user, the body's strings under `keys`) of a PUT of a (topic) permission:
    400 for a missing key, 404 for an unknown user or vhost."""
    vhost, name = ctx.params["vhost"], ctx.params["user"]
    body = ctx.body_json()
    values = []
    for key in keys:
        value = body.get(key)
        if not isinstance(value, str):
            raise ApiError(400, f"[{{key_missing,{key}}}]")
        values.append(value)
    if ctx.app.auth.user(name) is None or vhost not in ctx.app.broker.vhosts:
        raise not_found()
    return vhost, name, values


@routes.add("PUT", "/permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def put_permission(ctx: Ctx) -> Response:
    vhost, name, regexes = _grant_body(ctx, ("configure", "write", "read"))
    existed = any(p["vhost"] == vhost and p["user"] == name for p in _permissions(ctx))
    call(ctx.app.auth, "set_permissions", name, vhost, *regexes)
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def delete_permission(ctx: Ctx) -> None:
    call(ctx.app.auth, "clear_permissions", ctx.params["user"], ctx.params["vhost"])
    ctx.app.changed()


# -- topic permissions (RabbitMQ's shape: user, vhost, exchange, write, read) -----------------


def _topic_permissions(ctx: Ctx) -> list[dict[str, Any]]:
    out = [{"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write,
            "read": t.read} for t in call(ctx.app.auth, "list_topic_permissions")]
    return sorted(out, key=lambda t: (t["vhost"], t["user"], t["exchange"]))


@routes.add("GET", "/topic-permissions", Access.ADMINISTRATOR)
def topic_permissions(ctx: Ctx) -> Any:
    return list_result(ctx, _topic_permissions(ctx))


@routes.add("GET", "/topic-permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def user_vhost_topic_permissions(ctx: Ctx) -> Any:  # a list, as in RabbitMQ
    vhost, name = ctx.params["vhost"], ctx.params["user"]
    found = [t for t in _topic_permissions(ctx) if t["vhost"] == vhost and t["user"] == name]
    if not found:
        raise not_found()
    return list_result(ctx, found)


@routes.add("PUT", "/topic-permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def put_topic_permission(ctx: Ctx) -> Response:
    vhost, name, values = _grant_body(ctx, ("exchange", "write", "read"))
    existed = any(t["vhost"] == vhost and t["user"] == name and t["exchange"] == values[0]
                  for t in _topic_permissions(ctx))
    call(ctx.app.auth, "set_topic_permissions", name, vhost, *values)
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/topic-permissions/{vhost}/{user}", Access.ADMINISTRATOR)
def delete_topic_permission(ctx: Ctx) -> None:
    """Clears every topic permission of the user in the vhost (RabbitMQ's API), or only
    the one on `?exchange=name`."""
    exchange = ctx.query("exchange")
    call(ctx.app.auth, "clear_topic_permissions", ctx.params["user"], ctx.params["vhost"],
         exchange or None)
    ctx.app.changed()


@routes.add("GET", "/users/{user}/topic-permissions", Access.ADMINISTRATOR)
def user_topic_permissions(ctx: Ctx) -> Any:
    if ctx.app.auth.user(ctx.params["user"]) is None:
        raise not_found()
    return list_result(ctx, [t for t in _topic_permissions(ctx)
                             if t["user"] == ctx.params["user"]])


@routes.add("GET", "/vhosts/{vhost}/topic-permissions", Access.ADMINISTRATOR)
def vhost_topic_permissions(ctx: Ctx) -> Any:
    ctx.app.vhost(ctx, ctx.params["vhost"])
    return list_result(ctx, [t for t in _topic_permissions(ctx)
                             if t["vhost"] == ctx.params["vhost"]])


# -- policies -----------------------------------------------------------------------------


def policy_json(vhost: str, p: Any) -> dict[str, Any]:
    return {"vhost": vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
            "definition": dict(p.definition), "priority": p.priority}


def _policies(vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
    out = []
    for vh in vhosts:
        policies = getattr(vh, "policies", {})
        out += [policy_json(vh.name, p) for p in policies.values()]
    return out


@routes.add("GET", "/policies", Access.POLICYMAKER)
def policies(ctx: Ctx) -> Any:
    return list_result(ctx, _policies(ctx.app.login_vhosts(ctx)))


@routes.add("GET", "/policies/{vhost}", Access.POLICYMAKER)
def vhost_policies(ctx: Ctx) -> Any:
    return list_result(ctx, _policies([ctx.app.vhost(ctx, ctx.params["vhost"])]))


@routes.add("GET", "/policies/{vhost}/{name}", Access.POLICYMAKER)
def policy(ctx: Ctx) -> dict[str, Any]:
    for p in _policies([ctx.app.vhost(ctx, ctx.params["vhost"])]):
        if p["name"] == ctx.params["name"]:
            return p
    raise not_found()


@routes.add("PUT", "/policies/{vhost}/{name}", Access.POLICYMAKER)
def put_policy(ctx: Ctx) -> Response:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    name = ctx.params["name"]
    body = ctx.body_json()
    pattern, definition = body.get("pattern"), body.get("definition")
    if not isinstance(pattern, str):
        raise ApiError(400, "[{key_missing,pattern}]")
    if not isinstance(definition, dict):
        raise ApiError(400, "[{key_missing,definition}]")
    priority = body.get("priority", 0)
    if isinstance(priority, str) and priority.lstrip("-").isdigit():
        priority = int(priority)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ApiError(400, "priority must be an integer")
    apply_to = body.get("apply-to", "all")
    if not isinstance(apply_to, str):
        raise ApiError(400, "apply-to must be a string")
    existed = name in getattr(vh, "policies", {})
    call(vh, "set_policy", name, pattern, definition, priority, apply_to, now=ctx.app.now())
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/policies/{vhost}/{name}", Access.POLICYMAKER)
def delete_policy(ctx: Ctx) -> None:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    call(vh, "clear_policy", ctx.params["name"], now=ctx.app.now())
    ctx.app.changed()


# -- definitions ----------------------------------------------------------------------------


@routes.add("GET", "/definitions", Access.ADMINISTRATOR)
def export(ctx: Ctx) -> Any:
    return definitions.export_definitions(ctx.app.broker, ctx.app.auth)


@routes.add("POST", "/definitions", Access.ADMINISTRATOR)
def import_(ctx: Ctx) -> None:
    definitions.import_definitions(ctx.app.broker, ctx.app.auth, ctx.body_json(),
                                   now=ctx.app.now())
    ctx.app.changed()


@routes.add("GET", "/definitions/{vhost}", Access.ADMINISTRATOR)
def export_vhost(ctx: Ctx) -> Any:
    vhost = ctx.params["vhost"]
    ctx.app.vhost(ctx, vhost)
    full = export(ctx)
    out: dict[str, Any] = {k: v for k, v in full.items()
                           if k not in ("users", "vhosts", "permissions", "topic_permissions",
                                        "global_parameters")}
    for key in ("queues", "exchanges", "bindings", "policies", "parameters"):
        items = full.get(key, [])
        out[key] = [{k: v for k, v in i.items() if k != "vhost"} for i in items
                    if i.get("vhost") == vhost]
    return out
