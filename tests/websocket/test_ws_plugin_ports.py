"""RabbitMQ-style WebSocket-only ports, configured in `[listeners]` (web_stomp, web_mqtt),
started by `gateway serve` and used by real clients: paho-mqtt over WebSocket on the
Web-MQTT port, a STOMP client over the `websockets` library on the Web-STOMP port, and
pika on AMQP meeting both."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pika
import websockets

CONFIG = '[listeners]\nweb_stomp = 0\nweb_mqtt = 0\n'


def test_web_mqtt_port_carries_paho_to_pika(configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker(CONFIG)
    assert broker.ports.get("web_mqtt"), broker.output()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "plugin.mqtt.#")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="web-mqtt-port",
                         transport="websockets")
    client.ws_set_options(path="/ws")
    client.username_pw_set("guest", "guest")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", broker.ports["web_mqtt"])
    client.loop_start()
    try:
        assert connected.wait(10)
        client.publish("plugin/mqtt/x", b"over web-mqtt", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        body = None
        while body is None and time.monotonic() < deadline:
            method, _, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                conn.process_data_events(time_limit=0.05)
        assert body == b"over web-mqtt"
    finally:
        client.disconnect()
        client.loop_stop()
        conn.close()


def test_web_stomp_port_speaks_stomp_and_only_stomp(
        configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker(CONFIG)
    port = broker.ports.get("web_stomp")
    assert port, broker.output()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("plugin-stomp", durable=True)  # as STOMP declares a /queue/

    async def talk() -> tuple[str, str]:
        url = f"ws://127.0.0.1:{port}/ws"
        async with websockets.connect(url, subprotocols=["v12.stomp"],
                                      open_timeout=10) as ws:
            await ws.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\n"
                          "passcode:guest\n\n\x00")
            connected = await asyncio.wait_for(ws.recv(), 10)
            await ws.send("SEND\ndestination:/queue/plugin-stomp\nreceipt:r1\n\n"
                          "from web-stomp\x00")
            receipt = await asyncio.wait_for(ws.recv(), 10)
        return str(connected), str(receipt)

    connected, receipt = asyncio.run(talk())
    assert connected.startswith("CONNECTED\n") and "version:1.2" in connected
    assert receipt.startswith("RECEIPT\n") and "receipt-id:r1" in receipt
    method, _, body = ch.basic_get("plugin-stomp", auto_ack=True)
    assert body == b"from web-stomp"

    async def wamp_refused() -> str | None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                      subprotocols=["wamp.2.json"], open_timeout=10) as ws:
            return ws.subprotocol

    # the Web-STOMP port offers only STOMP: a WAMP-only client gets no WAMP there
    try:
        chosen = asyncio.run(wamp_refused())
    except (websockets.exceptions.InvalidStatus, websockets.exceptions.InvalidHandshake):
        chosen = None
    assert chosen != "wamp.2.json"
    conn.close()
