"""The WAMP codec alone: every message type both ways in both serializers, the JSON binary
convention, malformed input, and a fuzz test in which only `ProtocolViolation` escapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.wamp import frames as F
from protocols.wamp.codec import Serializer, WampCodec, from_list, to_list

SAMPLES: list[Any] = [
    F.Hello("realm1", {"roles": {"caller": {}}}),
    F.Welcome(2**53, {"roles": {"broker": {}}}),
    F.Abort({"message": "m"}, "wamp.error.no_such_realm"),
    F.Challenge("ticket", {}),
    F.Authenticate("secret", {}),
    F.Goodbye({}, "wamp.close.goodbye_and_out"),
    F.Error(48, 7, {}, "wamp.error.no_such_procedure", ["x"], {"k": 1}),
    F.Publish(1, {"acknowledge": True}, "com.a", [1, "two"], {"three": 3}),
    F.Published(1, 99),
    F.Subscribe(2, {"match": "prefix"}, "com"),
    F.Subscribed(2, 5),
    F.Unsubscribe(3, 5),
    F.Unsubscribed(3),
    F.Unsubscribed(0, {"subscription": 5, "reason": "gone"}),
    F.Event(5, 99, {"topic": "com.a"}, [b"\x00\x01"]),
    F.Call(4, {"timeout": 1000}, "com.add", [2, 3]),
    F.Cancel(4, {"mode": "kill"}),
    F.Result(4, {"progress": True}, [5]),
    F.Register(5, {}, "com.add"),
    F.Registered(5, 6),
    F.Unregister(6, 6),
    F.Unregistered(6),
    F.Invocation(1, 6, {}, [2, 3]),
    F.Interrupt(1, {"mode": "kill"}),
    F.Yield(1, {}, [5], {"k": "v"}),
]


@pytest.mark.parametrize("serializer", list(Serializer))
@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(serializer: Serializer, msg: Any) -> None:
    codec = WampCodec(serializer)
    wire = codec.encode(msg)
    assert isinstance(wire, bytes if serializer.binary else str)
    assert codec.decode(wire) == msg


def test_wire_forms_are_the_specs_lists() -> None:
    codec = WampCodec(Serializer.JSON)
    assert codec.encode(F.Subscribed(1, 2)) == "[33,1,2]"
    # an empty payload is left out; kwargs alone travel with an empty args list
    assert codec.encode(F.Result(5, {})) == "[50,5,{}]"
    assert codec.encode(F.Result(5, {}, [], {"a": 1})) == '[50,5,{},[],{"a":1}]'
    assert codec.decode('[48,6,{"timeout":2},"com.example.nothere"]') == F.Call(
        6, {"timeout": 2}, "com.example.nothere")


def test_json_binary_convention_both_ways() -> None:
    codec = WampCodec(Serializer.JSON)
    wire = codec.encode(F.Event(1, 2, {}, [b"\x00\xffhi"], {"k": [b"x"]}))
    assert isinstance(wire, str)
    items = json.loads(wire)
    assert items[4] == ["\x00" + base64.b64encode(b"\x00\xffhi").decode()]
    assert items[5] == {"k": ["\x00eA=="]}
    assert codec.decode(wire) == F.Event(1, 2, {}, [b"\x00\xffhi"], {"k": [b"x"]})


def test_msgpack_keeps_bin_and_str_apart() -> None:
    codec = WampCodec(Serializer.MSGPACK)
    wire = codec.encode(F.Publish(1, {}, "t", ["s", b"b"]))
    assert msgpack.unpackb(wire, raw=False) == [16, 1, {}, "t", ["s", b"b"]]


@pytest.mark.parametrize("wire", [
    "", "{}", "[]", "[999]", '["1"]', "[1]", '[1,"realm"]', '[1,"realm",[]]',
    '[1,5,{}]', '[33,true,2]', '[33,1,2,3]', '[33,-1,2]', "[33,1,9007199254740993]",
    '[16,1,{},"t",{}]', '[16,1,{},"t",[],[]]', '[16,1,{},"t",[],{},1]',
    '[16,1,{},1]', "[16,1,{},\"t\",[NaN]]", '[36,1,2,{},["\\u0000!!"]]',
    "[" * 100000, '[6,{},"x",1]',
])
def test_malformed_is_a_protocol_violation(wire: str) -> None:
    with pytest.raises(F.ProtocolViolation):
        WampCodec(Serializer.JSON).decode(wire)


def test_msgpack_in_a_text_frame_and_garbage_are_violations() -> None:
    codec = WampCodec(Serializer.MSGPACK)
    for wire in ("[1]", b"\xc1", b"\x91", msgpack.packb([33, 1, 2]) + b"\x00"):
        with pytest.raises(F.ProtocolViolation):
            codec.decode(wire)


def test_size_limit_is_checked_before_decoding() -> None:
    codec = WampCodec(Serializer.JSON, max_message_size=10)
    with pytest.raises(F.ProtocolViolation, match="over the limit"):
        codec.decode('[16,1,{},"com.a",["long"]]')


def test_to_list_from_list_are_inverse_on_samples() -> None:
    for msg in SAMPLES:
        assert from_list(to_list(msg)) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(sorted(F.MessageType)), json_values), max_size=7))
def test_fuzz_lists_only_protocol_violation_escapes(items: list[Any]) -> None:
    for serializer in Serializer:
        codec = WampCodec(serializer)
        wire: bytes | str = (json.dumps(items) if serializer is Serializer.JSON
                             else msgpack.packb(items, use_bin_type=True))
        try:
            msg = codec.decode(wire)
        except F.ProtocolViolation:
            continue
        assert codec.decode(codec.encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_bytes_only_protocol_violation_escapes(data: bytes) -> None:
    for serializer in Serializer:
        try:
            WampCodec(serializer).decode(data)
        except F.ProtocolViolation:
            pass
