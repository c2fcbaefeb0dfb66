"""What a connection shows of itself to management: typed records every protocol session
provides (`Connected.info()`), and what a consumer tells of the connection it belongs to
(`Owned.owner()`). Management reads these, never a session's own attributes, so a
session's insides may change without management noticing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str  # "TLSv1.3"
    cipher: str
    cert_subject: str = ""  # the verified client certificate's subject ("" if none)


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """An AMQP channel (other protocols have none)."""

    number: int
    consumer_count: int = 0
    unacked: int = 0
    unconfirmed: int = 0
    uncommitted: int = 0  # publishes in an open transaction
    acks_uncommitted: int = 0
    prefetch: int = 0
    global_prefetch: int = 0
    confirm: bool = False
    transactional: bool = False
    flow: bool = True
    # counters for rates: messages published, deliveries and gets, acks
    publish: int = 0
    deliver_get: int = 0
    ack: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    protocol: str  # as listed: "AMQP 0-9-1", "MQTT 3.1.1", "STOMP 1.2", ...
    key: str  # the protocol's short name, as its listener is named: amqp, mqtt, stomp
    peer: tuple[str, int]
    user: str | None = None  # None until logged in
    vhost: str | None = None
    closed: bool = False
    client_properties: Mapping[str, Any] = field(default_factory=dict)
    heartbeat: int = 0  # seconds (AMQP heartbeat, MQTT keep-alive, ...)
    frame_max: int = 0
    channel_max: int = 0
    auth_mechanism: str = "PLAIN"
    tls: TLSInfo | None = None
    pending_output: int = 0  # bytes waiting to be written
    blocked: bool = False  # reading paused (memory alarm)
    channels: tuple[ChannelInfo, ...] = ()


class Connected(Protocol):
    """A protocol session as management sees it."""

    def info(self) -> ConnectionInfo:
        ...


@dataclass(frozen=True, slots=True)
class ConsumerOwner:
    connection: Connected
    channel: int | None = None  # the AMQP channel number
    prefetch: int = 0


@runtime_checkable
class Owned(Protocol):
    """A consumer that knows its connection (a core `Consumer` of a protocol session)."""

    def owner(self) -> ConsumerOwner:
        ...


def close_session(session: Any, text: str) -> None:
    """Close a protocol session from outside it (an operator through the management API, an
    access token that expired): its protocol's own close (AMQP connection.close with
    `text`, MQTT DISCONNECT, STOMP ERROR, WAMP GOODBYE), then wake its connection so that
    the close is sent."""
    try:
        session.shutdown(text)
    except TypeError:  # sessions whose close takes no text
        session.shutdown()
    wake = getattr(session, "wake", None)
    if callable(wake):
        wake()
