"""WAMP args/kwargs <-> body + content type + marker, both ways; topics and patterns."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.wamp.mapping import (
    CT_BINARY,
    CT_JSON,
    CT_TEXT,
    decode_payload,
    encode_payload,
    subscription_binding,
    valid_uri,
)


@pytest.mark.parametrize(("args", "kwargs", "body", "ctype", "marker"), [
    (["hello"], None, b"hello", CT_TEXT, None),
    ([b"\x00\xff"], None, b"\x00\xff", CT_BINARY, None),
    ([30], None, b"30", CT_JSON, None),
    ([21.5], None, b"21.5", CT_JSON, None),
    ([{"a": [1, None, True]}], None, b'{"a":[1,null,true]}', CT_JSON, None),
    ([], {"k": "v"}, b'{"k":"v"}', CT_JSON, "kwargs"),
    ([1, "two"], None, b'{"args":[1,"two"],"kwargs":{}}', CT_JSON, "envelope"),
    (["x"], {"k": 1}, b'{"args":["x"],"kwargs":{"k":1}}', CT_JSON, "envelope"),
    (None, None, b"", None, None),
])
def test_wamp_to_body_and_back(args: Any, kwargs: Any, body: bytes, ctype: str | None,
                               marker: str | None) -> None:
    encoded = encode_payload(args, kwargs)
    assert (encoded.data, encoded.content_type, encoded.marker) == (body, ctype, marker)
    back = decode_payload(encoded.data, encoded.content_type, encoded.marker, True)
    assert back == (args, kwargs)


def test_nested_bytes_survive_a_round_trip_between_wamp_peers() -> None:
    body = encode_payload([1, b"\x01"], {"b": b"\x02"})
    assert decode_payload(body.data, body.content_type, body.marker, True) == (
        [1, b"\x01"], {"b": b"\x02"})


@pytest.mark.parametrize(("body", "ctype", "expected"), [
    (b"832040", None, [832040]),  # the tutorial's reply: no content type, parses as JSON
    (b"plain words", None, ["plain words"]),
    (b"\xff\xfe", None, [b"\xff\xfe"]),
    (b'{"t": 3}', "application/json", [{"t": 3}]),
    (b"30", "text/plain", ["30"]),
    (b"not json", "application/json", ["not json"]),
    (b"abc", "application/octet-stream", [b"abc"]),
    (b'{"x":1}', "application/vnd.api+json", [{"x": 1}]),
])
def test_bodies_from_other_protocols(body: bytes, ctype: str | None, expected: Any) -> None:
    assert decode_payload(body, ctype, None, False) == (expected, None)


def test_binary_strings_from_non_wamp_json_are_left_alone() -> None:
    assert decode_payload(b'["\\u0000AAEC"]', CT_JSON, None, False) == ([["\x00AAEC"]], None)


def test_unencodable_payload_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        encode_payload([float("nan")], None)


@pytest.mark.parametrize(("topic", "match", "key", "accepts", "refuses"), [
    ("com.example.temp", "exact", "com.example.temp", ["com.example.temp"], []),
    ("com..temp", "wildcard", "com.*.temp", ["com.x.temp"], []),
    ("com.ex", "prefix", "com.#", ["com.ex", "com.example.x", "com.ex.y"], ["com.other"]),
    ("com", "prefix", "#", ["com", "company"], ["org.com"]),
])
def test_subscription_bindings(topic: str, match: str, key: str, accepts: list[str],
                               refuses: list[str]) -> None:
    binding = subscription_binding(topic, match)
    assert binding.key == key
    assert all(binding.accepts(rk) for rk in accepts)
    assert not any(binding.accepts(rk) for rk in refuses)


def test_uri_rules() -> None:
    assert valid_uri("com.example.x") and valid_uri("rpc_queue") and valid_uri("Com-x.Y!")
    for bad in ("", "com..x", ".com", "com.", "a b", "com.#", "com.*.x"):
        assert not valid_uri(bad), bad
    assert valid_uri("com..x", allow_empty=True) and valid_uri("com.", allow_empty=True)
