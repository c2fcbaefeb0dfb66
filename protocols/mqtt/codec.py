"""Sans-IO MQTT 3.1.1 / 5.0 codec: bytes in, packets out; packets in, bytes out.

Theory of operation
-------------------
`receive_data(bytes)` appends to a buffer; `next_event()` returns one decoded packet
(``frames.py``) or ``NEED_DATA`` when the buffer holds no whole packet yet. The fixed header
(type, flags, remaining length) is read first: a packet whose total size is over
`max_packet_size` is refused right there, before its body is buffered [MQTT-3.2.2-15 is the
client's side of the same rule]. Only whole packets are decoded, so a split at any offset is
a normal NEED_DATA. Every violation raises `ProtocolError` with the MQTT 5 reason code
(0x81 malformed, 0x82 protocol error, 0x95 too large, 0x84 unsupported version); after one
the codec is broken and raises the same error again.

The version decides the wire format: properties and reason codes exist only in 5.0. A
server-side codec starts without a version and takes it from the CONNECT it decodes.
Nothing here does I/O or imports the broker.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from protocols.mqtt.frames import (
    MQTT_5,
    MQTT_311,
    NEED_DATA,
    NO_PROPERTIES,
    PACKET_TYPES,
    PROTOCOL_LEVELS,
    Auth,
    Connack,
    Connect,
    Disconnect,
    NeedData,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from protocols.mqtt.wire import (
    MAX_REMAINING,
    WILL,
    Reader,
    binary,
    encode_properties,
    encode_varint,
    malformed,
    optional_properties,
    read_properties,
    utf8,
)


def _packet_id(r: Reader) -> int:
    pid = r.int2()
    if pid == 0:
        raise malformed("packet identifier 0 [MQTT-2.3.1-1]")
    return pid


def _check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            "wildcard in a topic name [MQTT-3.3.2-2]")


def _decode_connect(r: Reader, flags: int, version: int | None) -> Connect:
    name = r.utf8()
    level = r.byte()
    if name not in ("MQTT", "MQIsdp"):
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"protocol name {name!r}")
    if PROTOCOL_LEVELS.get(level) != name:
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"protocol {name} level {level} [MQTT-3.1.2-2]")
    cflags = r.byte()
    if cflags & 0x01:
        raise malformed("reserved connect flag set [MQTT-3.1.2-3]")
    clean = bool(cflags & 0x02)
    will_flag = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_user = bool(cflags & 0x80)
    if will_qos == 3:
        raise malformed("will QoS 3 [MQTT-3.1.2-14]")
    if not will_flag and (will_qos or will_retain):
        raise malformed("will QoS or retain without a will [MQTT-3.1.2-13, MQTT-3.1.2-15]")
    if level < MQTT_5 and has_password and not has_user:
        raise malformed("password without user name [MQTT-3.1.2-22]")
    keepalive = r.int2()
    props = read_properties(r, PacketType.CONNECT) if level == MQTT_5 else NO_PROPERTIES
    client_id = r.utf8()
    will = None
    if will_flag:
        wprops = read_properties(r, WILL) if level == MQTT_5 else NO_PROPERTIES
        wtopic = r.utf8()
        _check_topic_name(wtopic)
        if not wtopic:
            raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID, "empty will topic")
        will = Will(wtopic, r.binary(), will_qos, will_retain, wprops)
    username = r.utf8() if has_user else None
    password = r.binary() if has_password else None
    return Connect(client_id, level, clean, keepalive, will, username, password, props, name)


def _decode_connack(r: Reader, flags: int, version: int) -> Connack:
    ack_flags = r.byte()
    if ack_flags & 0xFE:
        raise malformed("reserved connack flags set")
    code = r.byte()
    props = read_properties(r, PacketType.CONNACK) if version == MQTT_5 else NO_PROPERTIES
    return Connack(code, bool(ack_flags & 1), props)


def _decode_publish(r: Reader, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 0x03
    dup = bool(flags & 0x08)
    if qos == 3:
        raise malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    if dup and qos == 0:
        raise malformed("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
    topic = r.utf8()
    _check_topic_name(topic)
    packet_id = _packet_id(r) if qos else None
    props = read_properties(r, PacketType.PUBLISH) if version == MQTT_5 else NO_PROPERTIES
    if not topic and (version != MQTT_5 or props.topic_alias is None):
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID, "empty topic name [MQTT-4.7.3-1]")
    payload = r.take(r.left)
    return Publish(topic, payload, qos, bool(flags & 1), dup, packet_id, props)


def _ack_decoder(cls: Any, ptype: PacketType) -> Callable[[Reader, int, int], Any]:
    def decode(r: Reader, flags: int, version: int) -> Any:
        pid = _packet_id(r)
        if version != MQTT_5 or not r.left:
            return cls(pid)
        code = r.byte()
        props = read_properties(r, ptype) if r.left else NO_PROPERTIES
        return cls(pid, code, props)
    return decode


def _decode_subscribe(r: Reader, flags: int, version: int) -> Subscribe:
    pid = _packet_id(r)
    props = read_properties(r, PacketType.SUBSCRIBE) if version == MQTT_5 else NO_PROPERTIES
    if len(props.subscription_identifiers) > 1:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "more than one subscription id")
    subs = []
    while r.left:
        topic_filter = r.utf8()
        options = r.byte()
        qos = options & 0x03
        if qos == 3:
            raise malformed("requested QoS 3 [MQTT-3.8.3-4]")
        if version != MQTT_5:
            if options & 0xFC:
                raise malformed("reserved subscription option bits set [MQTT-3.8.3-4]")
            subs.append(Subscription(topic_filter, qos))
            continue
        if options & 0xC0:
            raise malformed("reserved subscription option bits set [MQTT-3-8.3-5]")
        handling = (options >> 4) & 0x03
        if handling == 3:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "retain handling 3")
        subs.append(Subscription(topic_filter, qos, bool(options & 0x04),
                                 bool(options & 0x08), handling))
    if not subs:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "SUBSCRIBE without a filter "
                            "[MQTT-3.8.3-3]")
    return Subscribe(pid, tuple(subs), props)


def _decode_suback(r: Reader, flags: int, version: int) -> SubAck:
    pid = _packet_id(r)
    props = read_properties(r, PacketType.SUBACK) if version == MQTT_5 else NO_PROPERTIES
    return SubAck(pid, tuple(r.take(r.left)), props)


def _decode_unsubscribe(r: Reader, flags: int, version: int) -> Unsubscribe:
    pid = _packet_id(r)
    props = (read_properties(r, PacketType.UNSUBSCRIBE) if version == MQTT_5
             else NO_PROPERTIES)
    filters = []
    while r.left:
        filters.append(r.utf8())
    if not filters:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "UNSUBSCRIBE without a filter "
                            "[MQTT-3.10.3-2]")
    return Unsubscribe(pid, tuple(filters), props)


def _decode_unsuback(r: Reader, flags: int, version: int) -> UnsubAck:
    pid = _packet_id(r)
    if version != MQTT_5:
        return UnsubAck(pid)
    props = read_properties(r, PacketType.UNSUBACK)
    return UnsubAck(pid, tuple(r.take(r.left)), props)


def _decode_empty(cls: Any) -> Callable[[Reader, int, int], Any]:
    def decode(r: Reader, flags: int, version: int) -> Any:
        return cls()
    return decode


def _reason_decoder(cls: Any, ptype: PacketType) -> Callable[[Reader, int, int], Any]:
    def decode(r: Reader, flags: int, version: int) -> Any:
        if version != MQTT_5 or not r.left:
            return cls()
        code = r.byte()
        props = read_properties(r, ptype) if r.left else NO_PROPERTIES
        return cls(code, props)
    return decode


_DECODERS: Final[dict[int, Callable[[Reader, int, int], Any]]] = {
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _ack_decoder(PubAck, PacketType.PUBACK),
    PacketType.PUBREC: _ack_decoder(PubRec, PacketType.PUBREC),
    PacketType.PUBREL: _ack_decoder(PubRel, PacketType.PUBREL),
    PacketType.PUBCOMP: _ack_decoder(PubComp, PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(PingReq),
    PacketType.PINGRESP: _decode_empty(PingResp),
    PacketType.DISCONNECT: _reason_decoder(Disconnect, PacketType.DISCONNECT),
    PacketType.AUTH: _reason_decoder(Auth, PacketType.AUTH),
}
# fixed header flags every packet type but PUBLISH must carry [MQTT-2.2.2-1, MQTT-2.2.2-2]
_REQUIRED_FLAGS: Final[dict[int, int]] = {
    PacketType.PUBREL: 2, PacketType.SUBSCRIBE: 2, PacketType.UNSUBSCRIBE: 2}
# packets of fixed length (3.1.1 everywhere, and 5.0 where it has no variable part)
_FIXED_311: Final[dict[int, int]] = {
    PacketType.CONNACK: 2, PacketType.PUBACK: 2, PacketType.PUBREC: 2, PacketType.PUBREL: 2,
    PacketType.PUBCOMP: 2, PacketType.UNSUBACK: 2, PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0, PacketType.DISCONNECT: 0}


def _publish_311(flags: int, body: bytes) -> Publish | None:
    """A well-formed 3.1.1 PUBLISH, decoded without the general machinery; None for
    anything unusual, which the general decoder then takes (and refuses, if it must)."""
    qos = (flags >> 1) & 0x03
    if qos == 3 or (flags & 0x08 and not qos) or len(body) < 2:
        return None
    end = 2 + ((body[0] << 8) | body[1])
    start = end + 2 if qos else end
    if start > len(body) or end == 2:
        return None
    try:
        topic = body[2:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in topic or "+" in topic or "#" in topic:
        return None
    pid = None
    if qos:
        pid = (body[end] << 8) | body[end + 1]
        if not pid:
            return None
    return Publish(topic, body[start:], qos, bool(flags & 1), bool(flags & 0x08), pid,
                   NO_PROPERTIES)


def decode_packet(first: int, body: bytes, version: int | None) -> Packet:
    """One whole packet from its first byte and its body (everything after the length)."""
    ptype, flags = first >> 4, first & 0x0F
    if ptype == PacketType.PUBLISH and version == MQTT_311:
        fast = _publish_311(flags, body)
        if fast is not None:
            return fast
    if ptype == 0:
        raise malformed("packet type 0 is reserved")
    if ptype != PacketType.PUBLISH and flags != _REQUIRED_FLAGS.get(ptype, 0):
        raise malformed(f"bad fixed header flags {flags:#x} for packet type {ptype}")
    r = Reader(body)
    if ptype == PacketType.CONNECT:
        packet: Packet = _decode_connect(r, flags, version)
    else:
        v = version if version is not None else MQTT_311
        if ptype == PacketType.AUTH and v != MQTT_5:
            raise malformed("AUTH exists only in MQTT 5")
        if v != MQTT_5 and ptype in _FIXED_311 and len(body) != _FIXED_311[ptype]:
            raise malformed(f"packet type {ptype} must have {_FIXED_311[ptype]} bytes")
        packet = _DECODERS[ptype](r, flags, v)
    if r.left:
        raise malformed("bytes left over after the packet's fields")
    return packet


# -- writing -------------------------------------------------------------------------------

_U16 = struct.Struct(">H")


def encode_publish_qos0(topic: str, payload: bytes, retain: bool, version: int) -> bytes:
    """`encode_packet(Publish(topic, payload, 0, retain), version)` without building the
    packet: the QoS 0 delivery path, once per message (checked against it by hypothesis)."""
    raw = topic.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string or binary data over 65535 bytes")
    head = _U16.pack(len(raw)) + raw + (b"\x00" if version == MQTT_5 else b"")
    size = len(head) + len(payload)
    first = b"\x31" if retain else b"\x30"
    if size < 128:
        return first + bytes((size,)) + head + payload
    return first + encode_varint(size) + head + payload


def encode_packet(packet: Packet, version: int) -> bytes:
    """The bytes of one packet in `version`'s format (CONNECT: in its own level's)."""
    v5 = version == MQTT_5
    ptype = PACKET_TYPES[type(packet)]
    flags = _REQUIRED_FLAGS.get(ptype, 0)
    body: bytes
    if isinstance(packet, Publish):
        flags = (packet.dup << 3) | (packet.qos << 1) | int(packet.retain)
        body = utf8(packet.topic)
        if packet.qos:
            assert packet.packet_id is not None
            body += struct.pack(">H", packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        body += packet.payload
    elif isinstance(packet, PubAck | PubRec | PubRel | PubComp):
        body = struct.pack(">H", packet.packet_id)
        if v5 and (packet.reason_code or packet.properties != NO_PROPERTIES):
            body += bytes([packet.reason_code]) + optional_properties(packet.properties)
    elif isinstance(packet, Connack):
        body = bytes([int(packet.session_present), packet.reason_code])
        if v5:
            body += encode_properties(packet.properties)
    elif isinstance(packet, SubAck):
        body = struct.pack(">H", packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        body += bytes(packet.reason_codes)
    elif isinstance(packet, UnsubAck):
        body = struct.pack(">H", packet.packet_id)
        if v5:
            body += encode_properties(packet.properties) + bytes(packet.reason_codes)
    elif isinstance(packet, Subscribe):
        body = struct.pack(">H", packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        for s in packet.subscriptions:
            opts = s.qos | (s.no_local << 2) | (s.retain_as_published << 3) | (
                s.retain_handling << 4)
            body += utf8(s.topic_filter) + bytes([opts])
    elif isinstance(packet, Unsubscribe):
        body = struct.pack(">H", packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        body += b"".join(utf8(f) for f in packet.topic_filters)
    elif isinstance(packet, Disconnect | Auth):
        body = b""
        if v5 and (packet.reason_code or packet.properties != NO_PROPERTIES):
            body = bytes([packet.reason_code]) + optional_properties(packet.properties)
    elif isinstance(packet, Connect):
        body = _encode_connect(packet)
    else:  # PINGREQ, PINGRESP
        body = b""
    return bytes([(ptype << 4) | flags]) + encode_varint(len(body)) + body


def _encode_connect(c: Connect) -> bytes:
    v5 = c.protocol_level == MQTT_5
    flags = (int(c.clean_start) << 1) | ((c.username is not None) << 7) | (
        (c.password is not None) << 6)
    if c.will is not None:
        flags |= 0x04 | (c.will.qos << 3) | (int(c.will.retain) << 5)
    body = utf8(c.protocol_name) + bytes([c.protocol_level, flags]) + struct.pack(
        ">H", c.keepalive)
    if v5:
        body += encode_properties(c.properties)
    body += utf8(c.client_id)
    if c.will is not None:
        if v5:
            body += encode_properties(c.will.properties)
        body += utf8(c.will.topic) + binary(c.will.payload)
    if c.username is not None:
        body += utf8(c.username)
    if c.password is not None:
        body += binary(c.password)
    return body


# -- the stream ----------------------------------------------------------------------------

class MQTTCodec:
    """One connection's byte stream. `version` is None on a server until CONNECT."""

    def __init__(self, *, max_packet_size: int = MAX_REMAINING + 5,
                 version: int | None = None, server: bool = True) -> None:
        self.max_packet_size = max_packet_size
        self.version = version
        self.server = server
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    def receive_data(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next_event(self) -> Packet | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _next(self) -> Packet | NeedData:
        buf = self._buf
        if self.server and self.version is None and buf and buf[0] != 0x10:
            # [MQTT-3.1.0-1] a client's first packet is CONNECT (type 1, flags 0): known
            # from the first byte, so a stream of anything else is refused at once rather
            # than after the rest of a packet (or the handshake timeout), as Mosquitto does
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "first packet is not CONNECT")
        if len(buf) < 2:
            return NEED_DATA
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return NEED_DATA
            b = buf[i]
            length |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            if i == 5:
                raise malformed("remaining length longer than 4 bytes")
            shift += 7
        total = i + length
        if total > self.max_packet_size:
            raise ProtocolError(ReasonCode.PACKET_TOO_LARGE,
                                f"packet of {total} bytes is over the maximum of "
                                f"{self.max_packet_size}")
        if len(buf) < total:
            return NEED_DATA
        first = buf[0]
        body = bytes(buf[i:total])
        del buf[:total]
        packet = decode_packet(first, body, self.version)
        if self.server and isinstance(packet, Connect) and self.version is None:
            self.version = packet.protocol_level
        return packet

    def send(self, packet: Packet) -> bytes:
        return encode_packet(packet, self.version or MQTT_311)

    @property
    def buffered(self) -> int:
        return len(self._buf)
