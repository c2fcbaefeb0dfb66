"""The AMQP 0-9-1 codec: bytes in -> events out, methods in -> bytes out.

pamqp is the reference: every frame fed to the codec is built with ``pamqp.frame.marshal``
(or by hand where pamqp cannot build it), and every frame the codec writes is compared
byte for byte with ``pamqp.frame.marshal`` and read back with ``pamqp.frame.unmarshal``.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import base, body, commands, encode, frame, header, heartbeat

from protocols.amqp.codec import AMQPCodec, encode_properties
from protocols.amqp.frames import (
    NEED_DATA,
    PROTOCOL_HEADER,
    BadProtocolHeader,
    Content,
    Heartbeat,
    Method,
    OversizeContent,
    ProtocolError,
    ProtocolHeaderReceived,
)

Basic = commands.Basic
UTC = datetime.UTC

SAMPLE_TABLE: dict[str, Any] = {
    "bool": True,
    "byte": -5,
    "short": -3000,
    "ushort": 40000,
    "long": -70000,
    "ulong": 3_000_000_000,
    "longlong": -(2**40),
    "float": 1.5,
    "decimal": decimal.Decimal("3.14"),
    "text": "héllo",
    "time": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    "table": {"inner": {"deep": [1, "two", None]}},
    "array": [True, 7, "x", {"k": "v"}, []],
    "bytes": bytearray(b"\x00\xff"),
    "void": None,
}
ALL_PROPERTIES = Basic.Properties(
    content_type="application/json",
    content_encoding="gzip",
    headers=SAMPLE_TABLE,
    delivery_mode=2,
    priority=9,
    correlation_id="corr-1",
    reply_to="amq.rabbitmq.reply-to",
    expiration="60000",
    message_id="msg-1",
    timestamp=datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    message_type="order.created",
    user_id="guest",
    app_id="shop",
)
PROPERTIES = {
    "none": Basic.Properties(),
    "json": Basic.Properties(content_type="application/json", delivery_mode=2),
    "headers": Basic.Properties(headers={"x-match": "any", "n": 1, "nested": {"a": [1, 2]}}),
    "all": ALL_PROPERTIES,
}
FRAME_MAX = 4096
BODIES = {
    "empty": b"",
    "small": b"hello",
    "exactly one frame": bytes(range(256)) * 15 + b"x" * (FRAME_MAX - 8 - 3840),
    "three frames": b"y" * (2 * (FRAME_MAX - 8) + 100),
}
ROUTING_KEYS = ["", "a.b.c", "météo.zürich.温度", "k" * 255]


# -- helpers --------------------------------------------------------------------------------


def marshal(*frames: tuple[int, Any]) -> bytes:
    """pamqp's bytes for (channel, frame) pairs."""
    return b"".join(frame.marshal(value, channel) for channel, value in frames)


def publish_frames(
    channel: int,
    method: base.Frame,
    properties: Basic.Properties,
    payload: bytes,
    chunk: int = FRAME_MAX - 8,
) -> list[tuple[int, Any]]:
    frames: list[tuple[int, Any]] = [
        (channel, method),
        (channel, header.ContentHeader(0, len(payload), properties)),
    ]
    for offset in range(0, len(payload), chunk):
        frames.append((channel, body.ContentBody(payload[offset : offset + chunk])))
    return frames


def server(frame_max: int = FRAME_MAX, **kwargs: Any) -> AMQPCodec:
    """A codec past the protocol header."""
    codec = AMQPCodec(frame_max=frame_max, **kwargs)
    codec.receive_data(PROTOCOL_HEADER)
    assert isinstance(codec.next_event(), ProtocolHeaderReceived)
    return codec


def drain(codec: AMQPCodec) -> list[Any]:
    events = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def feed(data: bytes, codec: AMQPCodec | None = None) -> list[Any]:
    codec = codec or server()
    codec.receive_data(data)
    return drain(codec)


def summary(event: Any) -> tuple[Any, ...]:
    """An event as plain comparable values (pamqp methods compare by identity)."""
    if isinstance(event, Content):
        return ("content", event.channel, dict(event.method), event.properties, event.body)
    if isinstance(event, Method):
        return ("method", event.channel, type(event.method), dict(event.method))
    if isinstance(event, OversizeContent):
        return ("oversize", event.channel, dict(event.method), event.size)
    return (type(event),)


