"""The Origin rule on wss: the https port's `/ws` (and `/mqtt`, `/stomp`) and the Web-STOMP
and Web-MQTT TLS ports refuse upgrades from a foreign page with HTTP 403; the broker's own
https origin, a listed origin and clients sending no Origin get in. The `websockets` library
and paho-mqtt over wss."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
import websockets
from tls_kit import HOST, TIMEOUT, Broker, Certs, client_context, make_certs, start_broker
from websockets.exceptions import InvalidStatus

LISTED = "https://app.example"
ENDPOINTS = [("https", "/ws", "wamp.2.json"), ("https", "/mqtt", "mqtt"),
             ("https", "/stomp", None), ("web_stomp_tls", "/ws", "v12.stomp"),
             ("web_mqtt_tls", "/ws", "mqtt")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Broker]:
    broker = start_broker(tmp_path_factory.mktemp("tls-origin"), certs, verify="peer",
                          extra=f'\n[http]\nallowed_origins = ["{LISTED}"]\n')
    yield broker
    broker.stop()


def upgrade(certs: Certs, port: int, path: str, subprotocol: str | None,
            origin: str | None) -> int:
    async def attempt() -> int:
        try:
            async with websockets.connect(
                    f"wss://{HOST}:{port}{path}", origin=origin,  # type: ignore[arg-type]
                    subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
                    ssl=client_context(certs), open_timeout=TIMEOUT):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(asyncio.wait_for(attempt(), TIMEOUT * 2))


@pytest.mark.parametrize(("listener", "path", "subprotocol"), ENDPOINTS)
def test_wss_upgrades_follow_the_origin_rule(tls_broker: Broker, certs: Certs, listener: str,
                                             path: str, subprotocol: str | None) -> None:
    port = tls_broker.ports[listener]
    assert port
    for origin in ("https://evil.example", f"http://{HOST}:{port}",  # plain-http page
                   f"https://{HOST}:{port + 1}", "http://app.example"):
        assert upgrade(certs, port, path, subprotocol, origin) == 403, origin
    for allowed in (None, f"https://{HOST}:{port}", LISTED):
        assert upgrade(certs, port, path, subprotocol, allowed) == 101, allowed


def test_paho_over_wss_with_a_foreign_origin_is_refused(tls_broker: Broker,
                                                        certs: Certs) -> None:
    def connects(origin: str | None) -> bool:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wss-origin",
                             transport="websockets")
        client.ws_set_options(path="/ws", headers={"Origin": origin} if origin else None)
        client.tls_set_context(client_context(certs))
        client.username_pw_set("guest", "guest")
        connected = threading.Event()
        client.on_connect = lambda *a: connected.set()
        try:
            client.connect(HOST, tls_broker.ports["web_mqtt_tls"])
        except (OSError, ValueError, mqtt.WebsocketConnectionError):
            return False
        client.loop_start()
        try:
            return connected.wait(TIMEOUT)
        finally:
            client.disconnect()
            client.loop_stop()

    assert not connects("https://evil.example")
    assert connects(None)  # paho's own Origin: https://127.0.0.1:PORT, the broker's
