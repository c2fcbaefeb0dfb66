"""WebSocket clients are driven by the same `Connection` as TCP clients, so the server's
limits hold for them by construction: one connection limit counts TCP and WebSocket clients
alike (and /metrics counts them), the memory alarm stops reading a WebSocket publisher until
it clears, a WebSocket client that does not read is cut off after the send timeout, and
shutdown's grace waits for WebSocket clients (on the HTTP port and on the Web-STOMP port)
after telling them goodbye. An in-process `Server` with every listener wired as `gateway
serve` wires them; real clients: paho-mqtt (TCP and websockets), the `websockets` library,
pika and httpx, and a raw socket for the client that stops reading (a client library keeps
reading).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect
from ws_harness import in_thread, poll

from gateway.config import load_config, with_overrides
from gateway.server.app import Server

TIMEOUT = 10
MQTT_CONNECT = b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06wsconn"
CONNACK = b"\x20\x02\x00\x00"
STOMP_CONNECT = "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"


@asynccontextmanager
async def serving(tmp_path: Path, **limits: int) -> AsyncIterator[Server]:
    """The real server with AMQP, MQTT, HTTP (/ws), Web-STOMP and Web-MQTT on free ports."""
    config = with_overrides(load_config(), host="127.0.0.1", amqp_port=0, mqtt_port=0,
                            stomp_port=None, http_port=0, web_stomp_port=0, web_mqtt_port=0,
                            data_dir=tmp_path / "data")
    config = replace(config, limits=replace(config.limits, **limits))
    server = Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            await server.shutdown()
            nursery.cancel_scope.cancel()


def websockets_of(server: Server) -> list[Any]:
    return [c for c in server.connections if c.label == "websocket"]


def paho(port: int, name: str, *, websocket: bool = False) -> tuple[mqtt.Client, int]:
    """A paho client connected (or refused): the client and its CONNACK code (-1: none)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                    transport="websockets" if websocket else "tcp")
    if websocket:
        c.ws_set_options(path="/ws")
    c.username_pw_set("guest", "guest")
    result: list[int] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.append(rc.value if hasattr(rc, "value") else int(rc))
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = lambda *_a: done.set()
    try:
        c.connect("127.0.0.1", port, keepalive=60)
    except OSError:
        return c, -1
    c.loop_start()
    done.wait(TIMEOUT)
    return c, result[0] if result else -1


def stop(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


async def test_one_connection_limit_counts_tcp_and_websocket_clients(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=3) as server:
        ports = server.ports
        tcp, rc_tcp = await in_thread(lambda: paho(ports["mqtt"], "limit-tcp"))
        web_mqtt, rc_web = await in_thread(
            lambda: paho(ports["web_mqtt"], "limit-web-mqtt", websocket=True))
        http_ws, rc_http = await in_thread(
            lambda: paho(ports["http"], "limit-http-ws", websocket=True))
        try:
            assert (rc_tcp, rc_web, rc_http) == (0, 0, 0)
            assert len(server.connections) == 3 and len(websockets_of(server)) == 2

            # /metrics counts the WebSocket clients with the TCP one
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{ports['http']}/metrics",
                                       timeout=TIMEOUT)).text
            assert "\nrabbitmq_connections 3.0\n" in text

            # full: the next client is refused whichever way it comes
            def upgrade_refused() -> int:
                try:
                    with ws_connect(f"ws://127.0.0.1:{ports['http']}/ws",
                                    subprotocols=["mqtt"],  # type: ignore[list-item]
                                    open_timeout=TIMEOUT):
                        return 101
                except InvalidStatus as exc:
                    return exc.response.status_code

            assert await in_thread(upgrade_refused) == 503
            fourth, rc_fourth = await in_thread(lambda: paho(ports["mqtt"], "limit-tcp-2"))
            await in_thread(lambda: stop(fourth))
            assert rc_fourth != 0  # closed before any CONNACK

            # one WebSocket client leaves: a TCP client may take its place
            await in_thread(lambda: stop(web_mqtt))
            with trio.fail_after(TIMEOUT):
                while len(server.connections) > 2:
                    await trio.sleep(0.01)
            again, rc_again = await in_thread(lambda: paho(ports["mqtt"], "limit-tcp-3"))
            await in_thread(lambda: stop(again))
            assert rc_again == 0
        finally:
            for c in (tcp, web_mqtt, http_ws):
                await in_thread(lambda c=c: stop(c))  # type: ignore[misc]


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n")


def masked_text(payload: bytes) -> bytes:
    """One client text frame (FIN, masked with a zero key, payload under 126 bytes)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


def _publish_packet(topic: bytes, body: bytes) -> bytes:
    size = 2 + len(topic) + len(body)
    assert size < 128 * 128
    return b"\x30" + bytes([0x80 | size % 128, size // 128]) + \
        len(topic).to_bytes(2, "big") + topic + body


async def test_memory_alarm_stops_reading_a_websocket_publisher(tmp_path: Path) -> None:
    """Over the watermark, an MQTT client on the Web-MQTT port that keeps publishing is not
    read (its queue stops growing short of what it sent); once the alarm clears, all of it
    arrives. The server tells it as it tells its TCP clients: no polling."""
    watermark = 400_000  # over what the client sends (300 kB)
    sent, body = 300, b"w" * 1000
    async with serving(tmp_path, memory_high_watermark=watermark) as server:
        ports = server.ports
        amqp = f"amqp://guest:guest@127.0.0.1:{ports['amqp']}/%2F"

        def fill() -> tuple[pika.BlockingConnection, pika.BlockingConnection]:
            admin = pika.BlockingConnection(pika.URLParameters(amqp))  # publishes nothing
            ch = admin.channel()
            ch.queue_declare("hold")
            ch.queue_declare("from-ws")
            ch.queue_bind("from-ws", "amq.topic", "alarm.ws")
            publisher = pika.BlockingConnection(pika.URLParameters(amqp))  # blocked soon
            pch = publisher.channel()
            for _ in range(2 * watermark // len(body)):
                pch.basic_publish("", "hold", body)
            return admin, publisher

        admin, publisher = await in_thread(fill)
        with trio.fail_after(TIMEOUT):
            while not server.memory_alarm:
                await trio.sleep(0.01)

        client = await in_thread(lambda: ws_connect(
            f"ws://127.0.0.1:{ports['web_mqtt']}/ws", subprotocols=["mqtt"],  # type: ignore[list-item]
            open_timeout=TIMEOUT, max_size=None))
        try:
            await in_thread(lambda: client.send(MQTT_CONNECT))
            assert await in_thread(lambda: client.recv(TIMEOUT)) == CONNACK
            packet = _publish_packet(b"alarm/ws", body)
            sender = threading.Thread(
                target=lambda: [client.send(packet) for _ in range(sent)], daemon=True)
            sender.start()

            def depth() -> int:
                ch = admin.channel()
                n = int(ch.queue_declare("from-ws", passive=True).method.message_count)
                ch.close()
                return n

            # read while it told the broker it publishes, then no more
            (conn,) = websockets_of(server)
            with trio.fail_after(TIMEOUT):
                while not (conn.session is not None and conn.session.read_paused):
                    await trio.sleep(0.01)
            before = await in_thread(depth)
            await trio.sleep(0.3)
            paused_at = await in_thread(depth)
            assert paused_at == before and 0 < paused_at < sent
            assert conn.session.read_paused

            await in_thread(lambda: admin.channel().queue_delete("hold"))  # alarm clears
            await in_thread(lambda: poll(lambda: depth() == sent, TIMEOUT))
            assert not server.memory_alarm
            await in_thread(lambda: sender.join(TIMEOUT))
        finally:
            await in_thread(client.close)
            await in_thread(admin.close)
            await in_thread(publisher.close)


async def test_websocket_client_that_never_reads_is_cut_off_by_the_send_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A STOMP subscriber on the Web-STOMP port that stops reading: once a write makes no
    progress for `send_timeout`, the connection goes (its log line says so), as on TCP."""
    caplog.set_level(logging.INFO, "gateway.server")
    async with serving(tmp_path, send_timeout=500) as server:
        ports = server.ports
        amqp = f"amqp://guest:guest@127.0.0.1:{ports['amqp']}/%2F"

        def subscriber() -> socket.socket:
            # a raw socket: a client library keeps reading, this one stops after CONNECTED
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", ports["web_stomp"]))
            sock.sendall(UPGRADE + masked_text(STOMP_CONNECT.encode()))
            seen = b""
            while b"CONNECTED" not in seen:
                chunk = sock.recv(4096)
                assert chunk, seen
                seen += chunk
            assert seen.startswith(b"HTTP/1.1 101 ")
            sock.sendall(masked_text(
                b"SUBSCRIBE\nid:1\ndestination:/queue/noread\nack:auto\n\n\x00"))
            return sock

        def flood() -> None:
            conn = pika.BlockingConnection(pika.URLParameters(amqp))
            ch = conn.channel()
            ch.queue_declare("noread", durable=True)
            for _ in range(200):
                ch.basic_publish("", "noread", b"n" * 65536)
            conn.close()

        client = await in_thread(subscriber)
        try:
            with trio.fail_after(TIMEOUT):
                while not any(getattr(s, "subscriptions", None) for s in server.sessions):
                    await trio.sleep(0.01)
            await in_thread(flood)
            with trio.fail_after(3 * TIMEOUT):
                while websockets_of(server):
                    await trio.sleep(0.05)
            assert any("websocket 127.0.0.1" in r.getMessage()
                       and "not reading: a write stalled" in r.getMessage()
                       for r in caplog.records)
            assert not server.sessions
        finally:
            client.close()