def error_of(data: bytes, codec: AMQPCodec | None = None) -> ProtocolError:
    codec = codec or server()
    codec.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        drain(codec)
    return info.value


def sample_method(cls: type[base.Frame]) -> base.Frame:
    """An instance with every field set to a non-default value pamqp accepts."""
    values = {"shortstr": "name-1", "longstr": "long\x00string", "table": SAMPLE_TABLE,
              "bit": True, "octet": 7, "short": 513, "long": 70000, "longlong": 2**40}
    zeros = {"shortstr": "", "longstr": "", "table": {}, "bit": False, "octet": 0,
             "short": 0, "long": 0, "longlong": 0}
    method = cls()
    for name in cls.attributes():
        kind, default = cls.amqp_type(name), getattr(method, name)
        setattr(method, name, values[kind])
        try:
            method.validate()
        except ValueError:  # deprecated fields that must stay empty or zero
            setattr(method, name, zeros[kind] if default is None else default)
    return method


CLIENT_METHODS = [
    cls for cls in commands.INDEX_MAPPING.values()
    if cls not in (Basic.Publish, Basic.Deliver, Basic.GetOk, Basic.Return)
]


# -- protocol header ------------------------------------------------------------------------


def test_protocol_header_arrives_byte_by_byte() -> None:
    codec = AMQPCodec()
    for byte in PROTOCOL_HEADER[:-1]:
        codec.receive_data(bytes([byte]))
        assert codec.next_event() is NEED_DATA
    codec.receive_data(PROTOCOL_HEADER[-1:] + heartbeat.Heartbeat.marshal())
    assert codec.next_event() == ProtocolHeaderReceived()
    assert codec.next_event() == Heartbeat()
    assert codec.next_event() is NEED_DATA


@pytest.mark.parametrize(
    "greeting",
    [b"AMQP\x00\x00\x09\x00", b"AMQP\x01\x01\x00\x09", b"GET / HTTP/1.1\r\n", b"\x01\x00\x00"],
)
def test_bad_protocol_header(greeting: bytes) -> None:
    codec = AMQPCodec()
    codec.receive_data(greeting)
    with pytest.raises(BadProtocolHeader) as info:
        codec.next_event()
    assert info.value.code == 501
    assert info.value.received == greeting[:8]
    with pytest.raises(BadProtocolHeader):  # the codec stays failed
        codec.next_event()


# -- methods --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cls", CLIENT_METHODS, ids=lambda cls: cls.name)
def test_every_method_decodes_like_pamqp(cls: type[base.Frame]) -> None:
    method = sample_method(cls)
    data = marshal((3, method))
    [event] = feed(data)
    assert isinstance(event, Method)
    assert event.channel == 3
    assert type(event.method) is cls
    assert dict(event.method) == dict(frame.unmarshal(data)[2]) == dict(method)


@pytest.mark.parametrize("cls", [Basic.Deliver, Basic.GetOk, Basic.Return])
def test_server_only_content_methods_are_refused(cls: type[base.Frame]) -> None:
    error = error_of(marshal((1, sample_method(cls))))
    assert (error.code, error.class_id, error.method_id) == (503, 60, cls.frame_id)


def test_field_table_types_pamqp_cannot_encode_still_decode_like_pamqp() -> None:
    raw = b"".join([
        b"\x01dd" + struct.pack(">d", 2.5),
        b"\x01BB\xfe",
        b"\x01LL" + struct.pack(">q", -7),
        b"\x01n\x00",
        b"\x01sS" + struct.pack(">I", 2) + b"\xff\xfe",  # not UTF-8: stays bytes
    ])
    table = struct.pack(">I", len(raw)) + raw
    payload = struct.pack(">IH", Basic.Consume.index, 0) + b"\x01q\x01c\x00" + table
    data = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    [event] = feed(data)
    expected = {"d": 2.5, "B": 254, "L": -7, "n": None, "s": b"\xff\xfe"}
    assert event.method.arguments == expected == frame.unmarshal(data)[2].arguments


