"""Sans-IO AMQP 0-9-1 codec, server side: bytes in -> events out, methods in -> bytes out.

Theory of operation
-------------------
``receive_data`` appends to one ``bytearray``; ``next_event`` walks it with an offset and
compacts it (one ``del buf[:pos]``) only when it runs out of whole frames, so a large
message arriving in many small reads costs linear time. The connection opens with the
8-byte ``PROTOCOL_HEADER`` (checked byte by byte as it arrives); after that every frame is

    type:octet  channel:short  size:long  payload:size octets  frame-end:0xCE

A frame is refused from its 7-byte header when ``size + 8 > frame_max`` (spec 4.2.3:
"a peer MUST NOT send frames larger than the agreed-upon size"), before any payload is
buffered, so the input buffer holds at most one frame plus the last read.

Content (spec 4.2.6) is assembled per channel: basic.publish, then one header frame, then
body frames totalling the header's body-size; the codec yields one ``Content`` per message,
never a bare basic.publish ``Method``. Any other frame on a channel whose content is
incomplete is 505 UNEXPECTED_FRAME, as is a header or body frame with no publish pending;
frames of other channels may interleave. A header announcing more than ``max_message_size``
yields ``OversizeContent`` and its body frames are then counted and dropped, not kept.
Every violation raises ``ProtocolError`` with the reply code for connection.close; the
codec then stays failed and raises the same error again.

Where this module does not use pamqp, and why
---------------------------------------------
pamqp supplies the spec: the method classes, their field names and types, and the encoding
of everything that is not on the per-message path. Three things are written here instead:

- Speed. pamqp is generic: it slices ``bytes`` field by field, looks each field's type up
  by name and runs regular expressions on every marshal. That costs ~7-14 us to unmarshal
  a basic.publish and ~6-11 us to marshal a basic.deliver (about 1 us each here), several
  times the rest of the per-message work. So basic.publish, content headers and body
  frames are decoded here, and basic.deliver, basic.get-ok, basic.return, content headers
  and body frames encoded.
- Linear time. pamqp's field-table and field-array decoders slice off the rest of the
  buffer for every entry, so their cost is quadratic in the table size: a 128 KiB
  connection.start-ok whose client-properties table holds an array of 130,000 empty
  values took pamqp ~3.5 s of CPU (0.05 s here), stalling every connection on the same
  event loop, before authentication. Field tables, and with them all method arguments,
  are therefore decoded here with offsets into the buffer, driven by pamqp's own field
  lists; scalar conversions whose exact results matter (timestamps, decimals) still call
  pamqp's decoders.
- Strictness. A field that runs past the end of its frame, or bytes left after the last
  field, is 501 FRAME_ERROR, as in RabbitMQ; pamqp silently truncates or ignores them.

The tests compare every encoder byte for byte with pamqp's ``frame.marshal`` and every
decoder with pamqp's ``frame.unmarshal``.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any, Final, cast

from pamqp import base, commands, decode, encode

from .frames import (
    NEED_DATA,
    PROTOCOL_HEADER,
    BadProtocolHeader,
    Content,
    Event,
    Heartbeat,
    Method,
    NeedData,
    OversizeContent,
    ProtocolError,
    ProtocolHeaderReceived,
    ReplyCode,
)

Basic = commands.Basic
FRAME_ERROR, SYNTAX_ERROR, COMMAND_INVALID = (
    ReplyCode.FRAME_ERROR, ReplyCode.SYNTAX_ERROR, ReplyCode.COMMAND_INVALID
)
CHANNEL_ERROR, UNEXPECTED_FRAME = ReplyCode.CHANNEL_ERROR, ReplyCode.UNEXPECTED_FRAME

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_OVERHEAD: Final = 8  # 7-byte frame header + frame-end octet
CLASS_BASIC: Final = 60
MAX_TABLE_DEPTH: Final = 64  # nesting of field tables and arrays

_FRAME_HEADER = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">BHIHHQ")  # frame header + class, weight, body size
_HEADER_FIELDS = struct.Struct(">HHQH")  # class, weight, body size, property flags
_END_AND_BODY = struct.Struct(">BBHI")  # frame-end of the previous frame + body frame header
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_QB = struct.Struct(">QB")
_END = b"\xce"
_HEARTBEAT_BYTES = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_HEARTBEAT = Heartbeat()
_GREETING = ProtocolHeaderReceived()

_PUBLISH_INDEX: Final = Basic.Publish.index
_PUBLISH_IDS = (CLASS_BASIC, Basic.Publish.frame_id)
_SERVER_CONTENT = (Basic.Deliver, Basic.GetOk, Basic.Return)  # from a client: 503

# Field kinds, from pamqp's type names; fixed-size ones decode with a struct (pamqp's
# signedness: "longlong" is signed, the others unsigned).
_BIT, _SHORTSTR, _LONGSTR, _TABLE, _TIMESTAMP, _OCTET, _SHORT, _LONG, _LONGLONG = range(9)
_KINDS: Final = {
    "bit": _BIT, "shortstr": _SHORTSTR, "longstr": _LONGSTR, "table": _TABLE,
    "timestamp": _TIMESTAMP, "octet": _OCTET, "short": _SHORT, "long": _LONG,
    "longlong": _LONGLONG,
}
_FIXED: Final = {
    _OCTET: struct.Struct("B"), _SHORT: _U16, _LONG: _U32, _LONGLONG: struct.Struct(">q"),
}
# Field-table value types (RabbitMQ's errata table, as pamqp decodes them).
_TABLE_FIXED: Final = {
    ord(code): struct.Struct(fmt)
    for code, fmt in (
        ("t", "?"), ("b", "b"), ("B", "B"), ("s", ">h"), ("u", ">H"), ("I", ">i"),
        ("i", ">I"), ("l", ">q"), ("L", ">q"), ("f", ">f"), ("d", ">d"),
    )
}
_METHODS: Final = {
    index: (cls, tuple((name, _KINDS[cls.amqp_type(name)]) for name in cls.attributes()))
    for index, cls in cast(dict[int, type[base.Frame]], commands.INDEX_MAPPING).items()
}
# Basic.Properties in wire order: (flag bit, attribute, kind). Spec 4.2.6.1.
_PROPERTY_FIELDS: Final = tuple(
    (Basic.Properties.flags[name], name, _KINDS[Basic.Properties.amqp_type(name)])
    for name in Basic.Properties.attributes()
)
_KNOWN_FLAGS: Final = sum(flag for flag, _, _ in _PROPERTY_FIELDS)
_property_values = operator.attrgetter(*(name for _, name, _ in _PROPERTY_FIELDS))
_NO_PROPERTIES: Final = _property_values(Basic.Properties())
# Shared by every content header with no properties (most of them); read it, never mutate it.
EMPTY_PROPERTIES: Final = Basic.Properties()


def _error(code: int, text: str, channel: int, ids: tuple[int, int] = (0, 0)) -> ProtocolError:
    return ProtocolError(code, text, channel, ids[0], ids[1])


class _Pending:
    """A basic.publish on one channel, waiting for its content header and body frames.

    ``remaining`` is -1 until the header arrives, then the body bytes still expected;
    ``properties`` stays None for an oversize message, whose body is dropped, not kept.
    """

    __slots__ = ("method", "properties", "raw", "remaining", "chunks")

    def __init__(self, method: commands.Basic.Publish) -> None:
        self.method = method
        self.properties: commands.Basic.Properties | None = None
        self.raw = b"\x00\x00"
        self.remaining = -1
        self.chunks: list[bytearray] | None = None


class AMQPCodec:
    """One server-side AMQP 0-9-1 connection's framing, with no I/O."""

    def __init__(
        self,
        *,
        frame_max: int = 131072,
        max_message_size: int = 128 * 1024 * 1024,
        max_buffer: int | None = None,
    ) -> None:
        self.frame_max = frame_max
        self.max_message_size = max_message_size
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._pos = 0
        self._greeted = False
        self._pending: dict[int, _Pending] = {}
        self._failed: ProtocolError | None = None
        # the last property list decoded, by its bytes: a publisher repeats the same one,
        # and without headers the decoded object holds only immutable values to share
        self._last_raw = b""
        self._last_properties: commands.Basic.Properties | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (partial content not counted)."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray) -> None:
        """Append bytes read from the socket; an empty ``data`` is ignored.

        Raises ``ProtocolError`` (501) if ``max_buffer`` is set and would be exceeded, which
        only happens if the caller stops draining ``next_event``.
        """
        if self._failed is not None or not data:
            return
        if self.max_buffer is not None and self.buffered + len(data) > self.max_buffer:
            self._failed = _error(FRAME_ERROR, "input buffer limit exceeded", 0)
            raise self._failed
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """The next complete event, or ``NEED_DATA``; raises ``ProtocolError``."""
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        pos = self._pos
        limit = self.frame_max - FRAME_OVERHEAD
        try:
            if not self._greeted:
                return self._greeting()
            while len(buf) - pos >= 7:
                frame_type, channel, size = _FRAME_HEADER.unpack_from(buf, pos)
                if size > limit:
                    text = f"frame size {size + 8} exceeds frame_max {self.frame_max}"
                    raise _error(FRAME_ERROR, text, channel)
                start = pos + 7
                end = start + size
                if end >= len(buf):
                    break
                if buf[end] != FRAME_END:
                    raise _error(FRAME_ERROR, f"bad frame end {buf[end]:#04x}", channel)
                self._pos = pos = end + 1
                event: Event | None
                if frame_type == FRAME_BODY:
                    event = self._body_frame(channel, start, end)
                elif frame_type == FRAME_METHOD:
                    event = self._method_frame(channel, start, end)
                elif frame_type == FRAME_HEADER:
                    event = self._header_frame(channel, start, end)
                elif frame_type == FRAME_HEARTBEAT:
                    if channel != 0 or size != 0:
                        raise _error(FRAME_ERROR, "heartbeat not empty or off channel 0", channel)
                    return _HEARTBEAT
                else:
                    raise _error(FRAME_ERROR, f"unknown frame type {frame_type}", channel)
                if event is not None:
                    return event
        except ProtocolError as exc:
            self._failed = exc
            raise
        if pos:
            del buf[:pos]
            self._pos = 0
        return NEED_DATA

    def _greeting(self) -> ProtocolHeaderReceived | NeedData:
        """Spec 4.2.2: the client opens with the literal ``PROTOCOL_HEADER``."""
        head = bytes(self._buf[:8])
        if not PROTOCOL_HEADER.startswith(head):
            raise BadProtocolHeader(head)
        if len(head) < 8:
            return NEED_DATA
        self._greeted = True
        self._pos = 8
        return _GREETING

    # -- frames -------------------------------------------------------------------------

    def _method_frame(self, channel: int, start: int, end: int) -> Method | None:
        buf = self._buf
        if end - start < 4:
            raise _error(FRAME_ERROR, "method frame too short", channel)
        index = _U32.unpack_from(buf, start)[0]
        if channel in self._pending:
            text = f"expected a content frame on channel {channel}, got a method frame"
            raise _error(UNEXPECTED_FRAME, text, channel, (index >> 16, index & 0xFFFF))
        if index == _PUBLISH_INDEX:
            if channel == 0:
                raise _error(CHANNEL_ERROR, "content on channel 0", 0, _PUBLISH_IDS)
            self._pending[channel] = _Pending(_decode_publish(buf, start + 4, end, channel))
            return None
        return Method(channel, _decode_method(index, buf, start + 4, end, channel))

    def _header_frame(self, channel: int, start: int, end: int) -> Event | None:
        pending = self._pending.get(channel)
        if pending is None or pending.remaining >= 0:
            text = f"unexpected content header on channel {channel}"
            raise _error(UNEXPECTED_FRAME, text, channel, _PUBLISH_IDS if pending else (0, 0))
        if end - start < 14:
            raise _error(FRAME_ERROR, "content header too short", channel)
        class_id, weight, body_size, flags = _HEADER_FIELDS.unpack_from(self._buf, start)
        if class_id != CLASS_BASIC or weight != 0:
            text = f"expected content header for class 60, got class {class_id} weight {weight}"
            raise _error(UNEXPECTED_FRAME, text, channel, _PUBLISH_IDS)
        if body_size > self.max_message_size:
            pending.remaining = body_size
            return OversizeContent(channel, pending.method, body_size)
        if flags:
            raw = bytes(self._buf[start + 12 : end])
            if raw == self._last_raw and self._last_properties is not None:
                properties = self._last_properties
            else:
                properties = _decode_properties(flags, self._buf, start + 14, end, channel)
                self._last_raw = raw
                self._last_properties = properties if properties.headers is None else None
        elif end - start == 14:
            properties = EMPTY_PROPERTIES
            raw = b"\x00\x00"
        else:
            raise _error(FRAME_ERROR, "bytes after an empty property list", channel)
        if body_size == 0:
            del self._pending[channel]
            return Content(channel, pending.method, properties, b"", raw)
        pending.properties = properties
        pending.raw = raw
        pending.remaining = body_size
        return None

    def _body_frame(self, channel: int, start: int, end: int) -> Content | None:
        pending = self._pending.get(channel)
        if pending is None or pending.remaining < 0:
            text = f"unexpected content body on channel {channel}"
            raise _error(UNEXPECTED_FRAME, text, channel, _PUBLISH_IDS if pending else (0, 0))
        remaining = pending.remaining - (end - start)
        properties = pending.properties
        if remaining > 0:
            pending.remaining = remaining
            if properties is not None:
                if pending.chunks is None:
                    pending.chunks = []
                pending.chunks.append(self._buf[start:end])
            return None
        if remaining < 0:
            text = "content body longer than its header announced"
            raise _error(FRAME_ERROR, text, channel, _PUBLISH_IDS)
        del self._pending[channel]
        if properties is None:
            return None  # the end of an oversize message
        chunks = pending.chunks
        if chunks is not None:
            chunks.append(self._buf[start:end])
            body = b"".join(chunks)
        elif end - start < 4096:
            body = bytes(self._buf[start:end])
        else:  # one copy instead of two
            with memoryview(self._buf) as view:
                body = view[start:end].tobytes()
        return Content(channel, pending.method, properties, body, pending.raw)

    # -- encoding (server -> client) ------------------------------------------------------

    def encode_method(self, channel: int, method: base.Frame) -> bytes:
        """One method frame. Raises ``ValueError`` if a field cannot be encoded."""
        return _encode_method(channel, method)

    def encode_content(
        self,
        channel: int,
        method: base.Frame,
        properties: commands.Basic.Properties | bytes,
        body: bytes,
    ) -> bytes:
        """Method, content header and body frames (split at ``frame_max - 8``).

        ``properties`` may be the output of ``encode_properties``, so one delivery can
        reuse a single property encoding across all its consumers.
        """
        method_frame = _encode_method(channel, method)
        if not isinstance(properties, bytes):
            properties = encode_properties(properties)
        return self._content(channel, method_frame, properties, body)

    def encode_delivery(
        self,
        channel: int,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
    ) -> bytes:
        """basic.deliver with its content, from plain values (no method object to build:
        this is the per-delivery path). ``properties`` is an ``encode_properties`` block."""
        try:
            ctag, ex, rk = consumer_tag.encode(), exchange.encode(), routing_key.encode()
            method_frame = b"%s\x00\x3c\x00\x3c%c%s%s%c%s%c%s\xce" % (
                _FRAME_HEADER.pack(FRAME_METHOD, channel, 16 + len(ctag) + len(ex) + len(rk)),
                len(ctag), ctag, _QB.pack(delivery_tag, redelivered), len(ex), ex, len(rk), rk,
            )
        except (ValueError, OverflowError, struct.error) as exc:
            raise ValueError(f"cannot encode Basic.Deliver: {exc}") from exc
        return self._content(channel, method_frame, properties, body)

    def _content(self, channel: int, method_frame: bytes, properties: bytes,
                 body: bytes) -> bytes:
        size = len(body)
        header = _CONTENT_HEADER.pack(
            FRAME_HEADER, channel, 12 + len(properties), CLASS_BASIC, 0, size
        )
        limit = self.frame_max - FRAME_OVERHEAD
        if size <= limit:
            if not size:
                return b"".join((method_frame, header, properties, _END))
            body_header = _END_AND_BODY.pack(FRAME_END, FRAME_BODY, channel, size)
            return b"".join((method_frame, header, properties, body_header, body, _END))
        parts: list[bytes | memoryview] = [method_frame, header, properties]
        view = memoryview(body)
        for offset in range(0, size, limit):
            piece = view[offset : offset + limit]
            parts += (_END_AND_BODY.pack(FRAME_END, FRAME_BODY, channel, len(piece)), piece)
        parts.append(_END)
        return b"".join(parts)

    def encode_heartbeat(self) -> bytes:
        """A heartbeat frame."""
        return _HEARTBEAT_BYTES


