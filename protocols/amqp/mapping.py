"""AMQP 0-9-1 <-> the core message model, at the edge, once each way.

AMQP's basic properties are the core's `Properties` field for field (pamqp calls `type`
`message_type`), so the mapping is a plain copy. The encoded property block of a message is
cached on the message, so a message delivered to many AMQP consumers is encoded once.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands, decode

from gateway.core.errors import AccessRefused, PreconditionFailed
from gateway.core.message import Message, Properties
from protocols.amqp.codec import EMPTY_PROPERTIES, encode_properties

CACHE_KEY = "amqp091"


def from_amqp(p: commands.Basic.Properties) -> Properties:
    if p is EMPTY_PROPERTIES:
        return Properties()
    return Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=p.headers,
        delivery_mode=p.delivery_mode,
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=p.timestamp,
        type=p.message_type,
        user_id=p.user_id,
        app_id=p.app_id,
        cluster_id=p.cluster_id or None,
    )


def to_amqp(p: Properties) -> commands.Basic.Properties:
    return commands.Basic.Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=p.headers,
        delivery_mode=p.delivery_mode,
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=p.timestamp,
        message_type=p.type,
        user_id=p.user_id,
        app_id=p.app_id,
        cluster_id=p.cluster_id or "",
    )


def encoded_properties(message: Message) -> bytes:
    """The message's property block in AMQP encoding, computed once per message."""
    cached = message.cache.get(CACHE_KEY)
    if cached is None:
        cached = message.cache[CACHE_KEY] = encode_properties(to_amqp(message.properties))
    return cached


def validate_publish(props: Properties, user: str) -> None:
    """RabbitMQ's checks on published properties."""
    if props.user_id is not None and props.user_id != user:
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - user_id property set to '{props.user_id}' but "
            f"authenticated user was '{user}'")
    exp = props.expiration
    if exp is not None:
        try:
            ok = int(exp) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise PreconditionFailed(f"PRECONDITION_FAILED - invalid expiration '{exp}': "
                                     "no_integer" if not exp.lstrip("-").isdigit() else
                                     f"PRECONDITION_FAILED - invalid expiration '{exp}': "
                                     "negative value")


def parse_credentials(mechanism: str, response: bytes) -> tuple[str, str]:
    """PLAIN (`\\0user\\0password`) or AMQPLAIN (a field table without its length)."""
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise AccessRefused("ACCESS_REFUSED - malformed PLAIN response")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            _, table = decode.field_table(struct.pack(">I", len(response)) + response)
        except Exception as exc:  # noqa: BLE001 - any decode failure is a bad response
            raise AccessRefused("ACCESS_REFUSED - malformed AMQPLAIN response") from exc
        login: Any = table.get("LOGIN")
        password: Any = table.get("PASSWORD")
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not isinstance(login, str) or not isinstance(password, str):
            raise AccessRefused("ACCESS_REFUSED - AMQPLAIN response lacks LOGIN/PASSWORD")
        return login, password
    raise AccessRefused(f"ACCESS_REFUSED - unsupported authentication mechanism "
                        f"'{mechanism}'")