def test_huge_field_array_decodes_in_linear_time() -> None:
    # pamqp's decoder copies the rest of the buffer per entry; this frame would take it
    # seconds. The codec reads it in place.
    entries = 120_000
    table = b"\x01kA" + struct.pack(">I", entries) + b"V" * entries
    payload = (struct.pack(">IH", commands.Queue.Declare.index, 0) + b"\x01q\x00"
               + struct.pack(">I", len(table)) + table)
    data = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    [event] = feed(data, server(frame_max=131072))
    assert event.method.arguments == {"k": [None] * entries}


# -- content --------------------------------------------------------------------------------


@pytest.mark.parametrize("props", PROPERTIES.values(), ids=PROPERTIES.keys())
@pytest.mark.parametrize("payload", BODIES.values(), ids=BODIES.keys())
def test_publish_yields_one_content(props: Basic.Properties, payload: bytes) -> None:
    method = Basic.Publish(exchange="amq.topic", routing_key="a.b", mandatory=True)
    events = feed(marshal(*publish_frames(5, method, props, payload)))
    assert [summary(e) for e in events] == [("content", 5, dict(method), props, payload)]
    assert type(events[0].body) is bytes


def test_repeated_property_lists_decode_alike_and_headers_are_never_shared() -> None:
    """A property list like the last one is decoded once and reused; one with headers (a
    mutable table) is decoded for every message."""
    method = Basic.Publish(exchange="", routing_key="q")
    plain = Basic.Properties(delivery_mode=2, content_type="text/plain")
    other = Basic.Properties(delivery_mode=1, priority=3)
    with_headers = Basic.Properties(headers={"k": "v"}, delivery_mode=2)
    order = [plain, plain, other, plain, with_headers, with_headers, plain]
    data = b"".join(marshal(*publish_frames(1, method, props, b"x")) for props in order)
    events = feed(data)
    assert [summary(e)[3] for e in events] == order
    assert events[0].properties is events[1].properties  # decoded once
    assert events[4].properties is not events[5].properties
    assert events[4].properties.headers is not events[5].properties.headers


@pytest.mark.parametrize("routing_key", ROUTING_KEYS)
def test_publish_fields_decode_like_pamqp(routing_key: str) -> None:
    method = Basic.Publish(exchange="ex", routing_key=routing_key, immediate=True)
    data = marshal((1, method))
    [event] = feed(data + marshal(*publish_frames(1, method, Basic.Properties(), b"x")[1:]))
    assert dict(event.method) == dict(frame.unmarshal(data)[2])
    assert (event.method.routing_key, event.method.mandatory, event.method.immediate) == (
        routing_key, False, True)


def test_publish_split_at_every_offset_gives_the_same_events() -> None:
    method = Basic.Publish(exchange="amq.direct", routing_key="ключ")
    data = marshal(
        *publish_frames(1, method, ALL_PROPERTIES, b"z" * 5000, chunk=2000),
        (0, heartbeat.Heartbeat()),
        (2, Basic.Ack(delivery_tag=1)),
        *publish_frames(2, method, Basic.Properties(), b""),
    )
    expected = [summary(e) for e in feed(data)]
    assert [e[0] for e in expected] == ["content", Heartbeat, "method", "content"]
    for cut in range(len(data) + 1):
        codec = server()
        got = feed(data[:cut], codec) + feed(data[cut:], codec)
        assert [summary(e) for e in got] == expected, cut
    codec = server()
    one_by_one = [event for i in range(len(data)) for event in feed(data[i : i + 1], codec)]
    assert [summary(e) for e in one_by_one] == expected


def test_interleaved_content_on_two_channels() -> None:
    a = publish_frames(1, Basic.Publish(routing_key="a"), PROPERTIES["json"], b"A" * 9000)
    b = publish_frames(2, Basic.Publish(routing_key="b"), PROPERTIES["none"], b"B" * 5000)
    interleaved = [a[0], b[0], b[1], a[1], a[2], b[2], a[3], b[3], (3, Basic.Qos()), a[4]]
    events = feed(marshal(*interleaved))
    assert [summary(e)[:2] for e in events] == [("content", 2), ("method", 3), ("content", 1)]
    assert events[0].body == b"B" * 5000 and events[0].method.routing_key == "b"
    assert events[2].body == b"A" * 9000 and events[2].properties == PROPERTIES["json"]


