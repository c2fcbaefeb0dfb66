"""Sans-IO AMQP 0-9-1 framing in the client's direction: server bytes in, client bytes out.

``codec.AMQPCodec`` is the server's side: it reads what a client sends (basic.publish with
content, everything else as methods) and refuses basic.deliver, basic.get-ok and
basic.return, which only a server may send. A client reads exactly those three with
content, never a basic.publish, and never receives a protocol header (a server that
refuses the version answers with its own header and closes). So this module frames the
other direction and reuses the codec for everything shared: ``_decode_method`` (every
method without content, with the codec's linear-time field tables and its strictness)
and ``_decode_properties`` (content headers). Methods are encoded here without pamqp's
``validate``: pamqp holds queue and exchange names to a narrower character class than
RabbitMQ, which accepts any UTF-8 name up to 255 bytes (see ``frames.reply``), and a
gateway passes names chosen by its clients (MQTT client ids, STOMP destinations).

basic.deliver, basic.get-ok and basic.return are decoded by hand, as the codec decodes
basic.publish: they are the per-message path of a consumer.
"""

from __future__ import annotations

import inspect
import struct
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

from pamqp import base, commands, encode

from .codec import EMPTY_PROPERTIES, _decode_method, _decode_properties, encode_properties
from .frames import NEED_DATA, Heartbeat, Method, NeedData, ProtocolError, ReplyCode

Basic = commands.Basic
FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_MIN_SIZE: Final = 4096  # spec 4.2.3: frames up to this size are allowed before tune
CLASS_BASIC: Final = 60

