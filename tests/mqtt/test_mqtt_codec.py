"""The MQTT codec driven by bytes: known encodings from the spec, round trips of every packet
type in both versions, every split offset, every malformed case, and a fuzz test in which
only the codec's `ProtocolError` may escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mqtt.codec import MQTTCodec, encode_packet, encode_publish_qos0, encode_varint
from protocols.mqtt.frames import (
    MQTT_5,
    MQTT_311,
    NEED_DATA,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
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

FULL_PROPS = Properties(
    payload_format_indicator=1, message_expiry_interval=60, content_type="text/plain",
    response_topic="reply/here", correlation_data=b"\x00\x01", subscription_identifiers=(7,),
    topic_alias=3, user_properties=(("a", "1"), ("a", "2"), ("b", "")))


def packets(version: int) -> list[Packet]:
    v5 = version == MQTT_5
    props = FULL_PROPS if v5 else Properties()
    out: list[Packet] = [
        Connect("client-1", version, True, 30,
                Will("will/topic", b"gone", 1, True,
                     Properties(will_delay_interval=5) if v5 else Properties()),
                "guest", b"guest",
                Properties(session_expiry_interval=10, receive_maximum=20,
                           topic_alias_maximum=4, maximum_packet_size=1000) if v5
                else Properties()),
        Connect("", version, False, 0),
        Connack(0, True, Properties(assigned_client_identifier="x", receive_maximum=5)
                if v5 else Properties()),
        Publish("a/b", b"payload", 0, True, False, None, props),
        Publish("a/b", b"", 1, False, True, 1, props),
        Publish("a/b", b"x" * 300, 2, False, False, 65535),
        PubAck(1), PubRec(2), PubRel(3), PubComp(4),
        Subscribe(5, (Subscription("a/+", 1), Subscription("#", 2)),
                  Properties(subscription_identifiers=(9,)) if v5 else Properties()),
        SubAck(5, (0, 1, 2, 0x80)),
        Unsubscribe(6, ("a/+", "#")),
        UnsubAck(6, (0, 0x11) if v5 else ()),
        PingReq(), PingResp(), Disconnect(),
    ]
    if v5:
        out += [
            PubAck(7, ReasonCode.NO_MATCHING_SUBSCRIBERS),
            PubRec(8, 0x80, Properties(reason_string="no")),
            Subscribe(10, (Subscription("a", 1, True, True, 2),)),
            Disconnect(ReasonCode.SESSION_TAKEN_OVER, Properties(reason_string="bye")),
            Auth(0x18, Properties(authentication_method="SCRAM")),
        ]
    return out


def decode_all(data: bytes, version: int | None, *, server: bool = False,
               max_packet_size: int = 1 << 20) -> list[Packet]:
    codec = MQTTCodec(max_packet_size=max_packet_size, version=version, server=server)
    codec.receive_data(data)
    out = []
    while (p := codec.next_event()) is not NEED_DATA:
        assert not isinstance(p, type(NEED_DATA))
        out.append(p)
    return out


def fail(data: bytes, version: int | None = MQTT_311) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_all(data, version, server=version is None)
    return info.value


# -- known bytes -----------------------------------------------------------------------------

def test_connect_311_bytes_from_the_spec() -> None:
    data = encode_packet(Connect("c", MQTT_311, True, 60), MQTT_311)
    assert data == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
    (c,) = decode_all(data, None, server=True)
    assert c == Connect("c", MQTT_311, True, 60)


def test_server_codec_takes_its_version_from_connect() -> None:
    codec = MQTTCodec()
    codec.receive_data(encode_packet(Connect("c", MQTT_5), MQTT_5))
    assert isinstance(codec.next_event(), Connect)
    assert codec.version == MQTT_5
    assert codec.send(PubAck(1, 0x10)) == b"\x40\x03\x00\x01\x10"


def test_short_forms_of_acknowledgements() -> None:
    assert encode_packet(PubAck(1), MQTT_5) == b"\x40\x02\x00\x01"
    assert encode_packet(PubAck(1, 0x10), MQTT_311) == b"\x40\x02\x00\x01"
    assert encode_packet(Disconnect(), MQTT_5) == b"\xe0\x00"
    assert decode_all(b"\x40\x03\x00\x01\x10", MQTT_5) == [PubAck(1, 0x10)]
    assert decode_all(b"\xe0\x01\x8e", MQTT_5) == [Disconnect(0x8E)]
    assert encode_packet(Connack(0, True), MQTT_311) == b"\x20\x02\x01\x00"
    assert encode_packet(SubAck(1, (0, 0x80)), MQTT_311) == b"\x90\x04\x00\x01\x00\x80"


def test_mqtt_310_protocol_name() -> None:
    data = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c"
    (c,) = decode_all(data, None, server=True)
    assert isinstance(c, Connect) and c.protocol_level == 3 and c.protocol_name == "MQIsdp"


@pytest.mark.parametrize("value", [0, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_variable_byte_integer_bounds(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == (1 if value < 128 else 2 if value < 16384 else
                            3 if value < 2097152 else 4)
    pkt = Publish("t", b"", 0)
    assert decode_all(encode_packet(pkt, MQTT_311), MQTT_311) == [pkt]


# -- round trips and splits ------------------------------------------------------------------

@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_every_packet_round_trips(version: int) -> None:
    for pkt in packets(version):
        data = encode_packet(pkt, version)
        assert decode_all(data, version, server=False) == [pkt], pkt


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_split_at_every_offset(version: int) -> None:
    stream = [p for p in packets(version) if not isinstance(p, Connect)]
    data = b"".join(encode_packet(p, version) for p in stream)
    for cut in range(len(data) + 1):
        codec = MQTTCodec(version=version, server=False)
        got = []
        for chunk in (data[:cut], data[cut:]):
            codec.receive_data(chunk)
            while (p := codec.next_event()) is not NEED_DATA:
                got.append(p)
        assert got == stream, cut


def test_byte_by_byte() -> None:
    data = b"".join(encode_packet(p, MQTT_5) for p in packets(MQTT_5)[2:])
    codec = MQTTCodec(version=MQTT_5, server=False)
    got = []
    for i in range(len(data)):
        codec.receive_data(data[i:i + 1])
        while (p := codec.next_event()) is not NEED_DATA:
            got.append(p)
    assert got == packets(MQTT_5)[2:]


# -- oversize ----------------------------------------------------------------------------

def test_oversize_packet_refused_from_the_fixed_header() -> None:
    codec = MQTTCodec(max_packet_size=100, version=MQTT_311)
    header = b"\x30" + encode_varint(1000)
    codec.receive_data(header)  # nothing of the body has arrived yet
    with pytest.raises(ProtocolError) as info:
        codec.next_event()
    assert info.value.reason is ReasonCode.PACKET_TOO_LARGE
    assert codec.buffered == 0
    codec.receive_data(b"more")
    with pytest.raises(ProtocolError):  # broken for good
        codec.next_event()


def test_packet_of_exactly_the_maximum_is_accepted() -> None:
    pkt = Publish("t", b"x" * 95, 0)
    data = encode_packet(pkt, MQTT_311)
    assert len(data) == 100
    assert decode_all(data, MQTT_311, max_packet_size=100) == [pkt]
    with pytest.raises(ProtocolError):
        decode_all(data, MQTT_311, max_packet_size=99)


# -- malformed ---------------------------------------------------------------------------

MALFORMED_311 = {
    "remaining length of five bytes": b"\x30\xff\xff\xff\xff\x01",
    "packet type 0": b"\x00\x00",
    "PUBREL flags 0": b"\x60\x02\x00\x01",
    "SUBSCRIBE flags 0": b"\x80\x06\x00\x01\x00\x01a\x00",
    "UNSUBSCRIBE flags 0": b"\xa0\x05\x00\x01\x00\x01a",
    "PINGREQ flags": b"\xc1\x00",
    "PUBLISH QoS 3": b"\x36\x05\x00\x01a\x00\x01",
    "DUP on QoS 0": b"\x38\x03\x00\x01a",
    "packet id 0": b"\x32\x05\x00\x01a\x00\x00",
    "truncated topic": b"\x30\x03\x00\x05a",
    "topic not UTF-8": b"\x30\x04\x00\x02\xc3\x28",
    "topic with U+0000": b"\x30\x04\x00\x02a\x00",
    "surrogate in topic": b"\x30\x05\x00\x03\xed\xa0\x80",
    "PUBACK of 3 bytes": b"\x40\x03\x00\x01\x00",
    "PINGREQ with a body": b"\xc0\x01\x00",
    "DISCONNECT with a body": b"\xe0\x01\x00",
    "PUBACK id 0": b"\x40\x02\x00\x00",
    "SUBSCRIBE QoS 3": b"\x82\x06\x00\x01\x00\x01a\x03",
    "SUBSCRIBE reserved bits": b"\x82\x06\x00\x01\x00\x01a\x04",
    "SUBSCRIBE filter without options": b"\x82\x05\x00\x01\x00\x01a",
    "AUTH in 3.1.1": b"\xf0\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_311))
def test_malformed_311(name: str) -> None:
    err = fail(MALFORMED_311[name])
    assert err.reason is ReasonCode.MALFORMED_PACKET, err


PROTOCOL_ERRORS_311 = {
    "wildcard + in PUBLISH topic": (b"\x30\x05\x00\x03a/+", ReasonCode.TOPIC_NAME_INVALID),
    "wildcard # in PUBLISH topic": (b"\x30\x03\x00\x01#", ReasonCode.TOPIC_NAME_INVALID),
    "empty PUBLISH topic": (b"\x30\x02\x00\x00", ReasonCode.TOPIC_NAME_INVALID),
    "SUBSCRIBE without filters": (b"\x82\x02\x00\x01", ReasonCode.PROTOCOL_ERROR),
    "UNSUBSCRIBE without filters": (b"\xa2\x02\x00\x01", ReasonCode.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS_311))
def test_protocol_errors_311(name: str) -> None:
    data, reason = PROTOCOL_ERRORS_311[name]
    assert fail(data).reason is reason


def _connect(flags: int, level: int = 4, name: bytes = b"MQTT", rest: bytes = b"\x00\x01c"
             ) -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes([level, flags]) + b"\x00\x3c" + rest
    return b"\x10" + encode_varint(len(body)) + body


CONNECT_CASES = {
    "reserved flag": (_connect(0x03), ReasonCode.MALFORMED_PACKET),
    "will QoS 3": (_connect(0x1E, rest=b"\x00\x01c\x00\x01t\x00\x00"),
                   ReasonCode.MALFORMED_PACKET),
    "will QoS without will": (_connect(0x0A), ReasonCode.MALFORMED_PACKET),
    "will retain without will": (_connect(0x22), ReasonCode.MALFORMED_PACKET),
    "password without user name": (_connect(0x42, rest=b"\x00\x01c\x00\x01p"),
                                   ReasonCode.MALFORMED_PACKET),
    "wrong protocol name": (_connect(0x02, name=b"MQTX"), ReasonCode.PROTOCOL_ERROR),
    "level 6": (_connect(0x02, level=6), ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
    "MQIsdp at level 4": (_connect(0x02, name=b"MQIsdp"),
                          ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
    "client id not UTF-8": (_connect(0x02, rest=b"\x00\x01\xff"), ReasonCode.MALFORMED_PACKET),
    "missing will topic": (_connect(0x06), ReasonCode.MALFORMED_PACKET),
    "wildcard in will topic": (_connect(0x06, rest=b"\x00\x01c\x00\x01#\x00\x00"),
                               ReasonCode.TOPIC_NAME_INVALID),
    "bytes after the fields": (_connect(0x02, rest=b"\x00\x01cX"), ReasonCode.MALFORMED_PACKET),
}


@pytest.mark.parametrize("name", sorted(CONNECT_CASES))
def test_malformed_connect(name: str) -> None:
    data, reason = CONNECT_CASES[name]
    assert fail(data, None).reason is reason


def _publish5(props: bytes) -> bytes:
    body = b"\x00\x01a" + encode_varint(len(props)) + props
    return b"\x30" + encode_varint(len(body)) + body


PROPERTY_CASES = {
    "unknown property": (b"\x7f\x00", ReasonCode.MALFORMED_PACKET),
    "property not allowed in PUBLISH": (b"\x11\x00\x00\x00\x01", ReasonCode.PROTOCOL_ERROR),
    "duplicate property": (b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01",
                           ReasonCode.PROTOCOL_ERROR),
    "payload format 2": (b"\x01\x02", ReasonCode.PROTOCOL_ERROR),
    "subscription id 0": (b"\x0b\x00", ReasonCode.PROTOCOL_ERROR),
    "property past its length": (b"\x02\x00\x00", ReasonCode.MALFORMED_PACKET),
    "user property not UTF-8": (b"\x26\x00\x01\xff\x00\x00", ReasonCode.MALFORMED_PACKET),
}


@pytest.mark.parametrize("name", sorted(PROPERTY_CASES))
def test_malformed_properties(name: str) -> None:
    props, reason = PROPERTY_CASES[name]
    assert fail(_publish5(props), MQTT_5).reason is reason


def test_properties_longer_than_the_packet() -> None:
    assert fail(b"\x30\x04\x00\x01a\x09", MQTT_5).reason is ReasonCode.MALFORMED_PACKET


def test_receive_maximum_zero_in_connect() -> None:
    props = b"\x03\x21\x00\x00"
    body = b"\x00\x04MQTT\x05\x02\x00\x3c" + props + b"\x00\x01c"
    data = b"\x10" + encode_varint(len(body)) + body
    assert fail(data, None).reason is ReasonCode.PROTOCOL_ERROR


def test_retain_handling_3_and_v5_reserved_bits() -> None:
    base = b"\x00\x01\x00\x00\x01a"
    assert fail(b"\x82\x07" + base + b"\x30", MQTT_5).reason is ReasonCode.PROTOCOL_ERROR
    assert fail(b"\x82\x07" + base + b"\x40", MQTT_5).reason is ReasonCode.MALFORMED_PACKET


def test_error_is_sticky() -> None:
    codec = MQTTCodec(version=MQTT_311, server=False)
    codec.receive_data(b"\x00\x00")
    with pytest.raises(ProtocolError):
        codec.next_event()
    codec.receive_data(encode_packet(PingReq(), MQTT_311))
    with pytest.raises(ProtocolError):
        codec.next_event()


def test_incomplete_is_need_data_not_an_error() -> None:
    data = encode_packet(Publish("a/b", b"xyz", 1, packet_id=5), MQTT_311)
    for cut in range(len(data)):
        codec = MQTTCodec(version=MQTT_311, server=False)
        codec.receive_data(data[:cut])
        assert codec.next_event() is NEED_DATA


# -- fuzz --------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([None, MQTT_311, MQTT_5]))
def test_fuzz_only_protocol_errors_escape(data: bytes, version: int | None) -> None:
    codec = MQTTCodec(max_packet_size=1024, version=version, server=version is None)
    codec.receive_data(data)
    try:
        for _ in range(100):
            if codec.next_event() is NEED_DATA:
                break
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 22), st.integers(0, 200), st.integers(0, 255),
       st.sampled_from([MQTT_311, MQTT_5]))
def test_fuzz_mutated_valid_packets(index: int, offset: int, byte: int, version: int) -> None:
    pkts = packets(version)
    pkt = pkts[index % len(pkts)]
    data = bytearray(encode_packet(pkt, version))
    data[offset % len(data)] = byte
    try:
        decode_all(bytes(data), None if isinstance(pkt, Connect) else version,
                   server=isinstance(pkt, Connect))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(topic=st.text(st.characters(blacklist_characters="+#\x00",
                                   blacklist_categories=("Cs",)), min_size=1, max_size=30),
       payload=st.binary(max_size=100), qos=st.integers(0, 2), retain=st.booleans(),
       users=st.lists(st.tuples(*[st.text(st.characters(
           blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=5)] * 2),
           max_size=3))
def test_publish_round_trip(topic: str, payload: bytes, qos: int, retain: bool,
                            users: list[tuple[str, str]]) -> None:
    pkt = Publish(topic, payload, qos, retain, False, 17 if qos else None,
                  Properties(user_properties=tuple(users)))
    assert decode_all(encode_packet(pkt, MQTT_5), MQTT_5) == [pkt]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 15), st.binary(max_size=24))
def test_fast_311_publish_decoder_agrees_with_the_general_one(flags: int, body: bytes
                                                              ) -> None:
    from protocols.mqtt import codec

    fast = codec._publish_311(flags, body)
    r = codec.Reader(body)
    try:
        general: Publish | None = codec._decode_publish(r, flags, MQTT_311)
        if r.left:
            general = None
    except ProtocolError:
        general = None
    assert fast is None or fast == general


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
       st.binary(max_size=300), st.booleans(), st.sampled_from([4, 5]))
def test_qos0_publish_encoder_matches_the_general_one(topic: str, payload: bytes,
                                                      retain: bool, version: int) -> None:
    assert encode_publish_qos0(topic, payload, retain, version) == encode_packet(
        Publish(topic, payload, 0, retain), version)