def test_oversize_content_is_reported_and_discarded_then_the_channel_works() -> None:
    codec = server(max_message_size=100)
    big = publish_frames(1, Basic.Publish(routing_key="big"), ALL_PROPERTIES, b"x" * 9000)
    events = feed(marshal(*big[:2]), codec)
    assert [summary(e) for e in events] == [("oversize", 1, dict(big[0][1]), 9000)]
    assert feed(marshal(*big[2:]), codec) == []  # body frames dropped as they arrive
    small = Basic.Publish(routing_key="small")
    events = feed(marshal(*publish_frames(1, small, Basic.Properties(), b"y" * 100)), codec)
    assert [summary(e) for e in events] == [
        ("content", 1, dict(small), Basic.Properties(), b"y" * 100)
    ]


def test_large_message_in_small_reads_keeps_the_buffer_bounded() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB in 257 frames
    data = marshal(*publish_frames(1, Basic.Publish(), Basic.Properties(), payload))
    codec = server()
    events = []
    for offset in range(0, len(data), 1000):
        events += feed(data[offset : offset + 1000], codec)
        assert codec.buffered < FRAME_MAX + 1000
        assert len(codec._buf) == codec.buffered  # compacted whenever it runs dry
    assert [summary(e)[4] for e in events] == [payload]


# -- errors ---------------------------------------------------------------------------------


def test_oversize_frame_is_refused_from_its_header() -> None:
    codec = server()
    codec.receive_data(struct.pack(">BHI", 1, 1, FRAME_MAX - 7))  # header only, no payload
    with pytest.raises(ProtocolError) as info:
        codec.next_event()
    assert (info.value.code, info.value.channel) == (501, 1)
    assert "frame_max" in info.value.text


def test_frame_of_exactly_frame_max_is_accepted_and_frame_max_is_settable() -> None:
    payload = b"p" * (FRAME_MAX - 8)
    data = marshal(*publish_frames(1, Basic.Publish(), Basic.Properties(), payload))
    assert summary(feed(data)[0])[4] == payload
    codec = server(frame_max=131072)
    codec.frame_max = 2048  # as after connection.tune-ok
    assert error_of(data, codec).code == 501


def test_bad_frame_end() -> None:
    data = bytearray(marshal((1, Basic.Ack(delivery_tag=1))))
    data[-1] = 0x00
    assert error_of(bytes(data)).code == 501


@pytest.mark.parametrize("frame_type", [0, 4, 7, 9, 255])
def test_unknown_frame_type(frame_type: int) -> None:
    assert error_of(struct.pack(">BHI", frame_type, 0, 0) + b"\xce").code == 501


@pytest.mark.parametrize("data", [b"\x08\x00\x01\x00\x00\x00\x00\xce",
                                  b"\x08\x00\x00\x00\x00\x00\x01\x00\xce"])
def test_heartbeat_off_channel_zero_or_with_payload(data: bytes) -> None:
    assert error_of(data).code == 501


def unexpected_cases() -> dict[str, bytes]:
    pub = publish_frames(1, Basic.Publish(), Basic.Properties(), b"abcdef", chunk=3)
    ack = (1, Basic.Ack(delivery_tag=1))
    return {
        "header without publish": marshal(pub[1]),
        "body without publish": marshal(pub[2]),
        "method before header": marshal(pub[0], ack),
        "body before header": marshal(pub[0], pub[2]),
        "method between body frames": marshal(*pub[:3], ack),
        "second header": marshal(*pub[:2], pub[1]),
        "publish before header": marshal(pub[0], pub[0]),
        "header of another class": marshal(pub[0]) + struct.pack(">BHIHHQH", 2, 1, 14, 50, 0,
                                                                   0, 0) + b"\xce",
    }


@pytest.mark.parametrize("data", unexpected_cases().values(), ids=unexpected_cases().keys())
def test_unexpected_frames(data: bytes) -> None:
    error = error_of(data)
    assert (error.code, error.channel) == (505, 1)


