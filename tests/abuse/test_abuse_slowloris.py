"""Slowloris on every port: clients that connect and send nothing, or dribble a valid
looking handshake a byte at a time, are closed once `limits.handshake_timeout` (1 s here)
has passed; a WebSocket that completed its upgrade but never logs in is closed too."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from abuse_kit import (
    PORTS,
    SteadyStream,
    bounded,
    check_stream,
    config,
    connect,
    still_serving,
    websocket_frame_header,
    websocket_open,
    websocket_upgrade,
)

PER_KIND = 3  # silent and dribbling clients per port
DRIBBLE_EVERY = 0.1  # seconds between bytes
HANDSHAKE_TIMEOUT = 1.0
CLOSED_WITHIN = 5.0  # generous: the timeout plus scheduling on a loaded machine

HANDSHAKES = {
    "amqp": b"AMQP\x00\x00\x09\x01" + b"\x01\x00\x00\x00\x00\x01\x00" + b"\x00" * 300,
    "mqtt": b"\x10\xff\x01\x00\x04MQTT\x04\x02\x00\x3c\x01\x00" + b"c" * 300,
    "stomp": b"CONNECT\naccept-version:1.2\nhost:/\nx-slow:" + b"s" * 300,
    "http": b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 300,
    "web_stomp": websocket_upgrade()[:-2] + b"X-Slow: " + b"s" * 300,
    "web_mqtt": websocket_upgrade(subprotocol="mqtt")[:-2] + b"X-Slow: " + b"s" * 300,
    # after the upgrade: a STOMP CONNECT frame inside one WebSocket frame, dribbled
    "ws_upgraded": websocket_frame_header(400) + b"CONNECT\nhost:/\n" + b"s" * 385,
}


class Slow:
    def __init__(self, kind: str, sock: socket.socket, payload: bytes) -> None:
        self.kind = kind
        self.sock = sock
        self.payload = payload
        self.opened = time.monotonic()
        self.closed_after: float | None = None
        sock.setblocking(False)

    def step(self) -> None:
        if self.closed_after is not None:
            return
        try:
            while self.sock.recv(65536):
                pass  # what the broker says meanwhile (AMQP connection.start) is dropped
            self._closed()
            return
        except BlockingIOError:
            pass
        except OSError:
            self._closed()
            return
        if self.payload:
            try:
                self.sock.send(self.payload[:1])
                self.payload = self.payload[1:]
            except BlockingIOError:
                pass
            except OSError:
                self._closed()

    def _closed(self) -> None:
        self.closed_after = time.monotonic() - self.opened
        self.sock.close()


def test_slowloris_on_every_port(configured_broker: Callable[[str], Any],
                                 unique: Callable[[str], str],
                                 figures: Callable[..., None]) -> None:
    broker = configured_broker(config(handshake_timeout=int(HANDSHAKE_TIMEOUT * 1000)))
    clients: list[Slow] = []
    with SteadyStream(broker.url, unique("steady")) as steady:
        for _ in range(PER_KIND):
            for name in PORTS:
                port = broker.ports[name]
                clients.append(Slow(f"{name} silent", connect(port), b""))
                clients.append(Slow(f"{name} dribbling", connect(port), HANDSHAKES[name]))
            http = broker.ports["http"]
            clients.append(Slow("ws_upgraded silent", websocket_open(http), b""))
            clients.append(Slow("ws_upgraded dribbling", websocket_open(http),
                                HANDSHAKES["ws_upgraded"]))
        with bounded(CLOSED_WITHIN + 5) as more:
            while more() and any(c.closed_after is None for c in clients):
                for client in clients:
                    client.step()
                time.sleep(DRIBBLE_EVERY)
        result = steady.result()
    open_still = [c.kind for c in clients if c.closed_after is None]
    for c in clients:
        if c.closed_after is None:
            c.sock.close()
    slowest: dict[str, float] = {}
    fastest: dict[str, float] = {}
    for c in clients:
        if c.closed_after is not None:
            slowest[c.kind] = max(slowest.get(c.kind, 0.0), c.closed_after)
            fastest[c.kind] = min(fastest.get(c.kind, CLOSED_WITHIN), c.closed_after)
    figures("slowloris", clients=len(clients),
            slowest_close_s=round(max(slowest.values(), default=0.0), 2))
    assert not open_still, f"not closed by the broker: {open_still}"
    late = {kind: round(s, 2) for kind, s in slowest.items() if s > CLOSED_WITHIN}
    assert not late, f"closed later than {CLOSED_WITHIN} s: {late}"
    early = {kind: round(s, 2) for kind, s in fastest.items() if s < HANDSHAKE_TIMEOUT * 0.9}
    assert not early, f"closed before the handshake timeout: {early}"
    check_stream(result, figures, "slowloris")
    still_serving(broker, unique("after-slowloris"))
