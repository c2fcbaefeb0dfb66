"""The benchmark's load generator (bench/loadgen.py) counts what it is sent correctly: its
cheap counters split at every offset, and whole runs against the session broker and the
trivial sink (bench/sink.py) deliver exactly what was published."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402


def _feed_split(consumer: loadgen.Consumer, stream: bytes, at: int) -> None:
    consumer.on_data(stream[:at])
    consumer.on_data(stream[at:])


@pytest.mark.parametrize("proto", ["amqp", "mqtt", "stomp"])
def test_counters_at_every_split(proto: str) -> None:
    body = loadgen.payload(130)
    unit = {"amqp": loadgen.amqp_deliver_frames(body),
            "mqtt": loadgen.mqtt_publish("a/b", body, 1, 7),
            "stomp": loadgen.stomp_message("/queue/q", body)}[proto]
    stream = unit * 3
    a, b = socket.socketpair()
    with a, b:
        for at in range(len(stream) + 1):
            c: loadgen.Consumer = {"amqp": lambda: loadgen.AmqpConsumer(a, manual=True),
                                   "mqtt": lambda: loadgen.MqttConsumer(a, qos=1),
                                   "stomp": lambda: loadgen.StompConsumer(a)}[proto]()
            _feed_split(c, stream, at)
            assert c.received == 3, at
            if proto == "mqtt":  # one PUBACK per QoS 1 PUBLISH, with its packet id
                assert bytes(c.out) == b"\x40\x02\x00\x07" * 3
            if proto == "amqp":  # manual ack: multiple, up to the running count
                assert c.out.endswith(b"\x00\x3c\x00\x50" + (3).to_bytes(8, "big") + b"\x01\xce")


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), json.dumps(spec)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


BASE = {"mode": "throughput", "host": "127.0.0.1", "size": 100, "messages": 2000,
        "deadline": 20}


@pytest.mark.parametrize("proto,extra", [
    ("amqp", {"ack": "manual", "prefetch": 50}),
    ("amqp", {"fanout": 3, "confirm": True, "persistent": True, "window": 100}),
    ("mqtt", {"qos": 1, "window": 50, "subscribers": 2, "wildcard": True}),
    ("mqtt", {"qos": 0, "login": ["guest", "guest"]}),  # as against gateway --backend rabbitmq
    ("stomp", {}),
])
def test_runs_against_the_broker(broker: Any, unique: Any, proto: str,
                                 extra: dict[str, Any]) -> None:
    spec = {**BASE, **extra, "proto": proto, "port": broker.ports[proto],
            "tag": unique("lg")}
    result = _run(spec)
    expected = 2000 * extra.get("fanout", extra.get("subscribers", 1))
    assert result["status"] == "complete", result
    assert result["received"] == expected and result["ok"]


def test_sink_streams_exactly_what_was_asked() -> None:
    sink = subprocess.Popen([sys.executable, str(BENCH / "sink.py")], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert sink.stdout is not None
        ports = json.loads(sink.stdout.readline())
        for proto in ("amqp", "mqtt", "stomp"):
            result = _run({**BASE, "proto": "sink", "sink_proto": proto, "tag": "s",
                           "subscribers": 2, "publishers": 3,
                           "discard_port": ports["discard"], "stream_port": ports["stream"]})
            assert result["status"] == "complete" and result["received"] == 4000, result
            assert result["sent"] == 2000
    finally:
        sink.terminate()
        sink.wait(10)
