"""Routes that RabbitMQ's API does not have: a non-destructive browse of a queue's
messages (read permission on the queue, as a get), and the per-vhost message trace
(`trace.py`; it shows the start of every message published in the vhost, so reading,
switching and clearing it need the administrator tag, as RabbitMQ's tracing plugin
does)."""

from __future__ import annotations

import itertools
from typing import Any

from gateway.auth import access
from gateway.management.answers import ApiError
from gateway.management.api_objects import get_queue, message_json
from gateway.management.router import Access, Ctx, Routes

routes = Routes()
BROWSE_MAX = 500  # messages one browse request returns


def _int(ctx: Ctx, name: str, default: int, low: int, high: int) -> int:
    raw = ctx.query(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be from {low} to {high}")
    return value


@routes.add("GET", "/queues/{vhost}/{name}/browse")
def browse(ctx: Ctx) -> dict[str, Any]:
    """Peek at ready messages in delivery order: nothing is taken, requeued or reordered,
    and no redelivered flag is set. Needs read permission on the queue, as a get does."""
    vh, q = get_queue(ctx)
    access.get(ctx.app.auth, ctx.user, vh, q.name)
    offset = _int(ctx, "offset", 0, 0, 1 << 62)
    count = _int(ctx, "count", 50, 1, BROWSE_MAX)
    truncate = _int(ctx, "truncate", 4096, 0, 1 << 30)
    now = ctx.app.now()
    messages = []
    window = itertools.islice(q.iter_ready(), offset, offset + count)
    for position, entry in enumerate(window, start=offset):
        item = message_json(entry.message, entry.redelivered, q.message_count, "auto",
                            truncate)
        item["position"] = position
        item["expires_in_ms"] = (None if entry.expires_at is None
                                 else max(0, int((entry.expires_at - now) * 1000)))
        messages.append(item)
    return {"queue": q.name, "vhost": vh.name, "ready": q.message_count,
            "unacknowledged": len(q.unacked), "offset": offset, "messages": messages}


@routes.add("GET", "/traces/{vhost}", Access.ADMINISTRATOR)
def traces(ctx: Ctx) -> dict[str, Any]:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    limit = _int(ctx, "count", 100, 1, 1000)
    return {"vhost": vh.name, "enabled": ctx.app.tracer.enabled(vh.name),
            "records": ctx.app.tracer.list(vh.name)[:limit]}


@routes.add("PUT", "/traces/{vhost}", Access.ADMINISTRATOR)
def set_trace(ctx: Ctx) -> None:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    enabled = ctx.body_json().get("enabled")
    if not isinstance(enabled, bool):
        raise ApiError(400, "enabled must be true or false")
    ctx.app.tracer.enable(vh.name, enabled)


@routes.add("DELETE", "/traces/{vhost}", Access.ADMINISTRATOR)
def clear_trace(ctx: Ctx) -> None:
    vh = ctx.app.vhost(ctx, ctx.params["vhost"])
    ctx.app.tracer.clear(vh.name)