# -- decoders -----------------------------------------------------------------------------
# They read ``buf`` in place between offsets. Reading ``buf[p]`` at ``p == end`` is safe (it
# is the frame-end octet, or inside the enclosing table) and the bound check that follows
# catches it. Overruns raise IndexError or struct.error (-> 501), bad values ValueError,
# OverflowError or OSError (-> 502).


def _decode_publish(buf: bytearray, p: int, end: int, channel: int) -> commands.Basic.Publish:
    """basic.publish: ticket:short exchange:shortstr routing-key:shortstr bits:octet."""
    try:
        q = p + 3 + buf[p + 2] if end - p >= 5 else end
        r = q + 1 + buf[q]
        if r + 1 != end:
            raise IndexError
        exchange = buf[p + 3 : q].decode()
        routing_key = buf[q + 1 : r].decode()
    except IndexError:
        raise _error(FRAME_ERROR, "malformed basic.publish", channel, _PUBLISH_IDS) from None
    except ValueError as exc:
        raise _error(SYNTAX_ERROR, f"basic.publish: {exc}", channel, _PUBLISH_IDS) from None
    bits = buf[r]
    method = Basic.Publish.__new__(Basic.Publish)
    method.ticket = _U16.unpack_from(buf, p)[0]
    method.exchange = exchange
    method.routing_key = routing_key
    method.mandatory = bool(bits & 1)
    method.immediate = bool(bits & 2)
    return method


