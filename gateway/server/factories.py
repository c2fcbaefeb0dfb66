"""How each listener makes a session for a new connection: one factory per protocol.

A factory gets the server (broker, auth, config, clock), the peer address, the
connection's `wake` callback and what its TLS handshake found (None on a plain port), and
returns a sans-IO session that the generic `Connection`
drives (see `gateway.server.connection.Session`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.auth.service import is_loopback
from protocols.tls import TLSPeer

if TYPE_CHECKING:
    from gateway.server.app import Server

SessionFactory = Callable[["Server", tuple[str, int], Callable[[], None], TLSPeer | None], Any]


def amqp_session(server: Server, peer: tuple[str, int], wake: Callable[[], None],
                 tls: TLSPeer | None = None) -> Any:
    from protocols.amqp.session import AMQPSession

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


def stomp_session(server: Server, peer: tuple[str, int], wake: Callable[[], None],
                  tls: TLSPeer | None = None) -> Any:
    from protocols.stomp.session import StompSession

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


def mqtt_session(server: Server, peer: tuple[str, int], wake: Callable[[], None],
                 tls: TLSPeer | None = None) -> Any:
    from protocols.mqtt.session import MQTTSession

    return MQTTSession(
        server.broker, server.auth, server.config.mqtt, peer=peer,
        loopback=is_loopback(peer[0]), loopback_users=server.config.auth.loopback_users,
        clock=server.clock, wake=wake, high_water=server.config.limits.connection_buffer,
        tls=tls, admit=server.admit,
        connect_timeout=server.config.limits.handshake_timeout / 1000)


SESSION_FACTORIES: dict[str, SessionFactory] = {
    "amqp": amqp_session,
    "mqtt": mqtt_session,
    "stomp": stomp_session,
}
