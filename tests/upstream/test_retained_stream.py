"""The retained stream's logic without RabbitMQ (gateway/upstream/retained.py): what a
retained change appends (through the real UpstreamBackend, with its positions), how the
records are applied in the stream's order (sets, clears, expiry, refreshes that crossed a
newer write), which live messages are due for a refresh, and the config keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load_config
from gateway.core.durable import Durable
from gateway.store import serial
from gateway.upstream.backend import UpstreamBackend, upstream_name
from gateway.upstream.retained import RetainedStream
from protocols.mqtt.frames import NO_PROPERTIES
from protocols.mqtt.registry import MQTTRegistry
from protocols.mqtt.retain import Retained, to_value

NOW = 1_000_000.0


class Node:
    """One gateway node's retained parts: backend (the store), registry, stream."""

    def __init__(self, refresh: float = 100.0) -> None:
        self.now = NOW
        self.backend = UpstreamBackend(("amqp://u:p@127.0.0.1:1/%2F",), "/",
                                       clock=lambda: self.now)
        self.durable = Durable(self.backend)
        self.registry = MQTTRegistry(self.durable, 1000, 1 << 20)
        self.stream = RetainedStream(refresh=refresh, max_age="1h", clock=lambda: self.now)
        self.stream.attach(self.registry)
        self.backend.retained = self.stream

    def appended(self) -> list[dict[str, Any]]:
        """The records the backend would append, in order (its queued operations)."""
        return [serial.decode(op.args["body"]) for op in self.backend._ops
                if op.kind == "publish" and op.args["routing_key"] == self.stream.name]

    def topics(self) -> dict[str, bytes]:
        return {m.topic: m.payload for m in self.registry.retained("/").all()}


def record(kind: str, topic: str, payload: bytes | None = None, *, at: float = NOW,
           expires_at: float | None = None, origin: int | None = None) -> dict[str, Any]:
    value = (to_value(Retained(topic, payload, 1, NO_PROPERTIES, expires_at))
             if payload is not None else None)
    out: dict[str, Any] = {"kind": kind, "vhost": "/", "topic": topic, "value": value,
                           "at": at}
    if origin is not None:
        out["origin"] = origin
    return out


def test_a_retained_set_and_clear_are_appended_with_positions_the_puback_waits_for() -> None:
    node = Node()
    store = node.registry.retained("/")
    assert store.shared
    before = node.durable.position
    assert store.set(Retained("a/b", b"v1", 1, NO_PROPERTIES))
    position = node.durable.since(before)
    assert position == before + 1 and not node.durable.is_durable(position)
    store.set(Retained("a/b", b"", 0, NO_PROPERTIES))  # an empty payload clears
    # a clear for a topic this node never held is appended as well (another node may)
    store.clear("never/held")
    got = node.appended()
    assert [(r["kind"], r["topic"]) for r in got] == [
        ("set", "a/b"), ("clear", "a/b"), ("clear", "never/held")]
    assert got[0]["value"][0] == b"v1"
    assert node.topics() == {}
    op = node.backend._ops[0]
    assert op.args["properties"].content_type == "application/x-gateway-retained"
    assert op.args["properties"].delivery_mode == 2


def test_records_apply_in_the_streams_order_on_every_node() -> None:
    a, b = Node(), Node()
    # node A set x=1 and node B set x=2 at once; the stream holds A's first
    a.registry.retained("/").set(Retained("x", b"1", 1, NO_PROPERTIES))
    b.registry.retained("/").set(Retained("x", b"2", 1, NO_PROPERTIES))
    stream = [record("set", "x", b"1"), record("set", "x", b"2"), record("set", "y", b"y")]
    for node in (a, b):
        for offset, rec in enumerate(stream):
            node.stream.apply(rec, offset)
        assert node.topics() == {"x": b"2", "y": b"y"}  # the last in the stream wins
    for node in (a, b):
        node.stream.apply(record("clear", "x"), 3)
        assert node.topics() == {"y": b"y"}