def _decode_method(index: int, buf: bytearray, p: int, end: int, channel: int) -> base.Frame:
    """Any other method, as the pamqp class ``frame.unmarshal`` would build."""
    ids = (index >> 16, index & 0xFFFF)
    spec = _METHODS.get(index)
    if spec is None:
        raise _error(COMMAND_INVALID, f"unknown method {ids[0]}.{ids[1]}", channel, ids)
    method_class, fields = spec
    if method_class in _SERVER_CONTENT:
        raise _error(COMMAND_INVALID, f"{method_class.name} is server-only", channel, ids)
    method = method_class.__new__(method_class)
    bit = 8
    bits = 0
    try:
        for name, kind in fields:
            if kind == _BIT:  # consecutive bits share an octet, low bit first
                if bit == 8:
                    if p >= end:
                        raise IndexError
                    bits = buf[p]
                    p += 1
                    bit = 0
                value: Any = bool(bits >> bit & 1)
                bit += 1
            else:
                bit = 8
                value, p = _field(kind, buf, p, end)
            setattr(method, name, value)
        if p != end:
            raise IndexError
    except (IndexError, struct.error):
        raise _error(FRAME_ERROR, f"malformed {method_class.name}", channel, ids) from None
    except (ValueError, OverflowError, OSError) as exc:
        raise _error(SYNTAX_ERROR, f"{method_class.name}: {exc}", channel, ids) from None
    return method


