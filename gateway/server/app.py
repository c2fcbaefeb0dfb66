"""The running broker: store, core, listeners, and their orderly shutdown.

Nesting (outermost last to stop): the store task, then the housekeeping tick, then the
listeners and their connections. Shutdown stops accepting, tells every client (AMQP
connection.close 320), gives connections a grace period to flush, then lets the store
write its last batch so pending confirms are not lost.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import ssl
import time
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

import gateway
from gateway.auth.service import AuthService
from gateway.config import Config
from gateway.core.broker import Broker
from gateway.definitions import load_definitions_file
from gateway.info import close_session
from gateway.management.app import ManagementApp
from gateway.server.connection import (
    PASSWORD_CHECK_THREADS,
    Connection,
    HandshakeLimits,
    Session,
    peer_of,
    run_password_check,
)
from gateway.server.control import (
    LOCAL_OPERATOR,
    SOCKET_NAME,
    DataDirInUse,
    DataDirLock,
    directory_problem,
    open_control_listener,
    peer_allowed,
    socket_path,
)
from gateway.server.factories import SESSION_FACTORIES, SessionFactory, wamp_router
from gateway.server.http import HTTPServer
from gateway.server.listen import open_tcp_listeners
from gateway.server.origin import BrowserPolicy
from gateway.server.tls import handshake, peer_info, server_context
from gateway.server.websocket import WEB_MQTT, WEB_STOMP, WebSocketFront, with_limits
from gateway.server.worker import WorkerRole
from gateway.store.base import Store
from gateway.store.disk import DiskStore, return_large_buffers_to_the_system
from gateway.upstream.connection import UpstreamError
from gateway.upstream.node import upstream_backend
from protocols.admission import Admission
from protocols.mqtt.persist import take_over
from protocols.mqtt.registry import MQTTRegistry
from protocols.mqtt.sys_topics import SysTopics
from protocols.wamp.router import WampRouter

log = logging.getLogger("gateway.server")

TICK_SECONDS = 0.5
CONNECTION_TICK_EVERY = 2  # ticks: connections' timers run once a second
SHUTDOWN_GRACE = 3.0

LISTENER_LABELS = {
    "amqp": "AMQP", "mqtt": "MQTT", "stomp": "STOMP", "http": "HTTP",
    "amqps": "AMQPS", "mqtts": "MQTTS", "stomps": "STOMPS", "https": "HTTPS",
    "web_stomp": "Web-STOMP", "web_mqtt": "Web-MQTT",
    "web_stomp_tls": "Web-STOMP TLS", "web_mqtt_tls": "Web-MQTT TLS",
}


class StartupError(Exception):
    """The broker cannot start, said in one line for the operator (`gateway serve` prints
    it and exits non-zero, without a traceback)."""


def listener_error(name: str, host: str, port: int, exc: OSError) -> StartupError:
    """The one line for a listener whose address cannot be bound."""
    label = LISTENER_LABELS.get(name, name)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    flag = f"--{name.replace('_', '-')}-port"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{label} listener: {address} is in use (another program listens "
                            f"there; choose another port with {flag} or [listeners] {name})")
    if exc.errno == errno.EACCES:
        why = " (ports below 1024 need privileges)" if 0 < port < 1024 else ""
        return StartupError(f"{label} listener: {address}: permission denied{why}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"{label} listener: {address}: no such address on this machine "
                            "(see --host or [listeners] host)")
    return StartupError(f"{label} listener: {address} cannot be opened: "
                        f"{exc.strerror or exc}")


class Durability:
    """Moves store batches to disk (group commit) and wakes the sessions whose answers
    waited for what became durable (`Durable.due`: only those, not every session)."""

    def __init__(self, store: Store, broker: Broker) -> None:
        self.store = store
        self.broker = broker
        self._dirty = trio.Event()
        self.stopping = False

    def kick(self) -> None:
        if self.store.dirty():
            self._dirty.set()

    def wake(self) -> None:
        """Positions became durable outside a batch (the upstream answered)."""
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            await self.flush()
            if self.stopping and self.store.appended == self.store.durable:
                return

    async def flush(self) -> None:
        store = self.store
        if isinstance(store, DiskStore) and store.needs_compaction():
            snapshot = self.broker.snapshot()
            store.snapshot_taken()
            await trio.to_thread.run_sync(store.compact, snapshot)
        batch = store.take_batch()
        if batch is not None:
            if getattr(batch, "data", True):  # (acks may have cancelled every record)
                await trio.to_thread.run_sync(store.write_batch, batch)
            store.committed(batch)
        for session in self.broker.durable.due():
            session.flush_confirms()
            if session.pending_output:
                session.wake()


class Server:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 worker: WorkerRole | None = None) -> None:
        self.config = config
        self.clock = clock
        # one of `--workers N` (gateway/server/worker.py): ports shared, no data dir lock
        self.worker = worker
        # first, before the store opens: a certificate that cannot be loaded stops
        # `gateway serve` with a ConfigError naming the file
        tls_on = any(port is not None for port in config.listeners.tls_ports().values())
        self.ssl_context: ssl.SSLContext | None = server_context(config.tls) if tls_on else None
        self.handshakes = 0  # TLS handshakes under way
        data_dir = config.store.data_dir
        self.lock = DataDirLock(data_dir)
        self.control_path: Path | None = None  # the local control socket, while open
        self.management: ManagementApp | None = None
        # --backend rabbitmq: the store and the backend are the upstream (no message here)
        self.upstream = upstream_backend(config, clock) if config.backend.kind == "rabbitmq" \
            else None
        self.store: Store = (self.upstream.backend if self.upstream is not None
                             else DiskStore(data_dir, fsync=config.store.fsync))
        self.broker = Broker(self.store, (), paging_threshold=config.store.paging_threshold,
                             max_queues_per_vhost=config.limits.max_queues_per_vhost,
                             delayed_max_messages=config.limits.delayed_max_messages,
                             delayed_max_bytes=config.limits.delayed_max_bytes,
                             backend=self.upstream.backend if self.upstream else None)
        # the broker holds the vhosts, the auth service decides them; scrypt checks go to
        # worker threads (connection.py), a few at once
        self.auth = AuthService(config.auth, config.oauth2, store=self.store, broker=self.broker,
                                inline_checks=False,
                                check_limiter=trio.CapacityLimiter(PASSWORD_CHECK_THREADS),
                                source=self.upstream.users if self.upstream else None)
        self.broker.on_vhost_deleted.append(self._vhost_deleted)
        # MQTT's sessions and retained messages, shared by its listeners (and Web-MQTT)
        self.mqtt_state = MQTTRegistry(self.broker.durable, config.mqtt.retained_max_messages,
                                    config.mqtt.retained_max_bytes)
        if self.upstream is not None:
            # retained messages in a stream every node reads; sessions found in RabbitMQ,
            # takeovers across nodes
            self.upstream.share_retained(self.mqtt_state)
            self.upstream.sessions.attach(self.mqtt_state, self.broker)
        self._wamp_router: WampRouter | None = None  # made at the first WAMP session
        # sessions closed because their access token expired (closed once)
        self._expired: weakref.WeakSet[Any] = weakref.WeakSet()
        self.sessions: set[Any] = set()
        self.admission = Admission(
            self.sessions, self.auth,
            max_per_user=config.limits.max_connections_per_user,
            max_per_address=config.limits.max_connections_per_address)
        self.connections: set[Connection] = set()
        self.durability = Durability(self.store, self.broker)
        self.ports: dict[str, int] = {}
        self._listeners_scope: trio.CancelScope | None = None
        self._stop = trio.Event()
        self.memory_alarm = False
        self._conn_scope: trio.CancelScope | None = None
        self._conns: trio.Nursery | None = None  # every client connection's tasks

    @property
    def wamp_router(self) -> WampRouter:
        """WAMP's realms and registrations, shared by every WAMP session of this server;
        made at the first one (it keeps its WAMP-CRA secret in the data directory)."""
        if self._wamp_router is None:
            self._wamp_router = wamp_router(self.config.store.data_dir)
        return self._wamp_router

    async def serve(self, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        try:
            if self.worker is None:  # (a worker's parent holds it)
                self.lock.acquire()  # before the store touches the data directory
        except DataDirInUse as exc:
            raise StartupError(str(exc)) from None
        try:
            await self._run(task_status)
        finally:
            if self.control_path is not None:
                with contextlib.suppress(OSError):
                    self.control_path.unlink()
                self.control_path = None
            self.lock.release()

    async def _run(self, task_status: trio.TaskStatus[dict[str, int]]) -> None:
        if isinstance(self.store, DiskStore):
            return_large_buffers_to_the_system()
        restored = self.recover()
        self._load_definitions()
        if restored:
            log.info("recovered %d persistent messages", restored)
        async with trio.open_nursery() as outer:
            outer.start_soon(self.durability.run)
            outer.start_soon(self._tick)
            if self.config.mqtt.sys_interval:  # Mosquitto's $SYS/broker/... topics
                outer.start_soon(SysTopics(self.broker, self.mqtt_state, self.clock,
                                           self.config.mqtt.sys_interval).run)
            if self.upstream is not None:
                try:
                    await outer.start(self.upstream.run, self._upstream_failed,
                                      self.durability.wake)
                except UpstreamError as exc:
                    raise StartupError(f"backend rabbitmq: {exc}") from None
            async with trio.open_nursery() as conns:
                self._conn_scope = conns.cancel_scope
                self._conns = conns
                async with trio.open_nursery() as listeners:
                    self._listeners_scope = listeners.cancel_scope
                    await self._start_listeners(listeners, conns)
                    task_status.started(dict(self.ports))
                    await self._stop.wait()
            self.durability.stopping = True
            self.durability._dirty.set()
            outer.cancel_scope.deadline = trio.current_time() + 10
            await self._wait_store()
            outer.cancel_scope.cancel()
        self.store.close()

    def recover(self) -> int:
        """Read the store back and hand each owner its part: users, vhosts and permissions
        to the auth service, exchanges, queues and messages to the broker, retained messages
        and session records to MQTT's state. Returns the number of messages restored."""
        state = self.store.recover()
        self.auth.restore(state)
        restored = self.broker.restore(state, self.clock())
        take_over(self.mqtt_state, self.broker)
        return restored

    def _load_definitions(self) -> None:
        path = self.config.definitions.file
        if path is None:
            return
        load_definitions_file(self.broker, self.auth, path, now=self.clock())
        log.info("loaded definitions from %s", path)

    def _upstream_failed(self, reason: str) -> None:
        """RabbitMQ refused an operation (a nack, a refused declare or bind): close every
        session still waiting for an answer, so that none is answered with success."""
        for session in self.broker.durable.fail_waiting():
            log.warning("closing a connection waiting for an answer: upstream: %s", reason)
            closer = getattr(session, "shutdown", None)
            if closer is not None:
                closer()
            session.wake()

    def _vhost_deleted(self, name: str) -> None:
        """Close every connection that was open on a vhost just deleted."""
        for session in list(self.sessions):
            vh = getattr(session, "vhost", None)
            if vh is not None and getattr(vh, "name", None) == name:
                # a session may say so in its own words; otherwise it closes as at shutdown
                closer = getattr(session, "vhost_deleted", None)
                if closer is not None:
                    closer(name)
                else:
                    session.shutdown()
                session.wake()

    async def _wait_store(self) -> None:
        while self.store.appended != self.store.durable:
            self.durability.kick()
            await trio.sleep(0.01)

    async def _start_listeners(self, listeners: trio.Nursery, conns: trio.Nursery) -> None:
        for name, factory in SESSION_FACTORIES.items():
            for key, tls in ((name, False), (name + "s", True)):  # amqp, then amqps
                tcp = await self._open(key)
                if tcp is not None:
                    listeners.start_soon(self._accept_loop, tcp, conns, factory, tls)
        await self._start_http(listeners, conns)
        await self._start_web_plugins(listeners, conns)
        await self._start_control(listeners, conns)

    async def _open(self, name: str) -> list[trio.SocketListener] | None:
        """Bind the listener `name` when its port is configured, and log it."""
        port = getattr(self.config.listeners, name)
        if port is None:
            return None
        host = self.config.listeners.host
        try:
            tcp = await open_tcp_listeners(port, host, reuse_port=self.worker is not None)
        except OSError as exc:
            raise listener_error(name, host, port, exc) from None
        bound = tcp[0].socket.getsockname()[1]
        self.ports[name] = bound
        log.info("listener %s on %s:%d", name, host, bound)
        return tcp

    async def secure(self, stream: trio.SocketStream, *, https: bool = False
                     ) -> trio.SSLStream[trio.SocketStream] | None:
        """TLS over an accepted stream (None: the handshake failed or timed out, and the
        stream is closed)."""
        assert self.ssl_context is not None
        limit = self.config.limits.max_connections
        if self.handshakes + len(self.connections) >= limit:
            # handshakes under way count as connections, so silent TLS clients cannot pile
            # up past the limit while each waits out its handshake timeout
            log.warning("TLS connection refused: max_connections (%d) reached", limit)
            await trio.aclose_forcefully(stream)
            return None
        self.handshakes += 1
        try:
            return await handshake(stream, self.ssl_context,
                                   self.config.tls.handshake_timeout / 1000, https=https)
        finally:
            self.handshakes -= 1

    # -- the http listener: management API, web UI, /metrics (gateway/management) ----------

    async def _start_http(self, listeners: trio.Nursery, conns: trio.Nursery) -> None:
        """The http listener and its TLS twin https: one management app and /ws for both."""
        plain, secure = await self._open("http"), await self._open("https")
        if plain is None and secure is None:
            return
        management = self._management_app(listeners)
        self.http = HTTPServer(management.handle, check_head=management.check_head,
                               head_timeout=self.config.limits.handshake_timeout / 1000)
        front = WebSocketFront(self)  # WAMP, MQTT, STOMP
        for path in front.paths:  # /ws, and /mqtt and /stomp as its aliases
            self.http.add_upgrade(path, front.handle)

        async def handler(stream: trio.SocketStream) -> None:
            peer = await peer_of(stream)
            if peer is None:
                return
            try:
                await self.http.serve(stream, peer)
            except Exception:
                # as for protocol connections: one client's bug must not stop the broker
                log.exception("HTTP connection %s:%s failed", peer[0], peer[1])

        async def tls_handler(stream: trio.SocketStream) -> None:
            peer = await peer_of(stream)
            if peer is None:
                return
            tls = await self.secure(stream, https=True)
            if tls is None:
                return
            try:
                await self.http.serve(tls, peer)
            except Exception:
                log.exception("HTTPS connection %s:%s failed", peer[0], peer[1])

        for tcp, serve in ((plain, handler), (secure, tls_handler)):
            if tcp is not None:
                listeners.start_soon(partial(trio.serve_listeners, serve, tcp,
                                             handler_nursery=conns))

    def _management_app(self, listeners: trio.Nursery) -> ManagementApp:
        """The one management app (HTTP, HTTPS and the control channel share it)."""
        if self.management is None:
            http = self.config.http
            self.management = ManagementApp(
                self, BrowserPolicy(http.allowed_origins, http.allowed_hosts),
                run_password_check)
            listeners.start_soon(self.management.run)
        return self.management

    async def _start_control(self, listeners: trio.Nursery, conns: trio.Nursery) -> None:
        """The local control channel (gateway/server/control.py): the management API on a
        Unix socket in the data directory, for the broker's own OS user, no credentials."""
        data_dir = self.config.store.data_dir
        name = self.worker.control_socket if self.worker is not None else SOCKET_NAME
        problem = directory_problem(data_dir, name)
        if problem is not None:
            log.warning("local control channel off: %s", problem)
            return
        path = socket_path(data_dir, name)
        try:
            unix = await open_control_listener(path)
        except OSError as exc:
            log.warning("local control channel off: %s: %s", path, exc.strerror or exc)
            return
        self.control_path = path
        management = self._management_app(listeners)
        local = HTTPServer(partial(management.handle, as_user=LOCAL_OPERATOR),
                           head_timeout=self.config.limits.handshake_timeout / 1000)

        async def handler(stream: trio.SocketStream) -> None:
            if not peer_allowed(stream):
                log.warning("local control channel: refused a process of another user")
                await trio.aclose_forcefully(stream)
                return
            try:
                # a process on this machine: a loopback peer (as for loopback_users)
                await local.serve(stream, ("127.0.0.1", 0))
            except Exception:
                log.exception("local control connection failed")

        listeners.start_soon(partial(trio.serve_listeners, handler, [unix],
                                     handler_nursery=conns))
        log.info("local control channel on %s (gateway ctl needs no credentials here)", path)

    async def _start_web_plugins(self, listeners: trio.Nursery, conns: trio.Nursery
                                 ) -> None:
        """RabbitMQ-style WebSocket-only ports (Web-STOMP, Web-MQTT), when configured."""
        host = self.config.listeners.host
        for name, options in (("web_stomp", WEB_STOMP), ("web_mqtt", WEB_MQTT)):
            for key, tls in ((name, False), (name + "_tls", True)):
                port = getattr(self.config.listeners, key)
                if port is None:
                    continue
                front = WebSocketFront(self, with_limits(options, self.config.limits))
                try:
                    bound = await listeners.start(partial(
                        front.listen, host, port, tls=tls, handler_nursery=conns,
                        reuse_port=self.worker is not None))
                except OSError as exc:
                    raise listener_error(key, host, port, exc) from None
                self.ports[key] = bound
                log.info("listener %s on %s:%d", key, host, bound)

    async def _accept_loop(self, tcp: list[trio.SocketListener], conns: trio.Nursery,
                           factory: SessionFactory, tls: bool) -> None:
        async def handler(stream: trio.SocketStream) -> None:
            await self._serve(stream, factory, tls, conns)

        await trio.serve_listeners(handler, tcp, handler_nursery=conns)

    async def _serve(self, stream: trio.SocketStream, factory: SessionFactory,
                     tls: bool, conns: trio.Nursery) -> None:
        if len(self.connections) >= self.config.limits.max_connections:
            log.warning("connection refused: max_connections (%d) reached",
                        self.config.limits.max_connections)
            await stream.aclose()
            return
        peer = await peer_of(stream)
        if peer is None:
            return
        try:
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        except OSError:
            pass
        wire: trio.abc.Stream = stream
        if tls:
            secured = await self.secure(stream)
            if secured is None:
                return
            wire = secured
        conn = self.connection(wire)
        session = factory(self, peer, conn.wake, peer_info(wire))
        self.sessions.add(session)
        await self.drive(conn, session)

    def connection(self, wire: trio.abc.Stream, *, high_water: int | None = None,
                   send_timeout: float | None = None, label: str = "connection"
                   ) -> Connection:
        """A new client's `Connection` with the [limits] of the config (or those given)."""
        limits = self.config.limits
        return Connection(
            wire, limits.connection_buffer if high_water is None else high_water, self.clock,
            self._after_input, self._conns,
            send_timeout=limits.send_timeout / 1000 if send_timeout is None else send_timeout,
            handshake=self.handshake_limits(), label=label)

    async def drive(self, conn: Connection, session: Session, *, early: bytes = b"") -> None:
        """Serve one client, TCP or WebSocket (whose `session` is the framing layer), until
        it ends: counted in `connections` meanwhile (the connection limit, the memory alarm,
        the timers' tick and shutdown's grace see it), `session` out of `sessions` after."""
        self.connections.add(conn)
        session.memory_alarm(self.memory_alarm)
        try:
            if conn.nursery is not None:
                await conn.run(session, early)
            else:  # a server that is not serving (a test driving the code directly)
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    await conn.run(session, early)
        except Exception:
            # a bug met by one connection must not take the broker down with it
            peer = getattr(session, "peer", ("?", 0))
            log.exception("%s %s:%s failed", conn.label, peer[0], peer[1])
        finally:
            self.connections.discard(conn)
            self.sessions.discard(session)

    def handshake_limits(self) -> HandshakeLimits:
        """A new connection's allowance of time and bytes before it has logged in."""
        limits = self.config.limits
        return HandshakeLimits(limits.handshake_timeout / 1000, limits.handshake_max_bytes)

    def admit(self, session: object, user: str, vhost: str) -> None:
        """Every session asks at login (`protocols.admission`): refuse with `NotAllowed`
        past a vhost's or user's connection limit, or the per-address one."""
        self.admission.admit(session, user, vhost)

    def admit_channel(self, session: object, user: str) -> None:
        """AMQP sessions ask at channel.open: the user's max-channels limit."""
        self.admission.admit_channel(session, user)

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await trio.sleep(TICK_SECONDS)
            now = self.clock()
            self.broker.tick(now)
            self.durability.kick()
            self.check_memory()
            ticks += 1
            if ticks % CONNECTION_TICK_EVERY == 0:
                self._tick_connections(now)

    def _tick_connections(self, now: float) -> None:
        """Session timers (heartbeats, keepalive, handshake deadlines) of every connection,
        once a second: one task for all of them instead of one per connection."""
        for conn in list(self.connections):
            try:
                conn.tick(now)
            except Exception:
                log.exception("connection timer failed")
                conn.stop()
        self._close_expired_tokens()

    def _close_expired_tokens(self) -> None:
        """A connection that logged in with an OAuth 2 access token is closed when the token
        expires (as RabbitMQ's oauth2 backend does): every check it asks after that is
        refused anyway, and it must not keep consuming what it subscribed to before."""
        now = self.auth.wall_clock()
        for session in list(self.sessions):
            token = getattr(getattr(session, "user", None), "token", None)
            if token is None or token.expires_at > now or session in self._expired:
                continue
            self._expired.add(session)
            log.info("closing connection of %s: its access token expired",
                     getattr(session.user, "name", "?"))
            close_session(session, "CONNECTION_FORCED - access token expired")

    def _after_input(self) -> None:
        self.durability.kick()
        if (self.broker.meter.held_bytes > self.config.limits.memory_high_watermark) \
                != self.memory_alarm:
            self.check_memory()

    def check_memory(self) -> None:
        """Raise or clear the memory alarm from the bytes the queues hold."""
        held = self.broker.meter.held_bytes
        limit = self.config.limits.memory_high_watermark
        alarm = held > limit
        if alarm != self.memory_alarm:
            self.memory_alarm = alarm
            if alarm:
                log.warning("memory alarm: queues hold %d bytes, over the high-watermark of "
                            "%d; publishers are blocked", held, limit)
            else:
                log.info("memory alarm cleared: queues hold %d bytes", held)
        for conn in list(self.connections):
            session = conn.session
            if session is not None and session.alarm != alarm:
                session.memory_alarm(alarm)
                conn.wake()
                conn.resume()

    async def shutdown(self) -> None:
        """Stop accepting, close every client politely, then stop."""
        self._stop.set()
        if self._listeners_scope is not None:
            self._listeners_scope.cancel()
        for session in list(self.sessions):
            session.shutdown()
            session.wake()
        with trio.move_on_after(SHUTDOWN_GRACE):
            while self.connections:
                await trio.sleep(0.02)
        if self._conn_scope is not None:
            self._conn_scope.cancel()


async def run_server(config: Config, worker: WorkerRole | None = None) -> None:
    """Run until SIGINT or SIGTERM (or, as a worker, until the parent is gone), then shut
    down cleanly."""
    server = Server(config, worker=worker)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            if worker is None:
                log.info("gateway %s ready", gateway.__version__)
            else:
                log.info("worker %d ready (pid %d)", worker.index, os.getpid())
                worker.ready()
            async with trio.open_nursery() as watchers:
                watchers.start_soon(_until_signal, signals, watchers.cancel_scope)
                if worker is not None:
                    watchers.start_soon(_until_orphaned, worker, watchers.cancel_scope)
            await server.shutdown()


async def _until_signal(signals: Any, done: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        break
    done.cancel()


async def _until_orphaned(worker: WorkerRole, done: trio.CancelScope) -> None:
    await worker.parent_gone()
    log.warning("worker %d: the parent process is gone, shutting down", worker.index)
    done.cancel()
