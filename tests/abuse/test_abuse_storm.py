"""A connection storm: 1,000 connects and disconnects across the AMQP, MQTT, STOMP and
HTTP ports (every tenth a full pika login), while a well-behaved pika pair streams."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pika
from abuse_kit import (
    SteadyStream,
    bounded,
    check_stream,
    config,
    connect,
    mqtt_connect_packet,
    still_serving,
)

STORM = 1000
GREETINGS = {
    "amqp": b"AMQP\x00\x00\x09\x01",
    "mqtt": mqtt_connect_packet(),
    "stomp": b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00",
    "http": b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


def test_connection_storm(configured_broker: Callable[[str], Any], unique: Callable[[str], str],
                          figures: Callable[..., None]) -> None:
    broker = configured_broker(config())
    names = list(GREETINGS)
    done = logins = 0
    started = time.monotonic()
    with SteadyStream(broker.url, unique("steady")) as steady, bounded(60) as more:
        while done < STORM and more():
            if done % 10 == 0:
                pika.BlockingConnection(pika.URLParameters(broker.url)).close()
                logins += 1
            else:
                name = names[done % len(names)]
                sock = connect(broker.ports[name])
                sock.sendall(GREETINGS[name])
                if done % 3 == 0:  # some wait for the answer, some hang up at once
                    try:
                        sock.recv(1024)
                    except (TimeoutError, ConnectionResetError):
                        pass
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                b"\x00\x00\x00\x00" if done % 2 else b"\x00" * 8)
                sock.close()
            done += 1
        elapsed = time.monotonic() - started
        result = steady.result()
    figures("connection storm", connections=done, pika_logins=logins,
            seconds=round(elapsed, 1))
    assert done == STORM
    check_stream(result, figures, "connection storm")
    still_serving(broker, unique("after-storm"))