def _decode_properties(
    flags: int, buf: bytearray, p: int, end: int, channel: int
) -> commands.Basic.Properties:
    """The property list of a content header (spec 4.2.6.1)."""
    if flags & ~_KNOWN_FLAGS:
        raise _error(SYNTAX_ERROR, f"unknown property flags {flags:#06x}", channel)
    properties = Basic.Properties()
    try:
        for flag, name, kind in _PROPERTY_FIELDS:
            if flags & flag:
                value, p = _field(kind, buf, p, end)
                setattr(properties, name, value)
                flags ^= flag
                if not flags:
                    break
    except (IndexError, struct.error):
        raise _error(FRAME_ERROR, "malformed content header", channel) from None
    except (ValueError, OverflowError, OSError) as exc:
        raise _error(SYNTAX_ERROR, f"content header: {exc}", channel) from None
    if p != end:
        raise _error(FRAME_ERROR, "bytes after the property list", channel)
    return properties


def _field(kind: int, buf: bytearray, p: int, end: int) -> tuple[Any, int]:
    """One method argument or property (any kind but bit) and the offset after it."""
    if kind == _SHORTSTR:
        q = p + 1 + buf[p]
        if q > end:
            raise IndexError
        return buf[p + 1 : q].decode(), q
    if kind == _TABLE:
        return _table(buf, p, end, 0)
    if kind == _LONGSTR:
        q = p + 4 + _U32.unpack_from(buf, p)[0] if p + 4 <= end else end + 1
        if q > end:
            raise IndexError
        raw = bytes(buf[p + 4 : q])
        try:
            return raw.decode(), q
        except UnicodeDecodeError:  # pamqp's rule: a long string is text if it can be
            return raw, q
    if kind == _TIMESTAMP:
        q = p + 8
        if q > end:
            raise IndexError
        return decode.timestamp(bytes(buf[p:q]))[1], q
    fixed = _FIXED[kind]
    q = p + fixed.size
    if q > end:
        raise IndexError
    return fixed.unpack_from(buf, p)[0], q


