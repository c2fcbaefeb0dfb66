"""Admission at login: the hook every session calls once it knows who logged in and where.

The server passes its `admit(session, user_name)` (per-user and per-address connection
limits, `gateway.server.app.Server.admit`); it raises `NotAllowed` with RabbitMQ's wording
to refuse, and each session turns that into its protocol's refusal (AMQP 530, MQTT CONNACK
0x97 / 3, STOMP ERROR, WAMP ABORT). Sessions made without a server admit everyone.
"""

from __future__ import annotations

from collections.abc import Callable

Admit = Callable[[object, str], None]


def admit_all(session: object, user: str) -> None:
    """The default: no connection limits."""
