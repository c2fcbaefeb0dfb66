"""WAMP fuzzed through the real session, with both serializers: lists of random shapes for
every message type (right code, random element count and types), random values where the
schema wants ids, dicts and URIs, MessagePack's own types (bin, ext, big integers, maps
with non-string keys) and raw bytes, before and after HELLO. Well-formed random sessions
are in tests/wamp/test_wamp_session_fuzz.py, codec-only fuzzing in test_wamp_codec.py; the
oracle is fuzz/oracles.py."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from fuzz_profile import fuzz
from hypothesis import given
from hypothesis import strategies as st
from oracles import WAMP_HELLO, check_wamp, check_wamp_any, run_wamp, wamp_split, wamp_wire

from protocols.wamp.codec import SCHEMA, Serializer

SERIALIZERS = st.sampled_from(list(Serializer))
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | st.text(max_size=6) | st.sampled_from(
               ["com.a", "com..b", "", "wamp.error.x", "com.*", "\x00AAAA", "\x00!!",
                "a b", "rpc_queue", "com.p"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4) | st.sampled_from(["match", "invoke", "timeout", "acknowledge",
                                           "exclude", "eligible", "roles", "authmethods"]),
    inner, max_size=3), max_leaves=6)
ids = st.integers(0, 8) | st.integers(-2, 2**53 + 2)


@st.composite
def shaped(draw: st.DrawFn) -> list[Any]:
    """A message with a real code and its schema's shape, each element kept with a good
    chance or replaced by a random value, then cut short or padded."""
    code = draw(st.sampled_from(sorted(SCHEMA)))
    _, kinds, tail = SCHEMA[code]
    good = {"id": ids, "dict": st.dictionaries(st.text(max_size=5), values, max_size=3),
            "uri": st.sampled_from(["com.a", "com.p", "com", "wamp.close.normal", "x..y", ""]),
            "str": st.text(max_size=5), "int": st.sampled_from([16, 32, 48, 64, 68, 0, -1])}
    items: list[Any] = [code]
    for kind in kinds:
        items.append(draw(good[kind] if draw(st.integers(0, 4)) else values))
    if tail:
        items += draw(st.lists(values, max_size=3))
    cut = draw(st.integers(0, len(items) + 1))
    return items[:cut] if draw(st.integers(0, 5)) == 0 else items


msgpack_values = st.recursive(
    st.binary(max_size=6) | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.none()
    | st.text(max_size=4) | st.builds(msgpack.ExtType, st.integers(0, 127),
                                      st.binary(max_size=4)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.integers(0, 3) | st.binary(max_size=2) | st.text(max_size=2), inner, max_size=2),
    max_leaves=6)


@fuzz(120)
@given(SERIALIZERS, st.lists(shaped(), min_size=1, max_size=4), st.booleans())
def test_random_shapes_of_every_message_type(serializer: Serializer,
                                             messages: list[list[Any]], join: bool) -> None:
    run_wamp(serializer, [wamp_wire(serializer, m) for m in messages], join=join)


@fuzz(80)
@given(st.lists(st.lists(msgpack_values, max_size=5) | shaped(), min_size=1, max_size=3),
       st.booleans())
def test_msgpack_types_json_cannot_carry(messages: list[list[Any]], join: bool) -> None:
    wire = [msgpack.packb(m, use_bin_type=True) for m in messages]
    run_wamp(Serializer.MSGPACK, wire, join=join)


@fuzz(150)
@given(SERIALIZERS, st.lists(st.binary(max_size=80) | st.sampled_from(
    [b"[", b"[]", b"{}", b"[1,", b'[1,"/",{}]', b"\x91\x01", b"\xc1", b"\x93\x01\xc0\x80",
     b"[1e999]", b"[NaN]", b'["\\u0000AA=="]', b"\xdd\xff\xff\xff\xff"]), min_size=1,
    max_size=5), st.booleans())
def test_raw_bytes_as_messages(serializer: Serializer, parts: list[bytes], join: bool) -> None:
    messages: list[bytes | str] = (list(parts) if serializer is Serializer.MSGPACK
                                   else [p.decode("utf-8", "replace") for p in parts])
    run_wamp(serializer, messages, join=join)


@pytest.mark.parametrize("depth", [10, 600, 100_000])
def test_deeply_nested_arguments(depth: int) -> None:
    """PUBLISH with Arguments nested `depth` lists deep, written by hand (the encoders
    have recursion limits of their own): past the decoders' limits it is a violation."""
    packed = b"\x95\x10\x01\x80\xa5com.a" + b"\x91" * depth + b"\x90"
    run_wamp(Serializer.MSGPACK, [packed], join=True)
    text = '[16,1,{},"com.a",' + "[" * depth + "]" * depth + "]"
    run_wamp(Serializer.JSON, [text], join=True)


