"""WAMP <-> the core message model, at the edge, once each way (see docs/wamp-mapping.md).

Names:
- a realm is a vhost; a topic URI is the routing key on `amq.topic`, unchanged
  (`com.example.temp`), so MQTT `com/example/temp` and STOMP `/topic/com.example.temp`
  meet it there;
- a wildcard subscription `com..temp` binds `com.*.temp` (one empty component is exactly
  one word); a prefix subscription binds the parent's `#` and the subscriber keeps only
  routing keys that start with the prefix as a string (the spec's prefix match is a
  string prefix: `com.ex` matches `com.example`);
- a procedure URI is the name of a queue on the default exchange: a CALL is an
  AMQP-style request (`reply_to` + `correlation_id`), a REGISTER consumes the queue.

Payload (`args`/`kwargs` <-> body, content type and one marker header):

    args=[str]                 -> UTF-8 text             text/plain; charset=utf-8
    args=[bytes]               -> the bytes              application/octet-stream
    args=[other JSON value]    -> JSON of the value      application/json
    kwargs only (args empty)   -> JSON of kwargs         application/json, x-wamp-payload=kwargs
    several args, or both      -> {"args":..,"kwargs":..} application/json, x-wamp-payload=envelope
    no payload                 -> empty body             (no content type)

and back: the marker unpacks exactly; a JSON content type (or none, when the body parses as
JSON) gives `args=[value]`; `text/*` or UTF-8 gives `args=[str]`; anything else
`args=[bytes]`; an empty body gives no payload. Bytes nested inside a JSON body use the
JSON serializer's convention ("\\u0000" + base64) and come back as bytes to WAMP peers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# headers carrying WAMP's own semantics through the core (non-WAMP clients see them too).
# Those naming a session or a user (publisher, caller, session) are believed only on messages
# a WAMP session of this broker published (`Message.origin == ORIGIN`, set by the broker):
# an AMQP, STOMP, MQTT or API publisher may set any header, so from them these mean nothing
# (`identity_details`).
H_PAYLOAD: Final = "x-wamp-payload"
H_SESSION: Final = "x-wamp-session"  # the publishing/calling session (exclude_me)
H_PUBLICATION: Final = "x-wamp-publication"
H_PUBLISHER: Final = "x-wamp-publisher"  # disclose_me: session, authid, authrole
H_PUBLISHER_AUTHID: Final = "x-wamp-publisher-authid"
H_PUBLISHER_AUTHROLE: Final = "x-wamp-publisher-authrole"
H_CALLER: Final = "x-wamp-caller"
H_CALLER_AUTHID: Final = "x-wamp-caller-authid"
H_CALLER_AUTHROLE: Final = "x-wamp-caller-authrole"
H_RECEIVE_PROGRESS: Final = "x-wamp-receive-progress"
H_PROGRESS: Final = "x-wamp-progress"
H_ERROR: Final = "x-wamp-error"
H_PROCEDURE: Final = "x-wamp-procedure"
# subscriber black/whitelisting: PUBLISH option name -> header
FILTER_HEADERS: Final = {
    "exclude": "x-wamp-exclude",
    "eligible": "x-wamp-eligible",
    "exclude_authid": "x-wamp-exclude-authid",
    "eligible_authid": "x-wamp-eligible-authid",
    "exclude_authrole": "x-wamp-exclude-authrole",
    "eligible_authrole": "x-wamp-eligible-authrole",
}

CT_JSON: Final = "application/json"
CT_TEXT: Final = "text/plain; charset=utf-8"
CT_BINARY: Final = "application/octet-stream"

# URI rules (spec "URIs"): loose, with and without empty components; a `*` component would
# be an AMQP wildcard in a routing key, so it is refused as well
_LOOSE: Final = re.compile(r"^([^\s.#]+\.)*([^\s.#]+)$")
_LOOSE_EMPTY: Final = re.compile(r"^(([^\s.#]+\.)|\.)*([^\s.#]+)?$")


def valid_uri(uri: str, *, allow_empty: bool = False) -> bool:
    """True for a loose URI (with empty components when `allow_empty`, for patterns) that
    has no `*` component."""
    rx = _LOOSE_EMPTY if allow_empty else _LOOSE
    if not uri or rx.match(uri) is None:
        return False
    return "*" not in uri.split(".")


def reserved_uri(uri: str) -> bool:
    """Application URIs must not start with `wamp.` (spec "Reserved URIs")."""
    return uri == "wamp" or uri.startswith("wamp.")


ORIGIN: Final = "wamp"  # `Message.origin` of what WAMP sessions publish and call

_IDENTITY: Final = {
    "publisher": (H_PUBLISHER, H_PUBLISHER_AUTHID, H_PUBLISHER_AUTHROLE),
    "caller": (H_CALLER, H_CALLER_AUTHID, H_CALLER_AUTHROLE),
}


def identity_details(origin: str, headers: Mapping[str, Any], role: str) -> dict[str, Any]:
    """EVENT/INVOCATION details naming the publisher or caller (`role`): `publisher`,
    `publisher_authid`, `publisher_authrole` (or `caller*`), from the headers a WAMP session
    of this broker set when it disclosed itself. Empty for a message of any other `origin`,
    whatever its headers claim: identity comes from the broker, never from a client."""
    if origin != ORIGIN:
        return {}
    session_h, authid_h, authrole_h = _IDENTITY[role]
    session = headers.get(session_h)
    if not isinstance(session, int) or isinstance(session, bool):
        return {}
    details: dict[str, Any] = {role: session}
    for header, name in ((authid_h, f"{role}_authid"), (authrole_h, f"{role}_authrole")):
        value = headers.get(header)
        if isinstance(value, str):
            details[name] = value
    return details


# -- topics --------------------------------------------------------------------------------

TOPIC_EXCHANGE: Final = "amq.topic"


def topic_routing_key(topic: str) -> str:
    return topic


def routing_key_topic(routing_key: str) -> str:
    return routing_key


@dataclass(frozen=True, slots=True)
class TopicBinding:
    """How one subscription sits on `amq.topic`: the binding key, and the string prefix a
    routing key must start with (prefix match only)."""

    key: str
    prefix: str | None = None

    def accepts(self, routing_key: str) -> bool:
        return self.prefix is None or routing_key.startswith(self.prefix)


def subscription_binding(topic: str, match: str) -> TopicBinding:
    """The binding for SUBSCRIBE `topic` with `match` exact, prefix or wildcard."""
    if match == "wildcard":
        return TopicBinding(".".join(w if w else "*" for w in topic.split(".")))
    if match == "prefix":
        # `com.ex` must match `com.example.x` and `com.ex` itself: bind `com.#`, filter
        words = topic.split(".")
        parent = [w for w in words[:-1]]
        if any(not w for w in parent):
            raise ValueError("empty component in a prefix")
        return TopicBinding(".".join([*parent, "#"]), topic)
    return TopicBinding(topic)


# -- payload -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    content_type: str | None
    marker: str | None  # value of H_PAYLOAD, when the body is an envelope or kwargs


def _jsonable(value: Any) -> Any:
    """`value` with bytes turned into "\\u0000"+base64 strings (the JSON convention)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\x00" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def encode_payload(args: list[Any] | None, kwargs: dict[str, Any] | None) -> Body:
    """WAMP args/kwargs -> body bytes, content type and marker. Raises `ValueError` for a
    value JSON cannot carry."""
    try:
        if not kwargs:
            if not args:
                return Body(b"", None, None)
            if len(args) == 1:
                x = args[0]
                if isinstance(x, str):
                    return Body(x.encode("utf-8"), CT_TEXT, None)
                if isinstance(x, bytes | bytearray | memoryview):
                    return Body(bytes(x), CT_BINARY, None)
                return Body(_dumps(x), CT_JSON, None)
            return Body(_dumps({"args": args, "kwargs": {}}), CT_JSON, "envelope")
        if not args:
            return Body(_dumps(kwargs), CT_JSON, "kwargs")
        return Body(_dumps({"args": args, "kwargs": kwargs}), CT_JSON, "envelope")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"payload cannot be carried as JSON: {exc}") from exc


