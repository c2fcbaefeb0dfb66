"""The store's value encoding: exact round trips for every AMQP table type, and only
`DecodeError` out of damaged input."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store.serial import DecodeError, decode, encode


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (tuples come back as lists, NaN is NaN,
    a datetime keeps its instant and whether it was naive)."""
    if isinstance(a, tuple):
        a = list(a)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, Decimal):
        return (a.is_nan() and b.is_nan() and a.is_snan() == b.is_snan()) or str(a) == str(b)
    if isinstance(a, datetime):
        return a == b and (a.tzinfo is None) == (b.tzinfo is None)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def roundtrip(v: Any) -> Any:
    return decode(encode(v))


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1,
        10**40, -(10**40), 0.0, -0.0, 1.5, -2.25e-300, math.inf, -math.inf, math.nan,
        "", "héllo wörld", "\u0000", "\ud800", "☃" * 1000, b"", b"\x00\xff" * 100,
        Decimal("0"), Decimal("-1.50"), Decimal("1E+10"), Decimal("3.14159265358979323846"),
        Decimal("-0"), Decimal("NaN"), Decimal("Infinity"),
        datetime(2024, 2, 29, 12, 30, 45, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 30, 45),  # naive, as AMQP decoders often give
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2020, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=5))),
        [], [1, "a", None, [b"x", [True]]], (1, 2),
        {}, {"a": 1, "b": {"c": [1, {"d": Decimal("2.5")}], "e": b"\x01"}},
        {"x-death": [{"count": 2, "reason": "expired", "queue": "q",
                      "time": datetime(2024, 1, 1, tzinfo=UTC), "routing-keys": ["a", "b"]}]},
    ],
)
def test_roundtrip_examples(value: Any) -> None:
    assert same(value, roundtrip(value)), (value, roundtrip(value))


def test_types_are_kept_apart() -> None:
    out = roundtrip([1, True, 1.0, "1", b"1", Decimal("1")])
    assert [type(x) for x in out] == [int, bool, float, str, bytes, Decimal]


def test_bytearray_and_memoryview_come_back_as_bytes() -> None:
    assert roundtrip(bytearray(b"ab")) == b"ab"
    assert roundtrip(memoryview(b"cd")) == b"cd"


def test_dict_keys_become_strings_and_order_is_kept() -> None:
    assert list(roundtrip({"z": 1, "a": 2, 3: 4})) == ["z", "a", "3"]


def test_unsupported_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode({"a": object()})
    with pytest.raises(TypeError):
        encode({1, 2})


@pytest.mark.parametrize(
    "data",
    [b"", b"Z", b"i\x00", b"s\x00\x00\x00\x05abc", b"m\x00\x00\x00\x01", b"l\x00\x00\x00\x02N",
     b"NN", b"s\x00\x00\x00\x01\xff", b"d\x00\x00\x00\x03abc",
     b"t\x00\x00\x00\x00\x00\x00\x00\x00\x07",
     b"t\x7f\xff\xff\xff\xff\xff\xff\xff\x01",
     b"m\x00\x00\x00\x01iAAAAAAAAN", b"t\x00"],
)
def test_damaged_input_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


# -- properties ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(st.characters(codec=None, exclude_categories=())),
    st.binary(),
    st.decimals(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(values)
def test_roundtrip_property(value: Any) -> None:
    assert same(value, roundtrip(value))


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_truncated_input_is_a_decode_error(value: Any, data: st.DataObject) -> None:
    raw = encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(DecodeError):
        decode(raw[:cut])


@settings(max_examples=200, deadline=None)
@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_a_decode_error(value: Any, extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(encode(value) + extra)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64) | values.map(encode).flatmap(
    lambda raw: st.tuples(st.just(raw), st.integers(0, max(len(raw) - 1, 0)),
                          st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])))
def test_garbage_only_raises_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass
