"""Clients that offer no WebSocket subprotocol, on `gateway serve`'s HTTP port: stomp.py's
`WSStompConnection` on `/ws` and `/stomp`, paho-mqtt with its default websocket path
`/mqtt`, and a WAMP client (the `websockets` library) whose HELLO tells the protocol; the
first-message rules themselves (`gateway.server.wsdetect`) fed messages."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.server.wsdetect import MORE, detect

TIMEOUT = 10.0
ROLES = {"publisher": {}, "subscriber": {}}


@pytest.mark.parametrize(("message", "protocol"), [
    ("CONNECT\naccept-version:1.2\nhost:/\n\n\0", "v12.stomp"),
    (b"STOMP\r\naccept-version:1.2\r\n\r\n\0", "v12.stomp"),
    ("\n\r\nCONNECT\nlogin:guest\n\n\0", "v12.stomp"),          # EOLs before the frame
    ("\n", MORE),                                               # a heart-beat only: wait
    (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", "mqtt"),  # MQTT 3.1.1 CONNECT
    ('[1, "/", {"roles": {}}]', "wamp.2.json"),
    (' [ 1,"realm1",{}]', "wamp.2.json"),
    (msgpack.packb([1, "/", {"roles": {}}]), "wamp.2.msgpack"),
    ("SEND\ndestination:/queue/x\n\n\0", None),                 # STOMP, but not a CONNECT
    ("CONNECTED\n\n\0", None),
    (b"\x30\x05\x00\x01ab", None),                              # MQTT PUBLISH first
    ('[2, 1, {}]', None),                                        # a WELCOME, not a HELLO
    ("GET / HTTP/1.1\r\n\r\n", None),
    (b"", MORE),
])
def test_first_message_tells_the_protocol(message: bytes | str, protocol: str | None) -> None:
    assert detect(message) == protocol


def _queue_get(ch: Any, queue: str) -> bytes:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return bytes(body)
        ch.connection.process_data_events(time_limit=0.05)
    raise AssertionError(f"nothing on {queue}")


class Listener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, str], str]] = []
        self.got = threading.Event()

    def on_message(self, frame: Any) -> None:
        self.messages.append((frame.headers, frame.body))
        self.got.set()


@pytest.mark.parametrize("path", ["/ws", "/stomp"])
def test_stomp_py_ws_connection_offers_no_subprotocol(broker: Any, unique: Callable[[str], str],
                                                      path: str) -> None:
    """stomp.py's WSStompConnection sends no Sec-WebSocket-Protocol (issue: refused with
    400 on /ws); its CONNECT frame tells the broker it speaks STOMP."""
    queue = unique("ws-stomp-py")
    conn = stomp.WSStompConnection([("127.0.0.1", broker.ports["http"])], ws_path=path,
                                   timeout=TIMEOUT)
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect("guest", "guest", wait=True)
    amqp = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        assert conn.is_connected()
        conn.subscribe(f"/queue/{queue}", id="1", ack="auto")
        conn.send(f"/queue/{queue}", "from stomp.py", content_type="text/plain",
                  headers={"receipt": "sent"})
        assert listener.got.wait(TIMEOUT)
        headers, body = listener.messages[0]
        assert body == "from stomp.py" and headers["destination"] == f"/queue/{queue}"
        # and the same queue is the core's: pika reaches it too
        ch = amqp.channel()
        conn.unsubscribe("1")
        conn.send(f"/queue/{queue}", "to pika", receipt="r2")
        assert _queue_get(ch, queue) == b"to pika"
    finally:
        conn.disconnect()
        amqp.close()


def test_paho_default_websocket_path_is_mqtt(broker: Any, unique: Callable[[str], str]) -> None:
    """paho-mqtt's websocket transport with no ws_set_options: path `/mqtt` (issue: 404)."""
    topic = f"paho/{unique('default')}/t"
    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("paho-ws"),
                         transport="websockets")
    client.username_pw_set("guest", "guest")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append((msg.topic, msg.payload))
        arrived.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    assert client.connect("127.0.0.1", broker.ports["http"]) == mqtt.MQTT_ERR_SUCCESS
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT)
        client.publish(topic, b"over /mqtt", qos=1).wait_for_publish(TIMEOUT)
        assert arrived.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    assert got == [(topic, b"over /mqtt")]


def _run(coro: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), TIMEOUT * 2))


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_wamp_hello_without_a_subprotocol(broker: Any, serializer: str) -> None:
    """A WAMP client that offers no subprotocol: its HELLO (JSON text or MessagePack
    binary) tells the broker; the login goes on as usual (ticket)."""
    def pack(msg: list[Any]) -> str | bytes:
        return json.dumps(msg) if serializer == "json" else msgpack.packb(msg)

    def unpack(data: str | bytes) -> Any:
        return json.loads(data) if serializer == "json" else msgpack.unpackb(data)

    async def session() -> tuple[Any, Any, str | None]:
        url = f"ws://127.0.0.1:{broker.ports['http']}/ws"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            await ws.send(pack([1, "/", {"roles": ROLES, "authmethods": ["ticket"],
                                         "authid": "guest"}]))
            challenge = unpack(await asyncio.wait_for(ws.recv(), TIMEOUT))
            await ws.send(pack([5, "guest", {}]))
            welcome = unpack(await asyncio.wait_for(ws.recv(), TIMEOUT))
            return challenge, welcome, ws.subprotocol

    challenge, welcome, subprotocol = _run(session)
    assert subprotocol is None  # none offered, none answered
    assert challenge[:2] == [4, "ticket"]
    assert welcome[0] == 2 and welcome[2]["authid"] == "guest"


def test_stomp_heartbeat_before_connect_waits_for_the_frame(broker: Any) -> None:
    async def session() -> str:
        url = f"ws://127.0.0.1:{broker.ports['http']}/stomp"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            await ws.send("\n")
            await ws.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest"
                          "\n\n\0")
            return str(await asyncio.wait_for(ws.recv(), TIMEOUT))

    assert _run(session).startswith("CONNECTED\n")


@pytest.mark.parametrize("first", ["hello there", b"\x30\x03\x00\x01x", "SEND\n\n\0"])
def test_unrecognised_first_message_closes_1002(broker: Any, first: str | bytes) -> None:
    async def session() -> int | None:
        url = f"ws://127.0.0.1:{broker.ports['http']}/ws"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            await ws.send(first)
            try:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None
            return None

    assert _run(session) == 1002


def test_offering_a_subprotocol_on_an_alias_path_still_negotiates(broker: Any) -> None:
    async def session() -> tuple[str | None, str]:
        url = f"ws://127.0.0.1:{broker.ports['http']}/mqtt"
        async with websockets.connect(url, subprotocols=["v12.stomp"],  # type: ignore[list-item]
                                      open_timeout=TIMEOUT) as ws:
            await ws.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest"
                          "\n\n\0")
            return ws.subprotocol, str(await asyncio.wait_for(ws.recv(), TIMEOUT))

    subprotocol, connected = _run(session)
    assert subprotocol == "v12.stomp" and connected.startswith("CONNECTED\n")
