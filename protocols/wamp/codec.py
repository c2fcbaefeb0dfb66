"""Sans-IO WAMP serialization: one transport message <-> one typed message (`frames.py`).

Serializers (spec "Serializers"): `wamp.2.json` travels in WebSocket text messages, with
binary values as strings of "\\u0000" + base64 (spec "Binary conversion of JSON strings");
`wamp.2.msgpack` in binary messages, with bin and str kept apart by MessagePack itself.

Decoding checks the shape of every message against `SCHEMA` (the table of contents of the
message layouts): the list, its code, each element's type, the optional trailing
`Arguments|list` and `ArgumentsKw|dict`. Anything else raises `ProtocolViolation`, the only
exception that leaves this module. URIs are checked by the session, whose rules depend on
the message (patterns allow empty components).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import fields
from enum import Enum
from typing import Any, Final

import msgpack

from protocols.wamp.frames import (
    MAX_ID,
    Abort,
    Authenticate,
    Call,
    Cancel,
    Challenge,
    Error,
    Event,
    Goodbye,
    Hello,
    Interrupt,
    Invocation,
    Message,
    MessageType,
    ProtocolViolation,
    Publish,
    Published,
    Register,
    Registered,
    Result,
    Subscribe,
    Subscribed,
    Unregister,
    Unregistered,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    Yield,
)


class Serializer(Enum):
    JSON = "wamp.2.json"
    MSGPACK = "wamp.2.msgpack"

    @property
    def binary(self) -> bool:
        """True when messages travel in binary WebSocket messages."""
        return self is Serializer.MSGPACK


# element kinds of the fixed part of a message
ID, DICT, URI, STR, INT = "id", "dict", "uri", "str", "int"

# code -> (class, kinds of the fixed elements, trailing part: "payload" = [args, [kwargs]],
# "details" = [dict] (router-initiated UNSUBSCRIBED/UNREGISTERED), "" = nothing)
SCHEMA: Final[dict[int, tuple[type[Any], tuple[str, ...], str]]] = {
    MessageType.HELLO: (Hello, (URI, DICT), ""),
    MessageType.WELCOME: (Welcome, (ID, DICT), ""),
    MessageType.ABORT: (Abort, (DICT, URI), "payload"),
    MessageType.CHALLENGE: (Challenge, (STR, DICT), ""),
    MessageType.AUTHENTICATE: (Authenticate, (STR, DICT), ""),
    MessageType.GOODBYE: (Goodbye, (DICT, URI), ""),
    MessageType.ERROR: (Error, (INT, ID, DICT, URI), "payload"),
    MessageType.PUBLISH: (Publish, (ID, DICT, URI), "payload"),
    MessageType.PUBLISHED: (Published, (ID, ID), ""),
    MessageType.SUBSCRIBE: (Subscribe, (ID, DICT, URI), ""),
    MessageType.SUBSCRIBED: (Subscribed, (ID, ID), ""),
    MessageType.UNSUBSCRIBE: (Unsubscribe, (ID, ID), ""),
    MessageType.UNSUBSCRIBED: (Unsubscribed, (ID,), "details"),
    MessageType.EVENT: (Event, (ID, ID, DICT), "payload"),
    MessageType.CALL: (Call, (ID, DICT, URI), "payload"),
    MessageType.CANCEL: (Cancel, (ID, DICT), ""),
    MessageType.RESULT: (Result, (ID, DICT), "payload"),
    MessageType.REGISTER: (Register, (ID, DICT, URI), ""),
    MessageType.REGISTERED: (Registered, (ID, ID), ""),
    MessageType.UNREGISTER: (Unregister, (ID, ID), ""),
    MessageType.UNREGISTERED: (Unregistered, (ID,), "details"),
    MessageType.INVOCATION: (Invocation, (ID, ID, DICT), "payload"),
    MessageType.INTERRUPT: (Interrupt, (ID, DICT), ""),
    MessageType.YIELD: (Yield, (ID, DICT), "payload"),
}

_NAMES: Final = {code: MessageType(code).name for code in SCHEMA}


def _check(kind: str, value: Any, name: str, index: int) -> None:
    ok: bool
    if kind == ID:
        ok = type(value) is int and 0 <= value <= MAX_ID
    elif kind == DICT:
        ok = type(value) is dict and all(type(k) is str for k in value)
    elif kind in (URI, STR):
        ok = type(value) is str
    else:
        ok = type(value) is int
    if not ok:
        raise ProtocolViolation(f"{name}: element {index} must be {_KIND_TEXT[kind]}, "
                                f"got {type(value).__name__}")


_KIND_TEXT: Final = {ID: "an id (integer in [0, 2^53])", DICT: "a dict with string keys",
                     URI: "a URI string", STR: "a string", INT: "an integer"}


def from_list(items: Any) -> Message:
    """A decoded WAMP list -> its typed message; `ProtocolViolation` if it is not one."""
    if type(items) is not list or not items:
        raise ProtocolViolation("a WAMP message must be a non-empty list")
    code = items[0]
    if type(code) is not int or code not in SCHEMA:
        raise ProtocolViolation(f"unknown message type {code!r}")
    cls, kinds, tail = SCHEMA[code]
    name = _NAMES[code]
    n = len(kinds)
    rest = items[1:]
    if len(rest) < n:
        raise ProtocolViolation(f"{name}: expected at least {n} elements after the code, "
                                f"got {len(rest)}")
    for i, (kind, value) in enumerate(zip(kinds, rest, strict=False)):
        _check(kind, value, name, i + 1)
    extra = rest[n:]
    values = list(rest[:n])
    if tail == "payload":
        if len(extra) > 2:
            raise ProtocolViolation(f"{name}: too many elements")
        if extra:
            if type(extra[0]) is not list:
                raise ProtocolViolation(f"{name}: Arguments must be a list")
            if len(extra) == 2 and (type(extra[1]) is not dict
                                    or not all(type(k) is str for k in extra[1])):
                raise ProtocolViolation(f"{name}: ArgumentsKw must be a dict with string keys")
        values += extra
    elif tail == "details":
        if len(extra) > 1:
            raise ProtocolViolation(f"{name}: too many elements")
        if extra:
            _check(DICT, extra[0], name, n + 1)
            values += extra
    elif extra:
        raise ProtocolViolation(f"{name}: expected {n} elements after the code, "
                                f"got {len(rest)}")
    return cls(*values)  # type: ignore[no-any-return]


def to_list(msg: Message) -> list[Any]:
    """A typed message -> its WAMP list, leaving out an empty trailing payload."""
    out: list[Any] = [int(msg.TYPE)]
    names = [f.name for f in fields(msg)]
    values = [getattr(msg, n) for n in names]
    if names[-2:] == ["args", "kwargs"]:
        args, kwargs = values[-2], values[-1]
        out += values[:-2]
        if kwargs:
            out += [list(args or []), kwargs]
        elif args:
            out.append(list(args))
        return out
    if names[-1] == "details" and msg.TYPE in (MessageType.UNSUBSCRIBED,
                                               MessageType.UNREGISTERED):
        out += values[:-1]
        if values[-1] is not None:  # given (even empty): kept, so decoding gives it back
            out.append(values[-1])
        return out
    out += values
    return out


# -- JSON with the binary convention -------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unbinary(value: Any) -> Any:
    """Replace "\\u0000"+base64 strings by bytes, everywhere in a decoded JSON value."""
    if type(value) is str:
        if value.startswith("\x00"):
            try:
                return base64.b64decode(value[1:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolViolation("invalid base64 in a binary JSON string") from exc
        return value
    if type(value) is list:
        return [_unbinary(v) for v in value]
    if type(value) is dict:
        return {k: _unbinary(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\x00" + base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_loads(data: bytes | str) -> Any:
    value = json.loads(data, parse_constant=_reject_constant)
    # a NUL can only be in a JSON string escaped (raw control characters are refused), so
    # without the escape there is no binary value to convert
    marker: bytes | str = b"\\u0000" if isinstance(data, bytes | bytearray) else "\\u0000"
    return _unbinary(value) if marker in data else value  # type: ignore[operator]


def _json_dumps(items: list[Any]) -> str:
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default)


def _msgpack_loads(data: bytes | str) -> Any:
    if isinstance(data, str):
        raise ValueError("msgpack messages travel in binary frames")
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def _msgpack_dumps(items: list[Any]) -> bytes:
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


_LOADS: Final[dict[Serializer, Callable[[bytes | str], Any]]] = {
    Serializer.JSON: _json_loads, Serializer.MSGPACK: _msgpack_loads}


class WampCodec:
    """One transport's serializer: `decode(payload) -> Message`, `encode(message)`."""

    def __init__(self, serializer: Serializer, *, max_message_size: int = 16 * 1024 * 1024
                 ) -> None:
        self.serializer = serializer
        self.max_message_size = max_message_size
        self._loads = _LOADS[serializer]

    def decode(self, data: bytes | str) -> Message:
        if len(data) > self.max_message_size:
            raise ProtocolViolation(f"message of {len(data)} bytes is over the limit of "
                                    f"{self.max_message_size}")
        try:
            items = self._loads(data)
        except ProtocolViolation:
            raise
        except (ValueError, TypeError, RecursionError, msgpack.ExtraData,
                msgpack.FormatError, msgpack.StackError) as exc:
            raise ProtocolViolation(f"cannot decode {self.serializer.value} message: "
                                    f"{exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a decoder's own error is a bad message
            raise ProtocolViolation(f"cannot decode {self.serializer.value} message: "
                                    f"{exc}") from exc
        return from_list(items)

    def encode(self, msg: Message) -> bytes | str:
        """The wire form; raises `ValueError` for a value the serializer cannot carry."""
        items = to_list(msg)
        if self.serializer is Serializer.JSON:
            try:
                return _json_dumps(items)
            except (TypeError, RecursionError) as exc:
                raise ValueError(str(exc)) from exc
        try:
            return _msgpack_dumps(items)
        except (TypeError, RecursionError, OverflowError) as exc:
            raise ValueError(str(exc)) from exc
