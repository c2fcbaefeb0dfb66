"""gateway: a multi-protocol message broker (AMQP 0-9-1 first; MQTT, STOMP, WAMP on one core)."""

from __future__ import annotations

__version__ = "0.1.0"