def test_unexpected_method_names_the_method() -> None:
    pub = publish_frames(1, Basic.Publish(), Basic.Properties(), b"abc")
    error = error_of(marshal(pub[0], (1, Basic.Qos())))
    assert (error.code, error.class_id, error.method_id) == (505, 60, 10)


def raw_method(index: int, fields: bytes) -> bytes:
    payload = struct.pack(">I", index) + fields
    return struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"


def raw_header(properties: bytes, size: int = 0) -> bytes:
    payload = struct.pack(">HHQ", 60, 0, size) + properties
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


PUBLISH = Basic.Publish.index
NESTED: dict[str, Any] = {"a": []}
for _ in range(70):
    NESTED = {"a": [NESTED]}
PUB = marshal((1, Basic.Publish()))
CONSUME = Basic.Consume.index
MALFORMED = {
    "truncated publish": (raw_method(PUBLISH, b"\x00\x00\x05ab"), 501),
    "publish with trailing bytes": (raw_method(PUBLISH, b"\x00\x00\x00\x00\x00\x00"), 501),
    "publish key not UTF-8": (raw_method(PUBLISH, b"\x00\x00\x00\x02\xff\xfe\x00"), 502),
    "publish on channel 0": (marshal((0, Basic.Publish())), 504),
    "method without ids": (struct.pack(">BHI", 1, 1, 2) + b"\x00\x3c\xce", 501),
    "unknown method": (raw_method(0x00FF0001, b""), 503),
    "truncated queue.declare": (raw_method(commands.Queue.Declare.index, b"\x00\x00\x09q"), 501),
    "ack with trailing bytes": (raw_method(Basic.Ack.index, b"\x00" * 10), 501),
    "unknown table type": (raw_method(CONSUME, b"\0\0\0\0\0\0\0\0\x03\x01kZ"), 502),
    "table longer than frame": (raw_method(CONSUME, b"\0\0\0\0\0\0\0\0\x09\x01kV"), 501),
    "unknown property flag": (PUB + raw_header(b"\x00\x02"), 502),
    "property list truncated": (PUB + raw_header(b"\x80\x00\x05ab"), 501),
    "bytes after properties": (PUB + raw_header(b"\x00\x00\x00"), 501),
    "content type not UTF-8": (PUB + raw_header(b"\x80\x00\x01\xff"), 502),
    "header too short": (PUB + struct.pack(">BHI", 2, 1, 4) + b"\x00\x3c\x00\x00\xce", 501),
    "body longer than announced": (PUB + raw_header(b"\x00\x00", 3)
                                   + marshal((1, body.ContentBody(b"abcd"))), 501),
    "tables nested too deep": (PUB + raw_header(b"\x20\x00" + encode.field_table(NESTED)), 502),
}


@pytest.mark.parametrize("data, code", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames(data: bytes, code: int) -> None:
    assert error_of(data).code == code


def test_errors_are_sticky() -> None:
    codec = server()
    first = error_of(b"\x09\x00\x00\x00\x00\x00\x00\xce", codec)
    codec.receive_data(marshal((0, heartbeat.Heartbeat())))
    with pytest.raises(ProtocolError) as info:
        codec.next_event()
    assert info.value is first


def test_max_buffer() -> None:
    codec = server(max_buffer=100)
    codec.receive_data(b"\x08" * 100)
    with pytest.raises(ProtocolError) as info:
        codec.receive_data(b"\x08")
    assert info.value.code == 501


# -- encoding -------------------------------------------------------------------------------


def deliveries(routing_key: str) -> list[base.Frame]:
    return [
        Basic.Deliver(consumer_tag="ctag-é", delivery_tag=2**40, redelivered=True,
                      exchange="amq.topic", routing_key=routing_key),
        Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key=routing_key),
        Basic.GetOk(delivery_tag=7, redelivered=False, exchange="ex", routing_key=routing_key,
                    message_count=3_000_000_000),
        Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="ex",
                     routing_key=routing_key),
    ]