def _table(buf: bytearray, p: int, end: int, depth: int) -> tuple[dict[str, Any], int]:
    """A field table: long size, then (shortstr name, typed value) pairs."""
    if depth > MAX_TABLE_DEPTH:
        raise ValueError("field tables nested too deep")
    stop = p + 4 + _U32.unpack_from(buf, p)[0] if p + 4 <= end else end + 1
    if stop > end:
        raise IndexError
    p += 4
    table: dict[str, Any] = {}
    while p < stop:
        q = p + 1 + buf[p]
        if q > stop:
            raise IndexError
        table[buf[p + 1 : q].decode()], p = _table_value(buf, q, stop, depth)
    return table, stop


def _table_value(buf: bytearray, p: int, end: int, depth: int) -> tuple[Any, int]:
    """One typed field value (type octet, then the value)."""
    if p >= end:
        raise IndexError
    code = buf[p]
    p += 1
    fixed = _TABLE_FIXED.get(code)
    if fixed is not None:
        q = p + fixed.size
        if q > end:
            raise IndexError
        return fixed.unpack_from(buf, p)[0], q
    if code == 0x53:  # S
        return _field(_LONGSTR, buf, p, end)
    if code == 0x46:  # F
        return _table(buf, p, end, depth + 1)
    if code == 0x41:  # A
        if depth >= MAX_TABLE_DEPTH:
            raise ValueError("field arrays nested too deep")
        stop = p + 4 + _U32.unpack_from(buf, p)[0] if p + 4 <= end else end + 1
        if stop > end:
            raise IndexError
        p += 4
        items = []
        while p < stop:
            value, p = _table_value(buf, p, stop, depth + 1)
            items.append(value)
        return items, stop
    if code == 0x54:  # T
        return _field(_TIMESTAMP, buf, p, end)
    if code == 0x56 or code == 0:  # V, and NUL seen in the wild
        return None, p
    if code == 0x44:  # D
        if p + 5 > end:
            raise IndexError
        return decode.decimal(bytes(buf[p : p + 5]))[1], p + 5
    if code == 0x78:  # x
        stop = p + 4 + _U32.unpack_from(buf, p)[0] if p + 4 <= end else end + 1
        if stop > end:
            raise IndexError
        return bytearray(buf[p + 4 : stop]), stop
    raise ValueError(f"unknown field type {bytes((code,))!r}")