@fuzz(120)
@given(st.binary(min_size=1, max_size=300), SERIALIZERS)
def test_the_atheris_entry_reads_any_input(data: bytes, serializer: Serializer) -> None:
    check_wamp(data, serializer)


def test_json_wire_is_text_and_msgpack_wire_is_binary() -> None:
    """The oracle feeds each serializer what its WebSocket messages carry."""
    assert isinstance(wamp_wire(Serializer.JSON, [1]), str)
    assert json.loads(wamp_wire(Serializer.JSON, [1, "/", {}])) == [1, "/", {}]
    assert isinstance(wamp_wire(Serializer.MSGPACK, [1]), bytes)


# -- crashes found by fuzz/fuzz_wamp.py, as regression tests -----------------------------------

# JSON, after HELLO: the session registers com.p ("roundrobin"), calls it (so it is its own
# callee), then sends a message that does not parse. Its ABORT was followed by what leaving
# said to itself: the canceled call's ERROR (then, with only that fixed, an INTERRUPT).
CRASH_CALL_TO_ITSELF = bytes.fromhex(
    "015b33322c20312c207b7d2c2022636f6d2e61225dfffe5b33322c20322c207b226d61746368223a20227769"
    "6c6463617264227d2c2022636f6d2e2e62225dfffe5b31362c20332c207b2261636b6e6f776c65646765223a"
    "20747275652c20226578636c7564655f6d65223a2066616c73657d2c2022636f6d2e61222c205b302c202278"
    "225d2c207b226b223a207b226e223a206e756c6c7d7d5dfffe5b33342c20312c20315dfffe5b36342c20342c"
    "207b22696e766f6b65223a2022726f756e64726f62696e227d2c20226f636d2e70225dfffe5b34382c20352c"
    "207b2274696d65919174223a203130302c2022726563656976655f70726f6772657373223a20747275657d2c"
    "2022636d2e61225dfffe5b33322c20322c207b226d61746368223a2022776961646c646372227d2c2022636f"
    "6d2e2e62225dfffe5b31362c20332c207b2261636b6e6f776c65646765223a20747275652c20226578636c75"
    "64655f6d65223a2066616c73657d2c2022636f6d2e61222c205b302c202278225d2c207b226b223a207b226e"
    "223a206e756c6c7d7d5dfffe5b33342c20312c20315dfffe5b36342c20342c207b22696e766f6b65223a2022"
    "726f756e64726f62696e227d2c20226f636d2e70225dfffe5b34382c20352c207b2274696d65919174223a20"
    "31307d2c20226f636d2e70225dfffe5b34382c20352c207b2274696d65919174223a203130302c2022726563"
    "656976655f70726f6772657373223a2074727565626f726f6d2e70222c205b315d5dfffe5b34392c20352c20"
    "7b226d72726f722e61626f72ffff5d")


def test_crash_nothing_is_sent_after_the_abort() -> None:
    check_wamp_any(CRASH_CALL_TO_ITSELF)
    from oracles import WampWorld

    world = WampWorld()
    session = world.session(Serializer.JSON)
    for message in [wamp_wire(Serializer.JSON, WAMP_HELLO), *wamp_split(
            Serializer.JSON, CRASH_CALL_TO_ITSELF[1:])]:
        session.receive_message(message)
    last = json.loads(session.messages_to_send()[-1])
    assert last[0] == 3 and last[2] == "wamp.error.protocol_violation"
    assert session.closed