def _unbinary(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("\x00"):
            try:
                return base64.b64decode(value[1:], validate=True)
            except (binascii.Error, ValueError):
                return value
        return value
    if isinstance(value, list):
        return [_unbinary(v) for v in value]
    if isinstance(value, dict):
        return {k: _unbinary(v) for k, v in value.items()}
    return value


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == CT_JSON or media.endswith("+json")


def decode_payload(body: bytes, content_type: str | None, marker: Any,
                   from_wamp: bool) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """Body, content type and marker -> WAMP args/kwargs (see the table above).
    `from_wamp`: the body was written by `encode_payload`, so binary strings are decoded."""
    if marker in ("envelope", "kwargs"):
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            value = None
        if marker == "kwargs" and isinstance(value, dict):
            return [], _unbinary(value) if from_wamp else value
        if marker == "envelope" and isinstance(value, dict):
            args = value.get("args")
            kwargs = value.get("kwargs")
            args = list(args) if isinstance(args, list) else []
            kwargs = dict(kwargs) if isinstance(kwargs, dict) else None
            if from_wamp:
                args, kwargs = _unbinary(args), _unbinary(kwargs)
            return args, kwargs or None
    if not body:
        return None, None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if content_type is not None and _is_json_type(content_type):
        try:
            value = json.loads(body)
            return [_unbinary(value) if from_wamp else value], None
        except (ValueError, RecursionError):
            pass
    if media.startswith("text/"):
        return [body.decode("utf-8", "replace")], None
    if media == CT_BINARY:
        return [bytes(body)], None
    if not media:
        try:
            return [json.loads(body)], None
        except (ValueError, RecursionError):
            pass
    try:
        return [body.decode("utf-8")], None
    except UnicodeDecodeError:
        return [bytes(body)], None


def error_body(args: list[Any] | None, kwargs: dict[str, Any] | None) -> Body:
    """An ERROR's payload as a reply body: always the envelope, so it unpacks exactly."""
    return Body(_dumps({"args": list(args or []), "kwargs": dict(kwargs or {})}), CT_JSON,
                "envelope")
