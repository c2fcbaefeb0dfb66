"""STOMP <-> the core model, at the edge, once each way: destinations and headers.

Destinations are RabbitMQ's STOMP plugin's (docs/stomp.md "Destinations"):

| destination       | SEND                                   | SUBSCRIBE                         |
|-------------------|----------------------------------------|-----------------------------------|
| `/queue/Q`        | declare Q (first SEND), publish to ""  | declare Q, consume                |
| `/amq/queue/Q`    | publish to "" with key Q               | consume existing Q (404 if none)  |
| `/topic/K`        | publish to amq.topic with key K        | own queue bound to amq.topic by K |
| `/exchange/X[/K]` | publish to X with key K (default "")   | own queue bound to X by pattern K |
| `/temp-queue/T`   | private reply queue (also in reply-to) | refused                           |
| `/reply-queue/Q`  | publish to "" with key Q               | refused                           |

Names are percent-decoded on the way in and `/`, `%` and non-ASCII characters are
percent-encoded on the way out (`rabbit_routing_util`), so any queue name round-trips.

Headers (`rabbit_stomp_util:message_properties/1`, `message_headers/1`): the standard ones
map to AMQP properties (`PROPERTY_HEADERS`, plus `persistent`, `priority`, `timestamp`,
`amqp-message-id`); every other header goes to the AMQP headers table as a string, and
comes back as a header on MESSAGE. Unlike RabbitMQ, which drops them, booleans and floats
of AMQP headers reach STOMP as text; nested tables and arrays cannot be a header value and
are left out.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final
from urllib.parse import quote, unquote

from gateway.core.message import Message, Properties
from protocols.stomp.frames import StompError

# -- destinations --------------------------------------------------------------------------


class Kind(Enum):
    QUEUE = "/queue/"
    AMQ_QUEUE = "/amq/queue/"
    TOPIC = "/topic/"
    EXCHANGE = "/exchange/"
    TEMP_QUEUE = "/temp-queue/"
    REPLY_QUEUE = "/reply-queue/"


PREFIXES: Final = tuple(k.value for k in Kind)
TOPIC_EXCHANGE: Final = "amq.topic"
VALID_TYPES: Final = ("Valid destination types are: /temp-queue, /exchange, /topic, "
                      "/queue, /amq/queue, /reply-queue/.")


@dataclass(frozen=True, slots=True)
class Destination:
    kind: Kind
    name: str  # queue, exchange, topic key or temp-queue name
    key: str = ""  # routing key or binding pattern of an /exchange/ destination

    def __str__(self) -> str:
        if self.kind is Kind.EXCHANGE and self.key:
            return f"{self.kind.value}{_quote(self.name)}/{_quote(self.key)}"
        return self.kind.value + _quote(self.name)


def _quote(name: str) -> str:
    return quote(name, safe="!$&'()*+,;=:@-._~")


def parse_destination(text: str) -> Destination:
    """A destination header, or `StompError` naming what is wrong with it."""
    for kind in Kind:
        if text.startswith(kind.value):
            rest = text[len(kind.value):]
            break
    else:
        raise StompError("Unknown destination",
                         f"'{text}' is not a valid destination.\n{VALID_TYPES}\n")
    parts = rest.split("/")
    if kind is Kind.EXCHANGE:
        if len(parts) > 2 or not parts[0]:
            raise _invalid(text)
        name = unquote(parts[0])
        return Destination(kind, name, unquote(parts[1]) if len(parts) == 2 else "")
    if len(parts) != 1 or (not parts[0] and kind is not Kind.TOPIC):
        raise _invalid(text)
    return Destination(kind, unquote(parts[0]))


def _invalid(text: str) -> StompError:
    return StompError("Invalid destination", f"'{text}' is not a valid destination.\n"
                      f"{VALID_TYPES}\n")


def format_destination(exchange: str, routing_key: str) -> str:
    """The `destination` of a MESSAGE, re-derived from where it was published."""
    if exchange == "":
        return Kind.QUEUE.value + _quote(routing_key)
    if exchange == TOPIC_EXCHANGE:
        return Kind.TOPIC.value + _quote(routing_key)
    if routing_key:
        return f"{Kind.EXCHANGE.value}{_quote(exchange)}/{_quote(routing_key)}"
    return Kind.EXCHANGE.value + _quote(exchange)


def subscription_queue_name(destination: str, subscription_id: str, durable: bool) -> str:
    """The queue of a /topic/ or /exchange/ subscription. A durable one is named from the
    destination and the subscription id, so reconnecting with both finds it again
    (`rabbit_stomp_util:subscription_queue_name`); others get a random name."""
    if durable:
        digest = hashlib.md5(f"{destination}\n{subscription_id}".encode(),
                             usedforsecurity=False).digest()
    else:
        digest = os.urandom(16)
    return "stomp-subscription-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


# -- queue-shaping headers -----------------------------------------------------------------

# header -> type of the queue argument it sets (include/rabbit_stomp_headers.hrl)
QUEUE_ARGUMENTS: Final[Mapping[str, type]] = {
    "x-dead-letter-exchange": str,
    "x-dead-letter-routing-key": str,
    "x-expires": int,
    "x-message-ttl": int,
    "x-max-length": int,
    "x-max-length-bytes": int,
    "x-max-priority": int,
    "x-overflow": str,
    "x-queue-type": str,
    "x-max-age": str,
    "x-single-active-consumer": bool,
}
QUEUE_HEADERS: Final = frozenset({"durable", "auto-delete", "exclusive", "x-queue-name",
                                  *QUEUE_ARGUMENTS})


@dataclass(frozen=True, slots=True)
class QueueOptions:
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]


def parse_bool(headers: Mapping[str, str], name: str, default: bool) -> bool:
    value = headers.get(name)
    if value is None:
        return default
    if value in ("true", "false"):
        return value == "true"
    raise StompError("Invalid header", f"header '{name}' must be true or false, got "
                     f"'{value}'")


def parse_int(headers: Mapping[str, str], name: str, low: int = 0,
              high: int | None = None) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f" from {low} to {high}" if high is not None else f" of at least {low}"
        raise StompError("Invalid header", f"header '{name}' must be an integer{bound}, got "
                         f"'{value}'")
    return number


def queue_options(headers: Mapping[str, str], *, durable: bool, auto_delete: bool,
                  exclusive: bool) -> QueueOptions:
    """How to declare a destination's queue: the defaults given, changed by headers."""
    arguments: dict[str, Any] = {}
    for name, kind in QUEUE_ARGUMENTS.items():
        if name not in headers:
            continue
        if kind is int:
            arguments[name] = parse_int(headers, name, low=-(2**63))
        elif kind is bool:
            arguments[name] = parse_bool(headers, name, False)
        else:
            arguments[name] = headers[name]
    return QueueOptions(
        durable=parse_bool(headers, "durable", durable),
        auto_delete=parse_bool(headers, "auto-delete", auto_delete),
        exclusive=parse_bool(headers, "exclusive", exclusive),
        arguments=arguments,
    )


