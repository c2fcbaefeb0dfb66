"""The MQTT wire's building blocks: integers, UTF-8 strings, binary data and MQTT 5
property lists, read from whole packets and written into them (spec 1.5 and 2.2.2).

`Reader` raises `ProtocolError` (malformed, 0x81) on a packet shorter than its fields;
strings are checked as MQTT requires. Property lists are checked against the table of which
property may appear in which packet, once each unless repeatable (spec table 2-4).
"""

from __future__ import annotations

import struct
from typing import Any, Final

from protocols.mqtt.frames import NO_PROPERTIES, PacketType, Properties, ProtocolError, ReasonCode

MAX_REMAINING: Final = 268_435_455  # four bytes of variable byte integer
WILL: Final = 0  # pseudo packet type: the will properties of a CONNECT

# property id -> (field, kind, packet types it may appear in) -- spec table 2-4
_PUB = frozenset({PacketType.PUBLISH, WILL})
_ACKS = frozenset({PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP,
                   PacketType.SUBACK, PacketType.UNSUBACK, PacketType.DISCONNECT,
                   PacketType.AUTH, PacketType.CONNACK})
_C, _CA = PacketType.CONNECT, PacketType.CONNACK
PROPERTY_TABLE: Final[dict[int, tuple[str, str, frozenset[int]]]] = {
    0x01: ("payload_format_indicator", "byte", _PUB),
    0x02: ("message_expiry_interval", "int4", _PUB),
    0x03: ("content_type", "utf8", _PUB),
    0x08: ("response_topic", "utf8", _PUB),
    0x09: ("correlation_data", "bin", _PUB),
    0x0B: ("subscription_identifiers", "varint",
           frozenset({PacketType.PUBLISH, PacketType.SUBSCRIBE})),
    0x11: ("session_expiry_interval", "int4", frozenset({_C, _CA, PacketType.DISCONNECT})),
    0x12: ("assigned_client_identifier", "utf8", frozenset({_CA})),
    0x13: ("server_keep_alive", "int2", frozenset({_CA})),
    0x15: ("authentication_method", "utf8", frozenset({_C, _CA, PacketType.AUTH})),
    0x16: ("authentication_data", "bin", frozenset({_C, _CA, PacketType.AUTH})),
    0x17: ("request_problem_information", "byte", frozenset({_C})),
    0x18: ("will_delay_interval", "int4", frozenset({WILL})),
    0x19: ("request_response_information", "byte", frozenset({_C})),
    0x1A: ("response_information", "utf8", frozenset({_CA})),
    0x1C: ("server_reference", "utf8", frozenset({_CA, PacketType.DISCONNECT})),
    0x1F: ("reason_string", "utf8", _ACKS),
    0x21: ("receive_maximum", "int2", frozenset({_C, _CA})),
    0x22: ("topic_alias_maximum", "int2", frozenset({_C, _CA})),
    0x23: ("topic_alias", "int2", frozenset({PacketType.PUBLISH})),
    0x24: ("maximum_qos", "byte", frozenset({_CA})),
    0x25: ("retain_available", "byte", frozenset({_CA})),
    0x26: ("user_properties", "pair", frozenset(PacketType) | {WILL}),
    0x27: ("maximum_packet_size", "int4", frozenset({_C, _CA})),
    0x28: ("wildcard_subscription_available", "byte", frozenset({_CA})),
    0x29: ("subscription_identifier_available", "byte", frozenset({_CA})),
    0x2A: ("shared_subscription_available", "byte", frozenset({_CA})),
}
_PROPERTY_IDS: Final = {name: (pid, kind) for pid, (name, kind, _) in PROPERTY_TABLE.items()}
# byte properties whose only values are 0 and 1
_BOOLEAN_BYTES: Final = frozenset({
    "payload_format_indicator", "request_problem_information",
    "request_response_information", "retain_available", "wildcard_subscription_available",
    "subscription_identifier_available", "shared_subscription_available"})


def malformed(text: str) -> ProtocolError:
    return ProtocolError(ReasonCode.MALFORMED_PACKET, text)


# -- reading -------------------------------------------------------------------------------

class Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise malformed("packet shorter than its fields")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise malformed("packet shorter than its fields")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int2(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def int4(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def varint(self) -> int:
        value, shift = 0, 0
        for _ in range(4):
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise malformed("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self.take(self.int2())

    def utf8(self) -> str:
        return decode_utf8(self.binary())


def decode_utf8(raw: bytes) -> str:
    """A UTF-8 string as MQTT allows it: well-formed, no surrogates, no U+0000
    [MQTT-1.5.3-1, MQTT-1.5.3-2]."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed("string is not well-formed UTF-8") from exc
    if "\x00" in text:
        raise malformed("string contains U+0000")
    return text


def read_properties(r: Reader, context: int) -> Properties:
    length = r.varint()
    end = r.pos + length
    if end > len(r.data):
        raise malformed("properties longer than the packet")
    values: dict[str, Any] = {}
    users: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while r.pos < end:
        pid = r.varint()
        entry = PROPERTY_TABLE.get(pid)
        if entry is None:
            raise malformed(f"unknown property 0x{pid:02x}")
        name, kind, allowed = entry
        if context not in allowed:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"property {name} not allowed in this packet")
        value: Any
        if kind == "byte":
            value = r.byte()
        elif kind == "int2":
            value = r.int2()
        elif kind == "int4":
            value = r.int4()
        elif kind == "varint":
            value = r.varint()
        elif kind == "utf8":
            value = r.utf8()
        elif kind == "bin":
            value = r.binary()
        else:
            value = (r.utf8(), r.utf8())
        if r.pos > end:
            raise malformed("property runs past the property length")
        if name == "user_properties":
            users.append(value)
            continue
        if name == "subscription_identifiers":
            if value == 0:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "subscription identifier 0")
            sub_ids.append(value)
            continue
        if name in values:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"property {name} given twice")
        if name in _BOOLEAN_BYTES and value > 1:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"{name} must be 0 or 1")
        if name in ("receive_maximum", "maximum_packet_size") and value == 0:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"{name} must not be 0")
        if name == "maximum_qos" and value > 1:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "maximum_qos must be 0 or 1")
        values[name] = value
    if not values and not users and not sub_ids:
        return NO_PROPERTIES
    return Properties(user_properties=tuple(users), subscription_identifiers=tuple(sub_ids),
                      **values)



def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("string or binary data over 65535 bytes")
    return struct.pack(">H", len(data)) + data


def utf8(text: str) -> bytes:
    return binary(text.encode("utf-8"))


def encode_properties(props: Properties) -> bytes:
    if props == NO_PROPERTIES:
        return b"\x00"
    out = bytearray()
    for name, (pid, kind) in _PROPERTY_IDS.items():
        value = getattr(props, name)
        if value is None or value == ():
            continue
        values = value if name in ("user_properties", "subscription_identifiers") else (value,)
        for v in values:
            out += encode_varint(pid)
            if kind == "byte":
                out.append(v)
            elif kind == "int2":
                out += struct.pack(">H", v)
            elif kind == "int4":
                out += struct.pack(">I", v)
            elif kind == "varint":
                out += encode_varint(v)
            elif kind == "utf8":
                out += utf8(v)
            elif kind == "bin":
                out += binary(v)
            else:
                out += utf8(v[0]) + utf8(v[1])
    return encode_varint(len(out)) + bytes(out)


def optional_properties(props: Properties) -> bytes:
    """After a reason code, no properties may be no property length at all."""
    return b"" if props == NO_PROPERTIES else encode_properties(props)


