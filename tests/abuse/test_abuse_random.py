"""Random bytes on every port (and inside an upgraded WebSocket): each connection is
refused or closed, the broker keeps serving, and a well-behaved pika pair loses nothing."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from abuse_kit import (
    PORTS,
    SteadyStream,
    check_stream,
    config,
    connect,
    read_until_closed,
    still_serving,
    websocket_open,
)

PER_PORT = 4
SIZE = 64 * 1024


def test_random_bytes_on_every_port(configured_broker: Callable[[str], Any],
                                    unique: Callable[[str], str],
                                    figures: Callable[..., None]) -> None:
    broker = configured_broker(config())
    rng = random.Random(20261123)  # reproducible
    socks = []
    with SteadyStream(broker.url, unique("steady")) as steady:
        for round_ in range(PER_PORT):
            for name in PORTS:
                sock = connect(broker.ports[name])
                socks.append((name, sock))
            socks.append(("ws_upgraded", websocket_open(broker.ports["http"],
                                                        ("v12.stomp", "mqtt",
                                                         "wamp.2.json")[round_ % 3])))
        for _, sock in socks:
            try:
                sock.sendall(rng.randbytes(SIZE))
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before all of it was sent
        still_open = []
        for name, sock in socks:
            _, closed = read_until_closed(sock, seconds=10)
            sock.close()
            if not closed:
                still_open.append(name)
        result = steady.result()
    figures("random bytes", connections=len(socks), bytes_each=SIZE)
    assert not still_open, f"connections left open: {still_open}"
    check_stream(result, figures, "random bytes")
    still_serving(broker, unique("after-random"))