# -- headers <-> properties ----------------------------------------------------------------

# STOMP header <-> core `Properties` field, for the string-valued properties
PROPERTY_HEADERS: Final[Mapping[str, str]] = {
    "content-type": "content_type",
    "content-encoding": "content_encoding",
    "correlation-id": "correlation_id",
    "reply-to": "reply_to",
    "expiration": "expiration",
    "amqp-message-id": "message_id",
    "type": "type",
    "user-id": "user_id",
    "app-id": "app_id",
}
CONVERTED_HEADERS: Final = frozenset({"persistent", "priority", "timestamp"})
# Frame-level headers: they steer the frame itself and never become message headers.
FRAME_HEADERS: Final = frozenset({"destination", "content-length", "transaction", "receipt",
                                  "message-id"})
# Headers the server sets on a MESSAGE; message headers of these names are not copied.
MESSAGE_HEADERS: Final = frozenset({"subscription", "destination", "message-id",
                                    "redelivered", "ack", "content-length"})
NOT_MESSAGE_HEADERS: Final = frozenset({*PROPERTY_HEADERS, *CONVERTED_HEADERS,
                                        *FRAME_HEADERS, *QUEUE_HEADERS})
CACHE_KEY: Final = "stomp"
DEST_CACHE_KEY: Final = "stomp-destination"