def test_an_expired_record_is_dropped_and_expiry_drops_are_not_written() -> None:
    node = Node()
    node.stream.apply(record("set", "e", b"gone", expires_at=NOW - 1), 0)
    node.stream.apply(record("set", "f", b"soon", expires_at=NOW + 5), 1)
    assert node.topics() == {"f": b"soon"}
    node.now = NOW + 10
    assert node.registry.retained("/").match("#", node.now) == []
    assert node.appended() == []  # each node drops an expired message on its own


def test_a_refresh_counts_only_where_nothing_newer_came_first() -> None:
    node = Node()
    node.stream.apply(record("set", "t", b"old"), 10)
    node.stream.apply(record("set", "t", b"new"), 11)
    # a refresh of offset 10 that crossed the newer set: nothing changes
    node.stream.apply(record("refresh", "t", b"old", origin=10), 12)
    assert node.topics() == {"t": b"new"}
    # a refresh of the current value: the same value
    node.stream.apply(record("refresh", "t", b"new", origin=11), 13)
    assert node.topics() == {"t": b"new"}
    # a node that starts after offset 10 and 11 left the stream: the refresh gives it
    late = Node()
    late.stream.apply(record("refresh", "t", b"old", origin=10), 12)
    late.stream.apply(record("refresh", "t", b"new", origin=11), 13)
    assert late.topics() == {"t": b"new"}
    # a clear, then a refresh of what it cleared: still cleared
    node.stream.apply(record("clear", "t"), 14)
    node.stream.apply(record("refresh", "t", b"new", origin=11), 15)
    assert node.topics() == {}
    # this node's own write on its way: a refresh from another node does not undo it
    node.registry.retained("/").set(Retained("u", b"mine", 1, NO_PROPERTIES))
    node.stream.apply(record("refresh", "u", b"theirs", origin=3), 16)
    assert node.topics() == {"u": b"mine"}


def test_live_messages_written_long_ago_are_due_for_a_refresh() -> None:
    node = Node(refresh=100)
    node.stream.apply(record("set", "live", b"L", at=NOW - 200), 5)
    node.stream.apply(record("set", "fresh", b"F", at=NOW - 10), 6)
    node.stream.apply(record("set", "gone", b"G", at=NOW - 200, expires_at=NOW - 1), 7)
    due = [serial.decode(r["body"]) for r in node.stream.due(NOW)]
    assert [(r["kind"], r["topic"], r["origin"], r["value"][0]) for r in due] == [
        ("refresh", "live", 5, b"L")]
    assert node.stream.due(NOW) == []  # not twice before it comes back
    # what another node reads of it: the same value
    other = Node()
    other.stream.apply(record("set", "live", b"L", at=NOW - 200), 5)
    other.stream.apply(due[0], 8)
    assert other.topics() == {"live": b"L"}


def test_server_named_queues_have_a_gateway_prefix_upstream() -> None:
    assert upstream_name("amq.gen-AbC") == "gateway.gen-AbC"
    assert upstream_name("orders") == "orders"
    assert upstream_name("mqtt-subscription-xqos1") == "mqtt-subscription-xqos1"


def test_the_retained_stream_keys(tmp_path: Path) -> None:
    rabbitmq = load_config().backend.rabbitmq
    assert (rabbitmq.retained_stream, rabbitmq.retained_max_age, rabbitmq.retained_max_bytes,
            rabbitmq.retained_segment_bytes, rabbitmq.retained_refresh) == (
        "gateway.retained", "7D", 0, 4194304, 86400)
    stream = RetainedStream(max_age="7D", max_bytes=10**9, segment_bytes=1 << 20,
                            clock=lambda: NOW)
    assert stream.arguments() == {"x-queue-type": "stream", "x-max-age": "7D",
                                  "x-max-length-bytes": 10**9,
                                  "x-stream-max-segment-size-bytes": 1 << 20}
    path = tmp_path / "gateway.toml"
    for text, key in (('retained_max_age = "7 days"', "retained_max_age"),
                      ('retained_max_age = "1h"', "retained_refresh"),  # 86400 >= 3600
                      ('retained_stream = "amq.retained"', "retained_stream")):
        path.write_text(f"[backend.rabbitmq]\n{text}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert key in str(caught.value)
    path.write_text('[backend.rabbitmq]\nretained_max_age = ""\nretained_refresh = 0\n')
    assert load_config(path).backend.rabbitmq.retained_max_age == ""