# -- encoders -----------------------------------------------------------------------------
# Whole method frames for the three content methods the server sends with every message
# (and queue.declare-ok); each shortstr is a length octet ("%c" refuses > 255 with
# OverflowError) and its bytes.


def _deliver(channel: int, m: Any) -> bytes:
    ctag, ex, rk = m.consumer_tag.encode(), m.exchange.encode(), m.routing_key.encode()
    return b"%s\x00\x3c\x00\x3c%c%s%s%c%s%c%s\xce" % (
        _FRAME_HEADER.pack(FRAME_METHOD, channel, 16 + len(ctag) + len(ex) + len(rk)),
        len(ctag), ctag, _QB.pack(m.delivery_tag, m.redelivered), len(ex), ex, len(rk), rk,
    )


def _get_ok(channel: int, m: Any) -> bytes:
    ex, rk = m.exchange.encode(), m.routing_key.encode()
    return b"%s\x00\x3c\x00\x47%s%c%s%c%s%s\xce" % (
        _FRAME_HEADER.pack(FRAME_METHOD, channel, 19 + len(ex) + len(rk)),
        _QB.pack(m.delivery_tag, m.redelivered), len(ex), ex, len(rk), rk,
        _U32.pack(m.message_count),
    )


def _return(channel: int, m: Any) -> bytes:
    text, ex, rk = m.reply_text.encode(), m.exchange.encode(), m.routing_key.encode()
    return b"%s\x00\x3c\x00\x32%s%c%s%c%s%c%s\xce" % (
        _FRAME_HEADER.pack(FRAME_METHOD, channel, 9 + len(text) + len(ex) + len(rk)),
        _U16.pack(m.reply_code), len(text), text, len(ex), ex, len(rk), rk,
    )


