"""The management application behind the `http` listener: `/api/...` (RabbitMQ's
management API), `/metrics` (Prometheus), and the web UI's static files at `/`.

Authentication is HTTP basic with broker users; what a user may do follows RabbitMQ's user
tags (`router.Access`). Every handler runs in the event loop between two awaits, so it
sees and changes the core as one consistent step, like a protocol session does.

Each request is judged from its head first (`check_head`, before the HTTP server reads any
body): the Host header (DNS rebinding), then for the API the route, the Origin of a request
that changes something (a page on another site riding the browser's credentials), the
credentials, the user's tags against the route, the user's access to the vhost the path
names, and the body's Content-Type (JSON only: an HTML form cannot send that cross-site).
Whatever fails is answered there, with the body never read.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import trio

from gateway.auth.service import LoginRefused, User
from gateway.core.confirms import Confirms
from gateway.core.errors import BrokerError
from gateway.management.answers import ApiError, dumps
from gateway.management.api import routes
from gateway.management.events import EventExchange
from gateway.management.firehose import Firehose
from gateway.management.metrics import make_registry, render_metrics
from gateway.management.router import Access, Ctx, Route, VhostScope
from gateway.management.shapes import NODE, Listening, consumer_ref
from gateway.management.stats import Stats
from gateway.management.trace import Tracer
from gateway.web import Request, Response

if TYPE_CHECKING:
    from gateway.core.vhost import VirtualHost
    from gateway.info import Connected
    from gateway.management.host import Host, OriginPolicy, PasswordCheck

log = logging.getLogger("gateway.management")

SAMPLE_SECONDS = 1.0

# AMQP reply codes as HTTP statuses, for core errors raised by API operations
_STATUS = {403: 403, 404: 404, 405: 409, 406: 400, 530: 400, 503: 400, 540: 501}
# methods that change something: refused from another site's page, and JSON bodies only
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def _no_output() -> None:
    pass


class _OnDisk:
    """Waits, as a session's confirms do (`gateway.core.confirms`), until the store has made
    a position durable: the store task wakes it after the group commit holding it."""

    def __init__(self, app: ManagementApp, position: int) -> None:
        self._app = app
        self._done = trio.Event()
        self.pending_output = 0
        self.wake: Callable[[], None] = _no_output  # it sends nothing of its own
        self._tracker: Confirms[bool] = Confirms(app.broker.durable, self)
        self._tracker.insert(position, True)

    def flush_confirms(self) -> None:
        if self._tracker.confirm():
            self._done.set()

    async def wait(self) -> None:
        self.flush_confirms()  # already durable (nothing was pending)
        if not self._done.is_set():
            self._app.server.durability.kick()
            await self._done.wait()
JSON_TYPE = "application/json"


class ManagementApp:
    def __init__(self, server: Host, policy: OriginPolicy, check_password: PasswordCheck
                 ) -> None:
        """`server`: what management needs of the process (`host.Host`); `policy`: the
        browser rules; `check_password`: runs a slow password check off the loop."""
        self.server = server
        self.check_password = check_password
        self.broker = server.broker
        self.auth = server.auth
        self.stats = Stats(server.broker, server.sessions)
        self.tracer = Tracer(server.broker.observers,
                             lambda c: consumer_ref(c, self.listening), server.clock)
        # RabbitMQ's firehose (amq.rabbitmq.trace), on and off with the vhost's tracing
        self.firehose = Firehose(server.broker, lambda c: consumer_ref(c, self.listening),
                                 server.clock, NODE)
        self.tracer.switches.append(self.firehose.enable)
        # the rabbitmq_event_exchange plugin's amq.rabbitmq.event (in the default vhost)
        self.events = EventExchange(server.broker, lambda c: consumer_ref(c, self.listening),
                                    server.clock)
        server.broker.observers.add(self.events)
        self.routes = routes()
        self.policy = policy
        self._static = _load_static()
        self.metrics = make_registry(self)

    # -- background ------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample counters for rates once a second; publish the firehose's messages."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.firehose.run)
            nursery.start_soon(self.events.run)
            while True:
                now = self.server.clock()
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
        """The vhosts whose names (and totals) the user sees: all for monitoring users
        and administrators, else those the user has permissions on (RabbitMQ's
        list_visible_vhosts)."""
        vhosts = list(self.broker.vhosts.values())
        if ctx.has(Access.MONITORING):
            return vhosts
        return [vh for vh in vhosts if self.may_use_vhost(ctx.user, vh.name)]

    def login_vhosts(self, ctx: Ctx) -> list[VirtualHost]:
        """The vhosts whose objects (queues, exchanges, bindings, policies) the user may
        list: all for administrators, else those the user has permissions on, whatever
        the tag (RabbitMQ's filter_vhost)."""
        vhosts = list(self.broker.vhosts.values())
        if ctx.has(Access.ADMINISTRATOR):
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
        self._check_vhost_scope(ctx.user, name, ctx.vhost_scope)
        return vh

    def _check_vhost_scope(self, user: User, name: str, scope: VhostScope) -> None:
        """401 unless the user may act on vhost `name` under `scope`: administrators
        always, monitoring users on routes open to every visible vhost, others (monitoring
        users included) only with a permission row on it."""
        granted = Access.granted(user.tags)
        if Access.ADMINISTRATOR in granted or self.may_use_vhost(user, name):
            return
        if scope is VhostScope.VISIBLE and Access.MONITORING in granted:
            return
        raise ApiError(401, f"access to vhost '{name}' refused for user '{user.name}'",
                       "not_authorised")

    def may_see_session(self, ctx: Ctx, session: Connected) -> bool:
        """Monitoring users and administrators see every connection, others their own."""
        return ctx.has(Access.MONITORING) or self.owns_session(ctx, session)

    @staticmethod
    def owns_session(ctx: Ctx, session: Connected) -> bool:
        return session.info().user == ctx.user.name

    # -- dispatch --------------------------------------------------------------------------

    async def check_head(self, request: Request, *, as_user: User | None = None
                         ) -> Response | None:
        """Judge a request from its head, before its body is read: an answer, or None
        (then `request.auth` holds what `handle` needs). A request that needs no body
        (the UI's files, /metrics) is answered here outright. `as_user`: a request without
        credentials is that user's (the local control channel); one with credentials is
        checked as over HTTP."""
        if not self.policy.host_allowed(request.header("host")):
            return ApiError(403, f"Host {request.header('host')!r} is not this broker's: "
                                 "add it to [http] allowed_hosts",
                            "access_refused").response()
        path = request.path
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            body, content_type = render_metrics(self.metrics)
            return Response(200, body, content_type)
        if path == "/api" or path.startswith("/api/"):
            try:
                request.auth = await self._admit(request, as_user)
            except ApiError as err:
                return self._error(request, err)
            return None
        return self._static_file(request)

    async def _admit(self, request: Request, as_user: User | None) -> _Admitted:
        if request.method in WRITE_METHODS and not self.policy.origin_allowed(
                request.header("origin"), request.header("host"), tls=request.tls):
            raise ApiError(403, f"Origin {request.header('origin')!r} may not change "
                                "anything here: only the broker's own pages and [http] "
                                "allowed_origins may", "access_refused")
        route, params = self.routes.find(request.method, request.path[len("/api"):])
        # the control channel's operator, unless the request brings credentials to check
        user = (as_user if as_user is not None and not request.header("authorization")
                else await self._authenticate(request))
        granted = Access.granted(user.tags)
        if Access.MANAGEMENT not in granted:
            raise ApiError(401, "Not management user", "not_authorised")
        if route.access not in granted:
            raise ApiError(401, f"Not {route.access.name.lower()} user", "not_authorised")
        vhost = params.get("vhost")
        if vhost is not None and vhost in self.broker.vhosts:
            self._check_vhost_scope(user, vhost, route.vhost_scope)
        if request.method in WRITE_METHODS and request.body_announced:
            media = (request.header("content-type") or "").split(";")[0].strip().lower()
            if media != JSON_TYPE:
                raise ApiError(415, f"the request body must be JSON (Content-Type: "
                                    f"{JSON_TYPE}), not {media or 'untyped'}",
                               "unsupported_media_type")
        return _Admitted(route, params, user)

    async def handle(self, request: Request, *, as_user: User | None = None) -> Response:
        """Answer a request; `as_user`: see `check_head`."""
        admitted = request.auth
        if not isinstance(admitted, _Admitted):
            early = await self.check_head(request, as_user=as_user)
            if early is not None:
                return early
            admitted = request.auth
            assert isinstance(admitted, _Admitted)
        return await self._api(request, admitted)

    async def _api(self, request: Request, admitted: _Admitted) -> Response:
        route, user = admitted.route, admitted.user
        try:
            ctx = Ctx(self, request, user, Access.of(user.tags), admitted.params,
                      route.vhost_scope)
            mark = self.broker.durable.position
            result = route.handler(ctx)
        except ApiError as err:
            return self._error(request, err)
        except BrokerError as err:
            return self._error(request, ApiError(_STATUS.get(int(err.code), 400), err.text))
        # a change is answered once it is on disk, as a publisher confirm is: a user, a
        # permission or a queue the answer reports made survives a kill -9 right after it
        position = self.broker.durable.since(mark)
        if position and not self.broker.durable.is_durable(position):
            await _OnDisk(self, position).wait()
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
        if header and header.lower().startswith("bearer ") and self.auth.tokens.enabled:
            # an OAuth 2 access token (RabbitMQ's management API takes it so too)
            name, password = "", header[7:].strip()
        elif not header or not header.lower().startswith("basic "):
            raise ApiError(401, "Login failed", "not_authorised")
        else:
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ApiError(401, "Login failed", "not_authorised") from None
            name, _, password = decoded.partition(":")
        answer: list[User | LoginRefused] = []
        pending = self.auth.login(name, password, peer=request.peer[0], protocol="HTTP",
                                  now=self.now(), then=answer.append)
        if pending is not None:
            await self.check_password(pending)
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


@dataclass(frozen=True, slots=True)
class _Admitted:
    """What the head check found: the route, its path parameters, the user."""

    route: Route
    params: dict[str, str]
    user: User


def _load_static() -> dict[str, bytes]:
    """The web UI's files, read once: a flat directory, so a path can only name one."""
    files: dict[str, bytes] = {}
    root = resources.files("gateway.management") / "static"
    for entry in root.iterdir():
        if entry.is_file() and not entry.name.startswith((".", "_")):
            files[entry.name] = entry.read_bytes()
    return files
