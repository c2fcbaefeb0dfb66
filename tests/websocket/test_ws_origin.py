"""The Origin and Host rules on WebSocket upgrades ([http] allowed_origins, allowed_hosts), on
`gateway serve`'s HTTP port (`/ws`, `/mqtt`, `/stomp`) and on the Web-STOMP and Web-MQTT
ports, with the `websockets` library, paho-mqtt and raw upgrade requests. A browser as the
attacker: test_ws_browser.py; over TLS: tests/tls/test_tls_ws_origin.py."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

TIMEOUT = 10.0
LISTED = "http://app.example:8080"
CONFIG = f"""[listeners]
web_stomp = 0
web_mqtt = 0
[http]
allowed_origins = ["{LISTED}"]
allowed_hosts = ["broker.example"]
"""
# (listener, path, subprotocol) of every WebSocket endpoint
ENDPOINTS = [("http", "/ws", "wamp.2.json"), ("http", "/mqtt", "mqtt"),
             ("http", "/stomp", "v12.stomp"), ("http", "/ws", None),
             ("web_stomp", "/ws", "v12.stomp"), ("web_mqtt", "/ws", "mqtt")]


@pytest.fixture(scope="module")
def origin_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import Broker

    directory = tmp_path_factory.mktemp("origin")
    config = directory / "gateway.toml"
    config.write_text(CONFIG)
    (directory / "data").mkdir()
    running = Broker("127.0.0.1", 0, data_dir=directory / "data", config=config)
    running.start()
    yield running
    running.stop()


def upgrade(port: int, path: str, subprotocol: str | None, origin: str | None) -> int:
    """The HTTP status the broker answers an upgrade with (101: accepted), websockets."""
    async def attempt() -> int:
        url = f"ws://127.0.0.1:{port}{path}"
        try:
            async with websockets.connect(
                    url, origin=origin,  # type: ignore[arg-type]
                    subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
                    open_timeout=TIMEOUT):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(asyncio.wait_for(attempt(), TIMEOUT * 2))


@pytest.mark.parametrize(("listener", "path", "subprotocol"), ENDPOINTS)
def test_foreign_origins_get_403(origin_broker: Any, listener: str, path: str,
                                 subprotocol: str | None) -> None:
    port = origin_broker.ports[listener]
    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}",
                   f"https://127.0.0.1:{port}", "null", "http://app.example"):
        assert upgrade(port, path, subprotocol, origin) == 403, origin


@pytest.mark.parametrize(("listener", "path", "subprotocol"), ENDPOINTS)
def test_no_origin_own_origin_and_listed_origin_are_served(
        origin_broker: Any, listener: str, path: str, subprotocol: str | None) -> None:
    port = origin_broker.ports[listener]
    for origin in (None, f"http://127.0.0.1:{port}", LISTED):
        assert upgrade(port, path, subprotocol, origin) == 101, origin


def raw_upgrade(port: int, host: str, origin: str | None = None) -> bytes:
    """An upgrade with exactly this Host (and Origin): the status line answered."""
    head = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")  # no subprotocol
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("listener", ["http", "web_stomp", "web_mqtt"])
def test_host_header_of_a_rebound_name_gets_403(origin_broker: Any, listener: str) -> None:
    """DNS rebinding: a page on an attacker's name re-resolved to 127.0.0.1 is "same
    origin" with the broker, but its Host names the attacker's domain."""
    port = origin_broker.ports[listener]
    assert raw_upgrade(port, f"rebind.example:{port}") == b"HTTP/1.1 403 "
    assert raw_upgrade(port, f"rebind.example:{port}",
                       origin=f"http://rebind.example:{port}") == b"HTTP/1.1 403 "
    assert raw_upgrade(port, f"127.0.0.1:{port}") == b"HTTP/1.1 101 Switching Protocols"
    assert raw_upgrade(port, f"localhost:{port}") == b"HTTP/1.1 101 Switching Protocols"
    assert raw_upgrade(port, f"broker.example:{port}",  # listed in allowed_hosts
                       origin=f"http://broker.example:{port}") \
        == b"HTTP/1.1 101 Switching Protocols"


def paho_connects(port: int, path: str, headers: dict[str, str] | None) -> bool:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"origin-{port}",
                         transport="websockets")
    client.ws_set_options(path=path, headers=headers)
    client.username_pw_set("guest", "guest")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ValueError, mqtt.WebsocketConnectionError):
        return False
    client.loop_start()
    try:
        return connected.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize(("listener", "path"), [("http", "/mqtt"), ("web_mqtt", "/ws")])
def test_paho_with_a_foreign_origin_is_refused(origin_broker: Any, listener: str,
                                               path: str) -> None:
    port = origin_broker.ports[listener]
    assert not paho_connects(port, path, {"Origin": "http://evil.example"})
    assert paho_connects(port, path, None)  # paho sends its own Origin: the broker's address
    assert "websocket upgrade refused: Origin 'http://evil.example'" in origin_broker.output()


def test_default_config_refuses_foreign_origins(broker: Any) -> None:
    """With no [http] section at all (the default), only the broker's own pages get in."""
    port = broker.ports["http"]
    assert upgrade(port, "/ws", "wamp.2.json", "http://evil.example") == 403
    assert upgrade(port, "/ws", "wamp.2.json", LISTED) == 403
    assert upgrade(port, "/ws", "wamp.2.json", f"http://localhost:{port}") == 403  # Host differs
    assert upgrade(port, "/ws", "wamp.2.json", f"http://127.0.0.1:{port}") == 101
