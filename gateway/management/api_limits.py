"""Routes for runtime limits, as RabbitMQ's management API has them (`rabbit_mgmt_wm_limit*`,
`rabbit_mgmt_wm_user_limit*`):

- `GET /api/vhost-limits`, `GET /api/vhost-limits/{vhost}`: `[{"vhost": v, "value": {...}}]`
  for the vhosts the user may see;
- `PUT /api/vhost-limits/{vhost}/{name}` with `{"value": N}`, `DELETE` the same path
  (administrators): one of `max-connections`, `max-queues`;
- `GET /api/user-limits` (administrators), `GET /api/user-limits/{user}` (administrators,
  monitoring users, or that user): `[{"user": u, "value": {...}}]`;
- `PUT /api/user-limits/{user}/{name}` with `{"value": N}`, `DELETE` the same path
  (administrators): `max-connections`, `max-channels`.

Changes go through `AuthService`, which persists them (`gateway.auth.limits`).
"""

from __future__ import annotations

from typing import Any

from gateway.management.answers import ApiError, not_found
from gateway.management.router import Access, Ctx, Routes, list_result
from gateway.web import Response

routes = Routes()


def _value(ctx: Ctx) -> Any:
    body = ctx.body_json()
    if "value" not in body:
        raise ApiError(400, 'the body must be {"value": N}')
    return body["value"]


@routes.add("GET", "/vhost-limits", Access.MANAGEMENT)
def vhost_limits(ctx: Ctx) -> Any:
    visible = {vh.name for vh in ctx.app.visible_vhosts(ctx)}
    return list_result(ctx, [{"vhost": v, "value": lim}
                             for v, lim in ctx.app.auth.list_vhost_limits() if v in visible])


@routes.add("GET", "/vhost-limits/{vhost}", Access.MANAGEMENT)
def one_vhost_limits(ctx: Ctx) -> Any:
    vhost = ctx.params["vhost"]
    ctx.app.vhost(ctx, vhost)  # 404 / 401 as for the vhost itself
    found = ctx.app.auth.vhost_limits(vhost)
    return list_result(ctx, [{"vhost": vhost, "value": found}] if found else [])


@routes.add("PUT", "/vhost-limits/{vhost}/{name}", Access.ADMINISTRATOR)
def put_vhost_limit(ctx: Ctx) -> Response:
    vhost, name = ctx.params["vhost"], ctx.params["name"]
    if not ctx.app.auth.vhost_exists(vhost):
        raise not_found()
    existed = name in ctx.app.auth.vhost_limits(vhost)
    ctx.app.auth.set_vhost_limit(vhost, name, _value(ctx))
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/vhost-limits/{vhost}/{name}", Access.ADMINISTRATOR)
def delete_vhost_limit(ctx: Ctx) -> None:
    vhost = ctx.params["vhost"]
    if not ctx.app.auth.vhost_exists(vhost):
        raise not_found()
    ctx.app.auth.clear_vhost_limits(vhost, ctx.params["name"])
    ctx.app.changed()


@routes.add("GET", "/user-limits", Access.ADMINISTRATOR)
def user_limits(ctx: Ctx) -> Any:
    return list_result(ctx, [{"user": u, "value": lim}
                             for u, lim in ctx.app.auth.list_user_limits()])


@routes.add("GET", "/user-limits/{user}", Access.MANAGEMENT)
def one_user_limits(ctx: Ctx) -> Any:
    name = ctx.params["user"]
    if ctx.access < Access.MONITORING and name != ctx.user.name:
        raise ApiError(401, f"user '{ctx.user.name}' may not read the limits of "
                            f"user '{name}'", "not_authorised")
    if ctx.app.auth.user(name) is None:
        raise not_found()
    found = ctx.app.auth.user_limits(name)
    return list_result(ctx, [{"user": name, "value": found}] if found else [])


@routes.add("PUT", "/user-limits/{user}/{name}", Access.ADMINISTRATOR)
def put_user_limit(ctx: Ctx) -> Response:
    user, name = ctx.params["user"], ctx.params["name"]
    if ctx.app.auth.user(user) is None:
        raise not_found()
    existed = name in ctx.app.auth.user_limits(user)
    ctx.app.auth.set_user_limits(user, {name: _value(ctx)})
    ctx.app.changed()
    return Response(204 if existed else 201, b"")


@routes.add("DELETE", "/user-limits/{user}/{name}", Access.ADMINISTRATOR)
def delete_user_limit(ctx: Ctx) -> None:
    user = ctx.params["user"]
    if ctx.app.auth.user(user) is None:
        raise not_found()
    ctx.app.auth.clear_user_limits(user, ctx.params["name"])
    ctx.app.changed()