@pytest.mark.parametrize("routing_key", ROUTING_KEYS)
def test_encode_content_methods_match_pamqp(routing_key: str) -> None:
    codec = AMQPCodec()
    for method in deliveries(routing_key):
        data = codec.encode_method(9, method)
        assert data == frame.marshal(method, 9)
        size, channel, decoded = frame.unmarshal(data)
        assert (size, channel, dict(decoded)) == (len(data), 9, dict(method))


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cls", list(commands.INDEX_MAPPING.values()), ids=lambda c: c.name)
def test_encode_method_matches_pamqp(cls: type[base.Frame]) -> None:
    method = sample_method(cls)
    assert AMQPCodec().encode_method(4, method) == frame.marshal(method, 4)


@pytest.mark.parametrize("props", PROPERTIES.values(), ids=PROPERTIES.keys())
@pytest.mark.parametrize("payload", BODIES.values(), ids=BODIES.keys())
def test_encode_content_matches_pamqp(props: Basic.Properties, payload: bytes) -> None:
    codec = AMQPCodec(frame_max=FRAME_MAX)
    for method in deliveries("a.b"):
        expected = marshal(*publish_frames(2, method, props, payload))
        assert codec.encode_content(2, method, props, payload) == expected
        assert codec.encode_content(2, method, encode_properties(props), payload) == expected
        decoded, offset = [], 0
        while offset < len(expected):
            size, channel, value = frame.unmarshal(expected[offset:])
            decoded.append(value)
            offset += size
        assert len(decoded) == 2 + -(-len(payload) // (FRAME_MAX - 8))
        assert decoded[1].properties == props and decoded[1].body_size == len(payload)
        assert b"".join(part.value for part in decoded[2:]) == payload


@pytest.mark.parametrize("props", PROPERTIES.values(), ids=PROPERTIES.keys())
def test_encode_properties_matches_pamqp(props: Basic.Properties) -> None:
    assert encode_properties(props) == props.marshal()


def test_x_death_count_is_a_64_bit_integer_and_fields_keep_their_order() -> None:
    """RabbitMQ writes an x-death entry's `count` as type 'l' and its fields in its own
    order; pamqp would write 'b' and sort them. Everything else stays pamqp's bytes."""
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    death = {"count": 2, "reason": "expired", "queue": "q", "time": when, "exchange": "",
             "routing-keys": ["q"], "original-expiration": "50"}
    headers = {"b": 1, "x-death": [death], "a": "x", "x-first-death-reason": "expired"}
    raw = encode_properties(Basic.Properties(headers=headers, delivery_mode=2))
    plain = Basic.Properties(headers={k: v for k, v in headers.items() if k != "x-death"},
                             delivery_mode=2).marshal()
    assert b"\x05countl" + struct.pack(">q", 2) in raw
    assert raw.index(b"reason") < raw.index(b"queue") < raw.index(b"time") < raw.index(
        b"exchange") < raw.index(b"routing-keys") < raw.index(b"original-expiration")
    decoded = Basic.Properties()
    decoded.unmarshal(struct.unpack(">H", raw[:2])[0], raw[2:])
    assert decoded.headers == headers and decoded.delivery_mode == 2
    assert list(decoded.headers["x-death"][0]) == list(death)
    # the rest as pamqp writes it: only the x-death entry differs (7 more bytes for 'l')
    assert len(raw) == len(plain) + len(b"\x07x-deathA") + len(
        encode.field_array([death])) + 7


def test_encode_heartbeat() -> None:
    assert AMQPCodec().encode_heartbeat() == heartbeat.Heartbeat.marshal()


def test_unencodable_fields_raise_value_error() -> None:
    codec = AMQPCodec()
    with pytest.raises(ValueError):
        codec.encode_method(1, Basic.Deliver("c", 1, False, "", "é" * 128))  # 256 bytes
    with pytest.raises(ValueError):
        codec.encode_method(1, Basic.Deliver("c", None, False, "", "k"))
    with pytest.raises(ValueError):
        codec.encode_content(1, Basic.Deliver("c", 1), Basic.Properties(priority=300), b"")
    with pytest.raises(ValueError):
        codec.encode_method(1, commands.Queue.Declare(queue="q", arguments={"k": object()}))


# -- properties and fuzzing -----------------------------------------------------------------

shortstr = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
table_key = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 128)
property_text = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
field_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.binary(max_size=10).map(bytearray),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(table_key, inner, max_size=4),
    max_leaves=10,
)
properties_strategy = st.builds(
    Basic.Properties,
    content_type=st.none() | property_text,
    headers=st.none() | st.dictionaries(table_key, field_values, max_size=5),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | property_text,
    timestamp=st.none() | st.integers(0, 2**32 - 1).map(
        lambda t: datetime.datetime.fromtimestamp(t, tz=UTC)),
    app_id=st.none() | property_text,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    props=properties_strategy,
    payload=st.binary(max_size=3000),
    routing_key=shortstr,
    frame_max=st.integers(4096, 4096 * 3),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_encode_then_decode_round_trips(
    props: Basic.Properties, payload: bytes, routing_key: str, frame_max: int, cuts: list[int]
) -> None:
    method = Basic.Publish(exchange="ex", routing_key=routing_key, mandatory=True)
    data = AMQPCodec(frame_max=frame_max).encode_content(3, method, props, payload)
    assert data == marshal(*publish_frames(3, method, props, payload, chunk=frame_max - 8))
    codec = server(frame_max=frame_max)
    events, start = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        events += feed(data[start:cut], codec)
        start = cut
    assert [summary(e) for e in events] == [("content", 3, dict(method), props, payload)]


VALID_STREAM = marshal(
    (0, commands.Connection.StartOk(client_properties={"product": "x", "capabilities": {
        "publisher_confirms": True}}, mechanism="PLAIN", response="\x00guest\x00guest")),
    (1, commands.Queue.Declare(queue="q", durable=True, arguments={"x-max-length": 10})),
    *publish_frames(1, Basic.Publish(exchange="", routing_key="q"), ALL_PROPERTIES, b"m" * 50),
    (0, heartbeat.Heartbeat()),
    (1, Basic.Ack(delivery_tag=1)),
)


def drain_fuzzed(data: bytes, frame_max: int = FRAME_MAX) -> None:
    codec = server(frame_max=frame_max, max_message_size=1000)
    try:
        feed(data, codec)
    except ProtocolError as error:
        assert 501 <= error.code <= 505
        assert isinstance(error.text, str) and isinstance(error.channel, int)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    drain_fuzzed(data)
    drain_fuzzed(VALID_STREAM[:70] + data)


@settings(max_examples=400, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**16),
                  st.integers(0, 255)),
        min_size=1, max_size=4),
    truncate=st.integers(0, len(VALID_STREAM)),
)
def test_fuzz_mutated_frames_raise_only_protocol_errors(
    edits: list[tuple[str, int, int]], truncate: int
) -> None:
    data = bytearray(VALID_STREAM)
    for action, where, value in edits:
        where %= len(data) + 1
        if action == "insert":
            data[where:where] = bytes([value])
        elif where < len(data):
            if action == "flip":
                data[where] ^= value or 1
            else:
                del data[where]
    drain_fuzzed(bytes(data))
    drain_fuzzed(bytes(data[:truncate]), frame_max=131072)


