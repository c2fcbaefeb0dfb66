"""How the I/O layer spends tasks on a connection (gateway/server/connection.py): replies to
what a client sent go out from the reading task, a writer task exists only while there is
other output and ends after two quiet ticks, and a wake brings it back; the same for a
WebSocket client (the same `Connection` drives it, through the framing layer). Real
paho-mqtt clients on 127.0.0.1 against an in-process server, so the test can look at its
connections.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import trio

from gateway.config import load_config, with_overrides
from gateway.server.app import Server
from gateway.server.connection import Connection
from protocols.mqtt.session import MQTTSession


def _client(port: int, name: str, got: queue.Queue[bytes] | None = None, *,
            websocket: bool = False) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                    transport="websockets" if websocket else "tcp")
    if websocket:
        c.ws_set_options(path="/ws")
    subscribed = threading.Event()
    if got is not None:
        c.on_message = lambda _c, _u, msg: got.put(msg.payload)
        c.on_subscribe = lambda *_a: subscribed.set()
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if got is not None:
        c.subscribe("tasks/t", qos=0)
        assert subscribed.wait(10)
    return c


async def _until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        while not cond():
            await trio.sleep(0.01)
    assert cond(), what


async def test_writer_task_only_while_there_is_output(tmp_path: Path) -> None:
    config = with_overrides(load_config(), host="127.0.0.1", amqp_port=None, mqtt_port=0,
                            stomp_port=None, http_port=None, data_dir=tmp_path / "data")
    server = Server(config)
    got: queue.Queue[bytes] = queue.Queue()
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        sub = await trio.to_thread.run_sync(_client, ports["mqtt"], "tasks-sub", got)
        try:
            conns: list[Connection] = list(server.connections)
            assert len(conns) == 1
            conn = conns[0]
            # CONNACK and SUBACK were written by the reading task: no writer was needed
            assert not conn._writing
            session = conn.session
            # every attribute of an MQTT session is in its slots (no per-instance dict)
            assert isinstance(session, MQTTSession) and vars(session) == {}

            pub = await trio.to_thread.run_sync(_client, ports["mqtt"], "tasks-pub")
            try:
                pub.publish("tasks/t", b"one")
                assert await trio.to_thread.run_sync(got.get, True, 10) == b"one"
                assert conn._writing  # the delivery started a writer on the subscriber

                # two quiet ticks retire it ...
                await _until(lambda: not session.pending_output, "output drained")
                server._tick_connections(trio.current_time())
                server._tick_connections(trio.current_time())
                await _until(lambda: not conn._writing, "writer ended after two quiet ticks")

                # ... and the next delivery starts another
                pub.publish("tasks/t", b"two")
                assert await trio.to_thread.run_sync(got.get, True, 10) == b"two"
            finally:
                pub.disconnect()
                pub.loop_stop()
        finally:
            sub.disconnect()
            sub.loop_stop()
        await _until(lambda: not server.connections, "both connections closed")
        await server.shutdown()
        nursery.cancel_scope.cancel()


async def test_websocket_client_is_driven_by_the_same_connection(tmp_path: Path) -> None:
    """An MQTT client on the Web-MQTT port: one `Connection` in `server.connections` whose
    session is the WebSocket framing layer around an MQTT session; its replies go out from
    the reading task, a delivery starts a writer, and two quiet ticks retire it."""
    from gateway.server.wsframing import WebSocketSession

    config = with_overrides(load_config(), host="127.0.0.1", amqp_port=None, mqtt_port=0,
                            stomp_port=None, http_port=None, web_mqtt_port=0,
                            data_dir=tmp_path / "data")
    server = Server(config)
    got: queue.Queue[bytes] = queue.Queue()
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        sub = await trio.to_thread.run_sync(
            lambda: _client(ports["web_mqtt"], "ws-tasks-sub", got, websocket=True))
        try:
            (conn,) = server.connections
            session = conn.session
            assert isinstance(session, WebSocketSession)
            assert isinstance(session.inner, MQTTSession) and session.inner in server.sessions
            assert not conn._writing  # CONNACK and SUBACK went from the reading task

            pub = await trio.to_thread.run_sync(_client, ports["mqtt"], "ws-tasks-pub")
            try:
                pub.publish("tasks/t", b"one")
                assert await trio.to_thread.run_sync(got.get, True, 10) == b"one"
                await _until(lambda: not session.pending_output, "output drained")
                server._tick_connections(trio.current_time())
                server._tick_connections(trio.current_time())
                await _until(lambda: not conn._writing, "writer ended after two quiet ticks")
                pub.publish("tasks/t", b"two")
                assert await trio.to_thread.run_sync(got.get, True, 10) == b"two"
            finally:
                pub.disconnect()
                pub.loop_stop()
        finally:
            sub.disconnect()
            sub.loop_stop()
        await _until(lambda: not server.connections, "both connections closed")
        assert not server.sessions
        await server.shutdown()
        nursery.cancel_scope.cancel()
