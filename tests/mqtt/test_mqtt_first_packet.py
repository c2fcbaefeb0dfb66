"""A connection whose first packet is not CONNECT is closed at once [MQTT-3.1.0-1], as
Mosquitto does, not after the handshake timeout (10 s by default): whether the first bytes
are a whole other packet, the start of one (only its fixed header), or no MQTT at all.

Real sockets on the broker fixture's MQTT port; the receive timeout (2 s) is well under
the handshake timeout, so a close seen within it is the broker's answer to the bytes."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from protocols.mqtt.codec import encode_packet
from protocols.mqtt.frames import MQTT_311, Connect, PingReq, Publish, Subscribe, Subscription

RECV_TIMEOUT = 2.0  # well under limits.handshake_timeout (10 s)


def closed_by_broker(broker: Any, first: bytes) -> bytes:
    """Send `first` on a fresh connection; return what the broker sent before closing.
    Fails when the connection is still open after RECV_TIMEOUT."""
    port = broker.ports["mqtt"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(RECV_TIMEOUT)
        s.sendall(first)
        got = b""
        while True:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                pytest.fail(f"still open {RECV_TIMEOUT} s after {first[:16]!r}")
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


def publish_packet() -> bytes:
    return encode_packet(Publish(topic="t/x", payload=b"hello", qos=0), MQTT_311)


@pytest.mark.parametrize("first", [
    pytest.param(publish_packet(), id="publish"),
    pytest.param(encode_packet(PingReq(), MQTT_311), id="pingreq"),
    pytest.param(b"\x82", id="subscribe-fixed-header-byte-only"),
    pytest.param(publish_packet()[:3], id="partial-publish"),
    pytest.param(b"\x30\xff\xff\xff\x7f", id="publish-of-256MiB-announced"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
    pytest.param(b"AMQP\x00\x00\x09\x01", id="amqp-header"),
    pytest.param(b"\x00\x00\x00\x00", id="zero-bytes"),
    pytest.param(b"\xf0\x00", id="reserved-type-15"),
])
def test_first_packet_not_connect_is_closed_at_once(broker: Any, first: bytes) -> None:
    assert closed_by_broker(broker, first) == b""  # no CONNACK: just closed


def test_subscribe_before_connect_is_closed(broker: Any) -> None:
    packet = encode_packet(Subscribe(1, (Subscription("a/#", 1),)), MQTT_311)
    assert closed_by_broker(broker, packet) == b""


def test_connect_split_byte_by_byte_is_still_served(broker: Any) -> None:
    """The check looks at the first byte only: a CONNECT that arrives in pieces is fine."""
    connect = encode_packet(Connect(client_id="first-packet-ok", username="guest",
                                    password=b"guest", protocol_level=MQTT_311,
                                    clean_start=True, keepalive=30), MQTT_311)
    port = broker.ports["mqtt"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(connect[:1])
        for b in connect[1:]:
            s.sendall(bytes((b,)))
        connack = s.recv(4)
        assert connack[:1] == b"\x20" and connack[-1:] == b"\x00"  # CONNACK, accepted
