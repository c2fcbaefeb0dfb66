"""The management API's table of routes, one request as a handler sees it (`Ctx`, and of
the app, `App`), and the list conventions RabbitMQ's API has (`columns`, `sort`,
`sort_reverse`, `page`, `page_size`). Its answers' JSON and errors: `answers.py`.

A route is a method, a path pattern of segments (`{name}` captures one segment, decoded
after splitting, so `%2F` is the vhost `/`), the access a user needs (by tag) and a
handler. Handlers return a JSON-able value (200), `None` (204), or a `Response`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from gateway.core import bounded_regex
from gateway.management.answers import ApiError, not_found
from gateway.web import Request

if TYPE_CHECKING:
    from gateway.auth.service import AuthService, User
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost
    from gateway.info import Connected
    from gateway.management.host import Host
    from gateway.management.shapes import Listening
    from gateway.management.stats import Stats
    from gateway.management.trace import Tracer


class Access(IntEnum):
    """What a route needs of a user's tags (RabbitMQ's management tags).

    Not a ladder: `policymaker` and `monitoring` are two branches above `management`, and
    only `administrator` has both (RabbitMQ's is_policymaker: administrator or
    policymaker; is_monitor: administrator or monitoring). `granted` says which a user
    has; a route is open to a user whose grants include its access."""

    NONE = 0
    MANAGEMENT = 1  # own vhosts' objects, own connections and channels
    POLICYMAKER = 2  # + policies and parameters of own vhosts
    MONITORING = 3  # + sees every vhost's name, every connection, channel and node
    ADMINISTRATOR = 4  # everything: users, vhosts, permissions, tracing, others' connections

    @staticmethod
    def of(tags: tuple[str, ...]) -> Access:
        """The highest tag (for display); use `granted` to decide."""
        levels = {"management": Access.MANAGEMENT, "policymaker": Access.POLICYMAKER,
                  "monitoring": Access.MONITORING, "administrator": Access.ADMINISTRATOR}
        return max((levels[t] for t in tags if t in levels), default=Access.NONE)

    @staticmethod
    def granted(tags: tuple[str, ...]) -> frozenset[Access]:
        have = set(tags)
        out = {Access.NONE}
        if have & {"management", "policymaker", "monitoring", "administrator"}:
            out.add(Access.MANAGEMENT)
        if have & {"policymaker", "administrator"}:
            out.add(Access.POLICYMAKER)
        if have & {"monitoring", "administrator"}:
            out.add(Access.MONITORING)
        if "administrator" in have:
            out.add(Access.ADMINISTRATOR)
        return frozenset(out)


class VhostScope(IntEnum):
    """Who may call a route on the vhost its path names (RabbitMQ's is_authorized_vhost
    and is_authorized_vhost_visible_for_monitoring). Administrators always may."""

    LOGIN = 0  # users with a permission row on the vhost (whatever their tag)
    VISIBLE = 1  # those, and monitoring users (who see every vhost's name)


class App(Protocol):
    """What a handler sees of the management application (`app.ManagementApp` is it): the
    handlers are typed against this, so they need not import the app that routes to them."""

    auth: AuthService
    broker: Broker
    server: Host
    stats: Stats
    tracer: Tracer

    @property
    def listening(self) -> Listening: ...

    def now(self) -> float: ...

    def changed(self) -> None:
        """Something durable may have changed: let the store task write it now."""
        ...

    def visible_vhosts(self, ctx: Ctx) -> list[VirtualHost]: ...

    def login_vhosts(self, ctx: Ctx) -> list[VirtualHost]: ...

    def vhost(self, ctx: Ctx, name: str) -> VirtualHost: ...

    def may_see_session(self, ctx: Ctx, session: Connected) -> bool: ...

    def owns_session(self, ctx: Ctx, session: Connected) -> bool: ...


@dataclass(slots=True)
class Ctx:
    """One request as a handler sees it."""

    app: App
    request: Request
    user: User
    access: Access
    params: dict[str, str]
    vhost_scope: VhostScope = VhostScope.LOGIN

    def has(self, access: Access) -> bool:
        """The user's tags grant `access` (see `Access`)."""
        return access in Access.granted(self.user.tags)

    def body_json(self) -> dict[str, Any]:
        if not self.request.body.strip():
            return {}
        try:
            value = json.loads(self.request.body)
        except ValueError as exc:
            raise ApiError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        return value

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query.get(name, default)

    def flag(self, name: str) -> bool:
        return (self.query(name) or "").lower() == "true"