@pytest.mark.parametrize("props", PROPERTIES.values(), ids=PROPERTIES.keys())
def test_raw_properties_are_the_received_bytes_and_reencode_alike(
        props: Basic.Properties) -> None:
    data = marshal(*publish_frames(1, Basic.Publish(exchange="x", routing_key="k"), props,
                                   b"body"))
    (content,) = feed(data)
    assert content.raw_properties == encode_properties(props)
    assert encode_properties(content.properties) == content.raw_properties


@pytest.mark.parametrize("props", PROPERTIES.values(), ids=PROPERTIES.keys())
@pytest.mark.parametrize("size", [0, 5, FRAME_MAX - 8, 3 * FRAME_MAX])
def test_encode_delivery_matches_encode_content(props: Basic.Properties, size: int) -> None:
    codec = server()
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    raw = encode_properties(props)
    expected = codec.encode_content(
        3, Basic.Deliver("ctag-é", 2**40, True, "ex", "rk.ü"), raw, payload)
    assert codec.encode_delivery(3, "ctag-é", 2**40, True, "ex", "rk.ü", raw,
                                 payload) == expected


def test_encode_delivery_refuses_a_routing_key_over_255_bytes() -> None:
    with pytest.raises(ValueError):
        server().encode_delivery(1, "t", 1, False, "", "r" * 256, b"\x00\x00", b"")