def _declare_ok(channel: int, m: Any) -> bytes:
    # by hand, as the three above: pamqp's marshal refuses queue names outside the spec's
    # character class, which RabbitMQ (and we) accept (see frames.reply)
    queue = m.queue.encode()
    return b"%s\x00\x32\x00\x0b%c%s%s\xce" % (
        _FRAME_HEADER.pack(FRAME_METHOD, channel, 13 + len(queue)), len(queue), queue,
        struct.pack(">II", m.message_count, m.consumer_count),
    )


_FAST_ENCODERS: Final[dict[type[base.Frame], Callable[[int, Any], bytes]]] = {
    commands.Queue.DeclareOk: _declare_ok,
    Basic.Deliver: _deliver,
    Basic.GetOk: _get_ok,
    Basic.Return: _return,
}


def _encode_method(channel: int, method: base.Frame) -> bytes:
    """A whole method frame; ``ValueError`` if a field cannot be encoded."""
    fast = _FAST_ENCODERS.get(type(method))
    try:
        if fast is not None:
            return fast(channel, method)
        payload = _U32.pack(method.index) + method.marshal()
    except (TypeError, ValueError, AttributeError, OverflowError, struct.error) as exc:
        raise ValueError(f"cannot encode {method.name}: {exc}") from exc
    return _FRAME_HEADER.pack(FRAME_METHOD, channel, len(payload)) + payload + _END


_I64 = struct.Struct(">q")


def _headers_table(value: dict[str, Any]) -> bytes:
    """pamqp's field table, except for `x-death`: RabbitMQ writes each entry's `count` as a
    signed 64-bit integer ('l', which clients such as Java's read as a long; pamqp would
    pick the smallest type) and its fields in its own order (count, reason, queue, time,
    exchange, routing-keys, original-expiration), which the core keeps."""
    deaths = value.get("x-death") if isinstance(value, dict) else None
    if not isinstance(deaths, list) or not deaths:
        return encode.field_table(value)
    parts = []
    for key, item in sorted(value.items()):
        parts.append(encode.short_string(key.encode("utf-8")[:128].decode("utf-8", "ignore")))
        if key != "x-death":
            parts.append(encode.encode_table_value(item))
            continue
        entries = []
        for death in item:
            if not isinstance(death, dict):
                entries.append(encode.encode_table_value(death))
                continue
            fields = []
            for name, field in death.items():
                fields.append(encode.short_string(name))
                if name == "count" and isinstance(field, int) and not isinstance(field, bool):
                    fields.append(b"l" + _I64.pack(field))
                else:
                    fields.append(encode.encode_table_value(field))
            table = b"".join(fields)
            entries.append(b"F" + _U32.pack(len(table)) + table)
        array = b"".join(entries)
        parts.append(b"A" + _U32.pack(len(array)) + array)
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def encode_properties(properties: commands.Basic.Properties) -> bytes:
    """Property flags and property list of a content header; cacheable per message.

    Byte-identical to pamqp's ``Basic.Properties.marshal`` (a property is present unless it
    is ``None`` or ``""``). Raises ``ValueError`` if a property cannot be encoded.
    """
    values = _property_values(properties)
    if values == _NO_PROPERTIES:
        return b"\x00\x00"
    flags = 0
    parts = []
    try:
        for (flag, _, kind), value in zip(_PROPERTY_FIELDS, values, strict=True):
            if value is None or value == "":
                continue
            flags |= flag
            if kind == _SHORTSTR:
                raw = value.encode()
                parts.append(b"%c%s" % (len(raw), raw))
            elif kind == _OCTET:
                parts.append(b"%c" % value)
            elif kind == _TABLE:
                parts.append(_headers_table(value))
            else:
                parts.append(encode.timestamp(value))
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ValueError(f"cannot encode properties: {exc}") from exc
    return _U16.pack(flags) + b"".join(parts)