HandlerFn = Callable[[Ctx], Any]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    segments: tuple[str, ...]
    access: Access
    handler: HandlerFn
    vhost_scope: VhostScope = VhostScope.LOGIN

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = unquote(part)
            elif pattern != part:
                return None
        return params


class Routes:
    """An ordered table of routes; the first that matches method and path wins."""

    def __init__(self) -> None:
        self.table: list[Route] = []

    def add(self, method: str, path: str, access: Access = Access.MANAGEMENT,
            vhost_scope: VhostScope = VhostScope.LOGIN) -> Callable[[HandlerFn], HandlerFn]:
        segments = tuple(path.strip("/").split("/"))

        def register(fn: HandlerFn) -> HandlerFn:
            self.table.append(Route(method, segments, access, fn, vhost_scope))
            return fn

        return register

    def extend(self, other: Routes) -> None:
        self.table.extend(other.table)

    def find(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        parts = raw_path.strip("/").split("/")
        allowed = False
        for route in self.table:
            params = route.match(parts)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed = True
        if allowed:
            raise ApiError(405, "Method Not Allowed")
        raise not_found()


# -- list conventions ------------------------------------------------------------------------


def _pick(item: dict[str, Any], path: str) -> Any:
    value: Any = item
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _select(item: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in columns:
        keys = col.split(".")
        value = _pick(item, col)
        if value is None and not _has(item, keys):
            continue
        target = out
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return out


def _has(item: dict[str, Any], keys: list[str]) -> bool:
    value: Any = item
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


REGEX_BUDGET = 0.1  # seconds of matching one `use_regex` filter may take, all names together


def filter_by_regex(items: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    """The items whose name `pattern` finds (a search, as RabbitMQ's filter does).

    Handlers run in the event loop: the pattern is bounded as gateway/core/bounded_regex.py
    says, and matching the whole list may take REGEX_BUDGET seconds (a few times that at
    worst); a pattern refused or that runs out is a 400."""
    try:
        compiled = bounded_regex.compile_bounded(pattern)
    except bounded_regex.PatternError as exc:
        raise ApiError(400, f"name {exc}") from None
    deadline = time.monotonic() + REGEX_BUDGET
    kept = []
    for item in items:
        try:
            if bounded_regex.search(compiled, str(item.get("name", "")),
                                    deadline - time.monotonic()):
                kept.append(item)
        except TimeoutError:
            raise ApiError(400, f"name regex took longer than {REGEX_BUDGET:g} s to match "
                                "the names (it backtracks too much); simplify it"
                           ) from None
    return kept


def list_result(ctx: Ctx, items: list[dict[str, Any]]) -> Any:
    """Apply `name` filter, `sort`, `sort_reverse`, `columns` and pagination."""
    total = len(items)
    name = ctx.query("name")
    if name:
        if ctx.flag("use_regex"):
            items = filter_by_regex(items, name)
        else:
            needle = name.lower()
            items = [i for i in items if needle in str(i.get("name", "")).lower()]
    sort = ctx.query("sort")
    if sort:
        items = sorted(items, key=lambda i: _sort_key(_pick(i, sort)),
                       reverse=ctx.flag("sort_reverse"))
    columns = ctx.query("columns")
    if columns:
        cols = [c for c in columns.split(",") if c]
        items = [_select(i, cols) for i in items]
    page = ctx.query("page")
    if page is None:
        return items
    try:
        page_n = int(page)
        size = int(ctx.query("page_size") or 100)
    except ValueError:
        raise ApiError(400, "page and page_size must be integers") from None
    if page_n < 1 or not 1 <= size <= 500:
        raise ApiError(400, "page must be >= 1 and page_size 1..500")
    filtered = len(items)
    start = (page_n - 1) * size
    chunk = items[start:start + size]
    return {"filtered_count": filtered, "item_count": len(chunk), "items": chunk,
            "page": page_n, "page_count": max(1, math.ceil(filtered / size)),
            "page_size": size, "total_count": total}
