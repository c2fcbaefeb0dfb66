"""An MQTT client sends one SUBSCRIBE with 10,000 topic filters (then disconnects, which
removes them all again), while the well-behaved pika pair streams; a message published
to one of the filters afterwards still reaches the client."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import pika
from abuse_kit import (
    SteadyStream,
    check_stream,
    config,
    connect,
    mqtt_connect_packet,
    remaining_length,
    still_serving,
)

FILTERS = 10_000


def read_packet(sock: Any) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body)."""
    first = sock.recv(1)
    assert first, "closed by the broker"
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "closed by the broker"
        body += chunk
    return first[0], body


def test_subscribe_with_ten_thousand_filters(configured_broker: Callable[[str], Any],
                                             unique: Callable[[str], str],
                                             figures: Callable[..., None]) -> None:
    broker = configured_broker(config(max_packet_size=1_048_576))
    prefix = unique("many")
    body = struct.pack(">H", 1)
    for n in range(FILTERS):
        topic = f"{prefix}/{n}/+".encode()
        body += struct.pack(">H", len(topic)) + topic + b"\x01"
    subscribe = b"\x82" + remaining_length(len(body)) + body
    with SteadyStream(broker.url, unique("steady")) as steady:
        sock = connect(broker.ports["mqtt"])
        sock.sendall(mqtt_connect_packet(4, prefix))
        assert read_packet(sock) == (0x20, b"\x00\x00")
        started = time.monotonic()
        sock.sendall(subscribe)
        kind, suback = read_packet(sock)
        suback_s = time.monotonic() - started
        # one of them works: a pika publish to amq.topic reaches the MQTT client
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.channel().basic_publish("amq.topic", f"{prefix}.9999.x", b"hit")
        conn.close()
        delivered_first, delivered = read_packet(sock)
        sock.sendall(b"\xe0\x00")  # DISCONNECT: the clean session's 10,000 bindings go
        sock.close()
        result = steady.result()
    figures("SUBSCRIBE with 10,000 filters", packet_bytes=len(subscribe),
            suback_seconds=round(suback_s, 2))
    assert kind == 0x90 and suback[:2] == b"\x00\x01"
    assert suback[2:] == b"\x01" * FILTERS  # every filter granted QoS 1
    assert delivered_first >> 4 == 3 and delivered.endswith(b"hit")
    check_stream(result, figures, "SUBSCRIBE with 10,000 filters")
    still_serving(broker, unique("after-subscribe"))