async def test_shutdown_tells_websocket_clients_and_waits_for_them(tmp_path: Path) -> None:
    """At shutdown a STOMP client on the Web-STOMP port gets its ERROR frame and an MQTT 5
    client on the HTTP port's /ws its DISCONNECT (server shutting down), each followed by a
    WebSocket close frame; `shutdown` returns once their connections have gone."""
    server_box: list[Server] = []
    got: dict[str, Any] = {}
    async with serving(tmp_path) as server:
        server_box.append(server)
        ports = server.ports

        def open_clients() -> tuple[Any, Any]:
            stomp = ws_connect(f"ws://127.0.0.1:{ports['web_stomp']}/ws",
                               subprotocols=["v12.stomp"],  # type: ignore[list-item]
                               open_timeout=TIMEOUT)
            stomp.send(STOMP_CONNECT)
            assert str(stomp.recv(TIMEOUT)).startswith("CONNECTED")
            mq = ws_connect(f"ws://127.0.0.1:{ports['http']}/ws",
                            subprotocols=["mqtt"],  # type: ignore[list-item]
                            open_timeout=TIMEOUT)
            # MQTT 5 CONNECT, clean start, keepalive 60, client id "down"
            mq.send(b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04down")
            assert bytes(mq.recv(TIMEOUT))[:1] == b"\x20"
            return stomp, mq

        stomp, mq = await in_thread(open_clients)

        def until_closed(name: str, ws: Any) -> None:
            frames: list[Any] = []
            try:
                while True:
                    frames.append(ws.recv(TIMEOUT))
            except ConnectionClosed as exc:
                got[name] = (frames, exc.rcvd)

        readers = [threading.Thread(target=until_closed, args=(n, w), daemon=True)
                   for n, w in (("stomp", stomp), ("mqtt", mq))]
        for r in readers:
            r.start()
        assert len(websockets_of(server)) == 2
        with trio.fail_after(TIMEOUT):
            await server.shutdown()
        assert not server.connections  # the grace waited for both
        for r in readers:
            await in_thread(lambda r=r: r.join(TIMEOUT))  # type: ignore[misc]
    stomp_frames, stomp_close = got["stomp"]
    assert str(stomp_frames[0]).startswith("ERROR") and "Server shutdown" in stomp_frames[0]
    assert stomp_close is not None  # a close frame, not a dropped socket
    mqtt_frames, mqtt_close = got["mqtt"]
    disconnect = bytes(mqtt_frames[0])
    assert disconnect[0] == 0xE0 and disconnect[2] == 0x8B  # DISCONNECT, server shutting down
    assert mqtt_close is not None
