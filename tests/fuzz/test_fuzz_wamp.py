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
from oracles import check_wamp, run_wamp, wamp_wire

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