def properties_from_headers(headers: Mapping[str, str]) -> Properties:
    """The properties of a SEND, by the header table; `reply-to` as given (the session
    resolves /temp-queue/ names). One pass over the headers."""
    props = Properties()
    extra: dict[str, str] | None = None
    for name, value in headers.items():
        field = PROPERTY_HEADERS.get(name)
        if field is not None:
            setattr(props, field, value)
        elif name in NOT_MESSAGE_HEADERS:
            if name == "persistent":
                if parse_bool(headers, name, False):
                    props.delivery_mode = 2
            elif name == "priority":
                props.priority = parse_int(headers, name, 0, 255)
            elif name == "timestamp":
                props.timestamp = _timestamp(parse_int(headers, name, 0, 2**63 - 1))
        else:
            if extra is None:
                extra = {}
            extra[name] = value
    props.headers = extra
    return props


def _timestamp(seconds: int | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise StompError("Invalid header", f"timestamp {seconds} is out of range") from exc


def _text(value: Any) -> str | None:
    """An AMQP header value as STOMP header text, or None when it has no text form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, datetime):
        return str(int(value.timestamp()))
    return None


def reply_to_header(reply_to: str) -> str:
    """An AMQP reply-to as STOMP shows it: a plain queue name is a /reply-queue/."""
    if reply_to.startswith(PREFIXES):
        return reply_to
    return Kind.REPLY_QUEUE.value + _quote(reply_to)


def headers_from_properties(props: Properties) -> list[tuple[str, str]]:
    """The MESSAGE headers that carry a message's properties, by the same table."""
    out: list[tuple[str, str]] = []
    for header, field in PROPERTY_HEADERS.items():
        value = getattr(props, field)
        if value is None:
            continue
        if header == "reply-to":
            value = reply_to_header(value)
        out.append((header, str(value)))
    if props.delivery_mode == 2:
        out.append(("persistent", "true"))
    if props.priority is not None:
        out.append(("priority", str(props.priority)))
    if props.timestamp is not None:
        stamp = _text(props.timestamp)
        if stamp is not None:
            out.append(("timestamp", stamp))
    if props.headers:
        taken = {name for name, _ in out}
        for name, value in props.headers.items():
            if name in MESSAGE_HEADERS or name in taken:
                continue
            text = _text(value)
            if text is not None:
                out.append((name, text))
    return out


def message_destination(message: Message) -> str:
    """`format_destination` of a message, computed once per message."""
    dest: str | None = message.cache.get(DEST_CACHE_KEY)
    if dest is None:
        dest = message.cache[DEST_CACHE_KEY] = format_destination(message.exchange,
                                                                  message.routing_key)
    return dest


def message_headers(message: Message) -> list[tuple[str, str]]:
    """`headers_from_properties` of a message, computed once per message."""
    cached: list[tuple[str, str]] | None = message.cache.get(CACHE_KEY)
    if cached is None:
        cached = message.cache[CACHE_KEY] = headers_from_properties(message.properties)
    return cached


def validate_publish(props: Properties, user: str) -> None:
    """RabbitMQ's checks on published properties (as for AMQP's basic.publish)."""
    if props.user_id is not None and props.user_id != user:
        raise StompError("precondition_failed",
                         f"user_id property set to '{props.user_id}' but authenticated user "
                         f"was '{user}'")
    exp = props.expiration
    if exp is not None and not (exp.isascii() and exp.isdigit()):
        raise StompError("precondition_failed",
                         f"invalid expiration '{exp}': expected a non-negative integer of "
                         "milliseconds")
