"""The management application behind the `http` listener: `/api/...` (RabbitMQ's
management API), `/metrics` (Prometheus), and the web UI's static files at `/`.

Authentication is HTTP basic with broker users; what a user may do follows RabbitMQ's user
tags (`router.Access`). Every handler runs in the event loop between two awaits, so it
sees and changes the core as one consistent step, like a protocol session does.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio

from gateway.auth.service import LoginRefused, User
from gateway.core.errors import BrokerError
from gateway.management import api_access, api_node, api_objects, api_tools
from gateway.management.metrics import make_registry, render_metrics
from gateway.management.router import Access, ApiError, Ctx, Routes, dumps
from gateway.management.shapes import Listening
from gateway.management.stats import Stats
from gateway.management.trace import Tracer
from gateway.server.connection import run_password_check
from gateway.server.http import Request, Response

if TYPE_CHECKING:
    from gateway.core.vhost import VirtualHost
    from gateway.server.app import Server

log = logging.getLogger("gateway.management")

SAMPLE_SECONDS = 1.0

# AMQP reply codes as HTTP statuses, for core errors raised by API operations
_STATUS = {403: 403, 404: 404, 405: 409, 406: 400, 530: 400, 503: 400, 540: 501}


def _routes() -> Routes:
    routes = Routes()
    for module in (api_node, api_objects, api_access, api_tools):
        routes.extend(module.routes)
    return routes


class ManagementApp:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.broker = server.broker
        self.auth = server.auth
        self.stats = Stats(server.broker, server.sessions)
        self.tracer = Tracer(server.broker, self.stats, server.clock)
        self.routes = _routes()
        self._static = _load_static()
        self.metrics = make_registry(self)

    # -- background ------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample counters for rates once a second (and count publishes by protocol)."""
        while True:
            now = self.server.clock()
            self.tracer.attach_all()
            self.stats.sample(now)
            await trio.sleep(SAMPLE_SECONDS)

    # -- what handlers use -----------------------------------------------------------------

    def now(self) -> float:
        return self.server.clock()

    @property
    def listening(self) -> Listening:
        return (self.server.config.listeners.host, self.server.ports)

    def changed(self) -> None:
        """Something durable may have changed: let the store task write it now."""
        self.server.durability.kick()

    def visible_vhosts(self, ctx: Ctx) -> list[VirtualHost]:
        vhosts = list(self.broker.vhosts.values())
        if ctx.access >= Access.MONITORING:
            return vhosts
        return [vh for vh in vhosts if self.may_use_vhost(ctx.user, vh.name)]

    def may_use_vhost(self, user: User, vhost: str) -> bool:
        try:
            self.auth.check_vhost(user, vhost)
        except BrokerError:
            return False
        return True

    def vhost(self, ctx: Ctx, name: str) -> VirtualHost:
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise ApiError(404, "Not Found")
        if ctx.access < Access.MONITORING and not self.may_use_vhost(ctx.user, name):
            raise ApiError(401, f"access to vhost '{name}' refused for user "
                                f"'{ctx.user.name}'", "not_authorised")
        return vh

    def may_see_session(self, ctx: Ctx, session: Any) -> bool:
        if ctx.access >= Access.MONITORING:
            return True
        user = getattr(session, "user", None)
        return getattr(user, "name", None) == ctx.user.name

    # -- dispatch --------------------------------------------------------------------------

    async def handle(self, request: Request, *, as_user: User | None = None) -> Response:
        """Answer a request; `as_user`: a request without credentials is that user's (the
        local control channel), one with credentials is checked as over HTTP."""
        path = request.path
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            body, content_type = render_metrics(self.metrics)
            return Response(200, body, content_type)
        if path == "/api" or path.startswith("/api/"):
            return await self._api(request, as_user)
        return self._static_file(request)

    async def _api(self, request: Request, as_user: User | None = None) -> Response:
        try:
            route, params = self.routes.find(request.method, request.path[len("/api"):])
            # the control channel's operator, unless the request brings credentials to check
            user = (as_user if as_user is not None and not request.header("authorization")
                    else await self._authenticate(request))
            access = Access.of(user.tags)
            if access < Access.MANAGEMENT:
                raise ApiError(401, "Not management user", "not_authorised")
            if access < route.access:
                raise ApiError(401, f"Not {route.access.name.lower()} user", "not_authorised")
            ctx = Ctx(self, request, user, access, params)
            result = route.handler(ctx)
        except ApiError as err:
            return self._error(request, err)
        except BrokerError as err:
            return self._error(request, ApiError(_STATUS.get(int(err.code), 400), err.text))
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(204, b"")
        return Response(200, dumps(result))

    @staticmethod
    def _error(request: Request, err: ApiError) -> Response:
        response = err.response()
        if request.header("x-requested-with"):
            # a script asking (the web UI): no WWW-Authenticate, so browsers show no dialog
            response.headers = [h for h in response.headers if h[0] != "www-authenticate"]
        return response

    async def _authenticate(self, request: Request) -> User:
        """HTTP basic auth against broker users; a slow (scrypt) check runs in a worker
        thread, failures count against the source address like any protocol's."""
        header = request.header("authorization")
        if not header or not header.lower().startswith("basic "):
            raise ApiError(401, "Login failed", "not_authorised")
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "Login failed", "not_authorised") from None
        name, _, password = decoded.partition(":")
        answer: list[User | LoginRefused] = []
        pending = self.auth.login(name, password, peer=request.peer[0], protocol="HTTP",
                                  now=self.now(), then=answer.append)
        if pending is not None:
            await run_password_check(pending)
        if isinstance(answer[0], LoginRefused):
            raise ApiError(401, "Login failed", "not_authorised")
        return answer[0]

    def _static_file(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return ApiError(405, "Method Not Allowed").response()
        name = request.path.strip("/") or "index.html"
        data = self._static.get(name)
        if data is None:
            return Response(404, b"Not Found", "text/plain")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return Response(200, data, content_type, [("cache-control", "no-cache")])


def _load_static() -> dict[str, bytes]:
    """The web UI's files, read once: a flat directory, so a path can only name one."""
    files: dict[str, bytes] = {}
    root = resources.files("gateway.management") / "static"
    for entry in root.iterdir():
        if entry.is_file() and not entry.name.startswith((".", "_")):
            files[entry.name] = entry.read_bytes()
    return files
