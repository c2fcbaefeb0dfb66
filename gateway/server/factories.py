"""How each listener makes a session for a new connection: one factory per protocol, and the
state the sessions of one protocol share, owned by the server and handed to each session.

A factory gets the server (broker, auth, config, clock, and the shared state: MQTT's
sessions and retained messages, WAMP's router), the peer address, the connection's `wake`
callback and what its TLS handshake found (None on a plain port), and returns a sans-IO
session that the generic `Connection` drives (see `gateway.server.connection.Session`).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.auth.service import AuthService, is_loopback
from gateway.config import Config
from gateway.core.broker import Broker
from protocols.amqp.session import AMQPSession
from protocols.mqtt.registry import MQTTRegistry
from protocols.mqtt.session import MQTTSession
from protocols.stomp.session import StompSession
from protocols.tls import TLSPeer
from protocols.wamp.router import WampRouter

log = logging.getLogger("gateway.websocket")


class SessionHost(Protocol):
    """What a factory needs of the server (`gateway.server.app.Server` is it): the factories
    are typed against this, so they need not import the server that uses them."""

    @property
    def config(self) -> Config: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def auth(self) -> AuthService: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def mqtt_state(self) -> MQTTRegistry: ...

    @property
    def wamp_router(self) -> WampRouter: ...

    def admit(self, session: object, user: str, vhost: str) -> None: ...

    def admit_channel(self, session: object, user: str) -> None: ...


SessionFactory = Callable[[SessionHost, tuple[str, int], Callable[[], None], TLSPeer | None],
                          Any]

SECRET_FILE: Final = "wamp-cra.secret"  # in the data directory
SECRET_SIZE: Final = 32


def amqp_session(server: SessionHost, peer: tuple[str, int], wake: Callable[[], None],
                 tls: TLSPeer | None = None) -> Any:
    amqp = server.config.amqp
    limits = server.config.limits
    return AMQPSession(
        server.broker, server.auth, peer=peer, loopback=is_loopback(peer[0]),
        clock=server.clock, wake=wake, frame_max=amqp.frame_max,
        channel_max=amqp.channel_max, heartbeat=amqp.heartbeat,
        consumer_timeout=amqp.consumer_timeout, max_message_size=limits.max_message_size,
        high_water=limits.connection_buffer,
        tls=tls, admit=server.admit, consumer_max=limits.consumer_max_per_channel,
        admit_channel=server.admit_channel)


def stomp_session(server: SessionHost, peer: tuple[str, int], wake: Callable[[], None],
                  tls: TLSPeer | None = None) -> Any:
    stomp = server.config.stomp
    return StompSession(
        server.broker, server.auth, peer=peer, loopback=is_loopback(peer[0]),
        clock=server.clock, wake=wake, max_frame_size=stomp.max_frame_size,
        max_headers=stomp.max_headers, max_header_length=stomp.max_header_length,
        heartbeat_min=stomp.heartbeat_min, high_water=server.config.limits.connection_buffer,
        anonymous_user=stomp.anonymous_user if stomp.allow_anonymous else None,
        loopback_users=server.config.auth.loopback_users,
        tls=tls, ssl_cert_login=stomp.ssl_cert_login, admit=server.admit,
        connect_timeout=server.config.limits.handshake_timeout / 1000)


def mqtt_session(server: SessionHost, peer: tuple[str, int], wake: Callable[[], None],
                 tls: TLSPeer | None = None) -> Any:
    return MQTTSession(
        server.broker, server.auth, server.config.mqtt, registry=server.mqtt_state,
        peer=peer, loopback=is_loopback(peer[0]),
        loopback_users=server.config.auth.loopback_users,
        clock=server.clock, wake=wake, high_water=server.config.limits.connection_buffer,
        tls=tls, admit=server.admit,
        connect_timeout=server.config.limits.handshake_timeout / 1000)


SESSION_FACTORIES: dict[str, SessionFactory] = {
    "amqp": amqp_session,
    "mqtt": mqtt_session,
    "stomp": stomp_session,
}


def wamp_router(data_dir: str | Path) -> WampRouter:
    """The WAMP state of one server (realms, registrations), with the broker's WAMP-CRA
    secret kept in its data directory (`broker_secret`)."""
    return WampRouter(secret=broker_secret(Path(data_dir) / SECRET_FILE))


def broker_secret(path: Path) -> bytes | None:
    """The broker's secret kept in `path` (made, readable by its owner only, on first use),
    so the WAMP-CRA salts shown for unknown names stay the same across restarts, as real
    users' salts do; None when the file cannot be read or written (a random one is used)."""
    try:
        data = path.read_bytes()
        if len(data) >= SECRET_SIZE:
            return data[:SECRET_SIZE]
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read %s (%s): WAMP-CRA decoy salts change on restart", path, exc)
        return None
    secret = secrets.token_bytes(SECRET_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
    except OSError as exc:
        log.warning("cannot write %s (%s): WAMP-CRA decoy salts change on restart", path, exc)
        return None
    return secret