_FRAME_HEADER = struct.Struct(">BHI")
_HEADER_FIELDS = struct.Struct(">HHQH")
_CONTENT_HEADER = struct.Struct(">BHIHHQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEARTBEAT_BYTES: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_HEARTBEAT: Final = Heartbeat()
_DELIVER_INDEX: Final = Basic.Deliver.index
_GET_OK_INDEX: Final = Basic.GetOk.index
_RETURN_INDEX: Final = Basic.Return.index
_PUBLISH_INDEX: Final = Basic.Publish.index

ContentMethod: TypeAlias = commands.Basic.Deliver | commands.Basic.GetOk | commands.Basic.Return
M = TypeVar("M", bound=base.Frame)


@dataclass(frozen=True, slots=True)
class ServerContent:
    """A complete basic.deliver, basic.get-ok or basic.return with its properties and body."""

    channel: int
    method: ContentMethod
    properties: commands.Basic.Properties
    body: bytes


ServerEvent: TypeAlias = Method | ServerContent | Heartbeat


def _error(code: int, text: str, channel: int = 0) -> ProtocolError:
    return ProtocolError(code, text, channel)


class _Pending:
    __slots__ = ("method", "properties", "remaining", "chunks")

    def __init__(self, method: ContentMethod) -> None:
        self.method = method
        self.properties: commands.Basic.Properties | None = None
        self.remaining = -1
        self.chunks: list[bytes] = []


class ClientCodec:
    """One client connection's framing, with no I/O.

    ``frame_max`` starts at the spec's minimum for reading (RabbitMQ's connection.start is
    far smaller) and is raised by the caller to the negotiated value after connection.tune.
    """

    def __init__(self, *, frame_max: int = FRAME_MIN_SIZE * 32) -> None:
        self.frame_max = frame_max
        self._buf = bytearray()
        self._pos = 0
        self._pending: dict[int, _Pending] = {}
        self._failed: ProtocolError | None = None
        self._first = True

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._failed is None and data:
            self._buf += data

    def next_event(self) -> ServerEvent | NeedData:
        """The next complete event, or ``NEED_DATA``; raises ``ProtocolError``."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except ProtocolError as exc:
            self._failed = exc
            raise

    def _next(self) -> ServerEvent | NeedData:
        buf = self._buf
        pos = self._pos
        if self._first and len(buf) - pos >= 1:
            if buf[pos : pos + 1] == b"A":  # "AMQP" + the version the server speaks
                version = bytes(buf[pos + 4 : pos + 8])
                raise _error(ReplyCode.FRAME_ERROR,
                             f"server refused AMQP 0-9-1 (it answered {version!r})")
            self._first = False
        while len(buf) - pos >= 7:
            frame_type, channel, size = _FRAME_HEADER.unpack_from(buf, pos)
            if size + 8 > self.frame_max:
                text = f"frame size {size + 8} exceeds frame_max {self.frame_max}"
                raise _error(ReplyCode.FRAME_ERROR, text, channel)
            start = pos + 7
            end = start + size
            if end >= len(buf):
                break
            if buf[end] != FRAME_END:
                raise _error(ReplyCode.FRAME_ERROR, f"bad frame end {buf[end]:#04x}", channel)
            self._pos = pos = end + 1
            event: ServerEvent | None
            if frame_type == FRAME_METHOD:
                event = self._method(channel, start, end)
            elif frame_type == FRAME_HEADER:
                event = self._header(channel, start, end)
            elif frame_type == FRAME_BODY:
                event = self._body(channel, start, end)
            elif frame_type == FRAME_HEARTBEAT:
                event = _HEARTBEAT
            else:
                raise _error(ReplyCode.FRAME_ERROR, f"unknown frame type {frame_type}", channel)
            if event is not None:
                return event
        if pos:
            del buf[:pos]
            self._pos = 0
        return NEED_DATA

    def _method(self, channel: int, start: int, end: int) -> Method | None:
        buf = self._buf
        if end - start < 4:
            raise _error(ReplyCode.FRAME_ERROR, "method frame too short", channel)
        if channel in self._pending:
            raise _error(ReplyCode.UNEXPECTED_FRAME,
                         f"method frame inside content on channel {channel}", channel)
        index = _U32.unpack_from(buf, start)[0]
        p = start + 4
        try:
            if index == _DELIVER_INDEX:
                self._pending[channel] = _Pending(_decode_deliver(buf, p, end))
                return None
            if index == _RETURN_INDEX:
                self._pending[channel] = _Pending(_decode_return(buf, p, end))
                return None
            if index == _GET_OK_INDEX:
                self._pending[channel] = _Pending(_decode_get_ok(buf, p, end))
                return None
        except (IndexError, struct.error):
            raise _error(ReplyCode.FRAME_ERROR, "malformed content method", channel) from None
        except UnicodeDecodeError as exc:
            raise _error(ReplyCode.SYNTAX_ERROR, f"content method: {exc}", channel) from None
        if index == _PUBLISH_INDEX:
            raise _error(ReplyCode.COMMAND_INVALID, "basic.publish from a server", channel)
        return Method(channel, _decode_method(index, buf, p, end, channel))

    def _header(self, channel: int, start: int, end: int) -> ServerContent | None:
        pending = self._pending.get(channel)
        if pending is None or pending.remaining >= 0:
            raise _error(ReplyCode.UNEXPECTED_FRAME,
                         f"unexpected content header on channel {channel}", channel)
        if end - start < 14:
            raise _error(ReplyCode.FRAME_ERROR, "content header too short", channel)
        class_id, _weight, body_size, flags = _HEADER_FIELDS.unpack_from(self._buf, start)
        if class_id != CLASS_BASIC:
            raise _error(ReplyCode.UNEXPECTED_FRAME, f"content of class {class_id}", channel)
        if flags:
            properties = _decode_properties(flags, self._buf, start + 14, end, channel)
        elif end - start == 14:
            properties = EMPTY_PROPERTIES
        else:
            raise _error(ReplyCode.FRAME_ERROR, "bytes after an empty property list", channel)
        if body_size == 0:
            del self._pending[channel]
            return ServerContent(channel, pending.method, properties, b"")
        pending.properties = properties
        pending.remaining = body_size
        return None

    def _body(self, channel: int, start: int, end: int) -> ServerContent | None:
        pending = self._pending.get(channel)
        if pending is None or pending.properties is None:
            raise _error(ReplyCode.UNEXPECTED_FRAME,
                         f"unexpected content body on channel {channel}", channel)
        pending.remaining -= end - start
        pending.chunks.append(bytes(self._buf[start:end]))
        if pending.remaining > 0:
            return None
        if pending.remaining < 0:
            raise _error(ReplyCode.FRAME_ERROR, "content body longer than announced", channel)
        del self._pending[channel]
        chunks = pending.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return ServerContent(channel, pending.method, pending.properties, body)

    # -- encoding (client -> server) ----------------------------------------------------

    def encode_method(self, channel: int, method: base.Frame) -> bytes:
        """One method frame (no content). ``ValueError`` if a field cannot be encoded."""
        try:
            payload = _U32.pack(method.index) + marshal(method)
        except (TypeError, ValueError, AttributeError, OverflowError, struct.error) as exc:
            raise ValueError(f"cannot encode {method.name}: {exc}") from exc
        return _FRAME_HEADER.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"

    def encode_publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: commands.Basic.Properties | bytes = EMPTY_PROPERTIES,
        *,
        mandatory: bool = False,
    ) -> bytes:
        """basic.publish, its content header and body frames split at ``frame_max - 8``."""
        try:
            ex, rk = exchange.encode(), routing_key.encode()
            method = b"%s\x00\x3c\x00\x28\x00\x00%c%s%c%s%c\xce" % (
                _FRAME_HEADER.pack(FRAME_METHOD, channel, 9 + len(ex) + len(rk)),
                len(ex), ex, len(rk), rk, 1 if mandatory else 0,
            )
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"cannot encode Basic.Publish: {exc}") from exc
        if not isinstance(properties, bytes):
            properties = encode_properties(properties)
        size = len(body)
        parts: list[bytes | memoryview] = [
            method,
            _CONTENT_HEADER.pack(FRAME_HEADER, channel, 12 + len(properties), CLASS_BASIC, 0,
                                 size),
            properties, b"\xce",
        ]
        limit = self.frame_max - 8
        view = memoryview(body)
        for offset in range(0, size, limit):
            piece = view[offset : offset + limit]
            parts += (_FRAME_HEADER.pack(FRAME_BODY, channel, len(piece)), piece, b"\xce")
        return b"".join(parts)

    def encode_heartbeat(self) -> bytes:
        return _HEARTBEAT_BYTES


# -- building and marshalling methods without pamqp's validate ---------------------------

_DEFAULTS: dict[type[base.Frame], dict[str, Any]] = {}


def build(method_class: type[M], **values: Any) -> M:
    """A method with its spec defaults and ``values``, built without pamqp's ``validate``
    (which refuses names RabbitMQ accepts); unknown fields are a ``TypeError``."""
    defaults = _DEFAULTS.get(method_class)
    if defaults is None:
        signature = inspect.signature(method_class.__init__)
        defaults = {
            name: parameter.default for name, parameter in signature.parameters.items()
            if name != "self" and parameter.default is not inspect.Parameter.empty
        }
        _DEFAULTS[method_class] = defaults
    method = method_class.__new__(method_class)
    for name in method_class.attributes():
        value = values.pop(name) if name in values else defaults.get(name)
        if value is None and method_class.amqp_type(name) == "table":
            value = {}
        setattr(method, name, value)
    if values:
        raise TypeError(f"{method_class.name} has no fields {sorted(values)}")
    return method


def marshal(method: base.Frame) -> bytes:
    """pamqp's ``Frame.marshal`` without its ``validate`` (same bytes for valid methods)."""
    output: list[bytes] = []
    bits = offset = 0
    in_bits = False
    for name in method.attributes():
        kind = method.amqp_type(name)
        value = getattr(method, name, 0)
        if kind == "bit":
            if not in_bits:
                bits, offset, in_bits = 0, 0, True
            bits = encode.bit(value, bits, offset)
            offset += 1
            if offset == 8:
                output.append(encode.octet(bits))
                in_bits = False
            continue
        if in_bits:
            output.append(encode.octet(bits))
            in_bits = False
        output.append(encode.by_type(value, kind))
    if in_bits:
        output.append(encode.octet(bits))
    return b"".join(output)


# -- the three content methods a server sends ---------------------------------------------


def _shortstr(buf: bytearray, p: int, end: int) -> tuple[str, int]:
    q = p + 1 + buf[p]
    if q > end:
        raise IndexError
    return buf[p + 1 : q].decode(), q


def _decode_deliver(buf: bytearray, p: int, end: int) -> commands.Basic.Deliver:
    """consumer-tag:shortstr delivery-tag:longlong redelivered:bit exchange routing-key."""
    method = Basic.Deliver.__new__(Basic.Deliver)
    method.consumer_tag, p = _shortstr(buf, p, end)
    if p + 9 > end:
        raise IndexError
    method.delivery_tag = _U64.unpack_from(buf, p)[0]
    method.redelivered = bool(buf[p + 8] & 1)
    method.exchange, p = _shortstr(buf, p + 9, end)
    method.routing_key, p = _shortstr(buf, p, end)
    if p != end:
        raise IndexError
    return method


def _decode_get_ok(buf: bytearray, p: int, end: int) -> commands.Basic.GetOk:
    """delivery-tag redelivered exchange routing-key message-count:long."""
    method = Basic.GetOk.__new__(Basic.GetOk)
    if p + 9 > end:
        raise IndexError
    method.delivery_tag = _U64.unpack_from(buf, p)[0]
    method.redelivered = bool(buf[p + 8] & 1)
    method.exchange, p = _shortstr(buf, p + 9, end)
    method.routing_key, p = _shortstr(buf, p, end)
    if p + 4 != end:
        raise IndexError
    method.message_count = _U32.unpack_from(buf, p)[0]
    return method


def _decode_return(buf: bytearray, p: int, end: int) -> commands.Basic.Return:
    """reply-code:short reply-text:shortstr exchange routing-key."""
    method = Basic.Return.__new__(Basic.Return)
    if p + 2 > end:
        raise IndexError
    method.reply_code = _U16.unpack_from(buf, p)[0]
    method.reply_text, p = _shortstr(buf, p + 2, end)
    method.exchange, p = _shortstr(buf, p, end)
    method.routing_key, p = _shortstr(buf, p, end)
    if p != end:
        raise IndexError
    return method
