"""Limits enforced by a running broker, each seen by a real client (pika, paho-mqtt,
stomp.py, websocket-client) or a raw socket where a client cannot misbehave: the memory
high-watermark (connection.blocked / unblocked, losing nothing; MQTT and STOMP publishers
not read meanwhile), channels per connection, consumers per channel, queues per vhost,
connections per user and per address on every protocol (AMQP, MQTT 5 and 3.1.1, STOMP,
WAMP), and the bytes a client may send before it has logged in. The abuse tests
(tests/abuse/) cover the size limits, the handshake timeout and the outbound buffer
under attack."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
import websocket
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

WATERMARK = 50_000


@pytest.fixture
def small_broker(configured_broker: Callable[[str], Any]) -> str:
    broker = configured_broker(f"[limits]\nmemory_high_watermark = {WATERMARK}\n")
    return str(broker.url)


def _wait_for(connection: pika.BlockingConnection, events: list[str], what: str,
              seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while what not in events and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    assert what in events, f"no connection.{what} within {seconds} s (got {events})"


def test_memory_alarm_blocks_then_unblocks_publisher_and_loses_nothing(
        small_broker: str) -> None:
    params = pika.URLParameters(small_broker)
    publisher = pika.BlockingConnection(params)
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("hold")
    body = b"m" * 1000
    total = 120  # 120 kB: well over the 50 kB watermark
    for _ in range(total):
        channel.basic_publish("", "hold", body)
    _wait_for(publisher, events, "blocked")

    consumer = pika.BlockingConnection(params)
    cch = consumer.channel()
    received = 0
    deadline = time.monotonic() + 20
    while received < total and time.monotonic() < deadline:
        method, _, got = cch.basic_get("hold", auto_ack=True)
        if method is None:
            consumer.process_data_events(time_limit=0.05)
            publisher.process_data_events(time_limit=0.05)
            continue
        assert got == body
        received += 1
    _wait_for(publisher, events, "unblocked")
    assert received == total
    assert events[:2] == ["blocked", "unblocked"]
    consumer.close()
    publisher.close()


# ---------------------------------------------------------------- AMQP per-connection limits


def test_channel_number_above_channel_max_closes_the_connection_530(
        configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker("[amqp]\nchannel_max = 4\n")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel(channel_number=4)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
        conn.channel(channel_number=5)
    assert refused.value.reply_code == 530
    assert "channel_max 4" in refused.value.reply_text


def test_consumers_per_channel_past_the_limit_close_the_connection_530(
        configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker("[limits]\nconsumer_max_per_channel = 2\n")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(queue, lambda *_: None)
    ch.basic_consume(queue, lambda *_: None)
    other = conn.channel()  # the limit is per channel
    other.basic_consume(queue, lambda *_: None)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
        ch.basic_consume(queue, lambda *_: None)
    assert refused.value.reply_code == 530
    assert refused.value.reply_text == \
        "NOT_ALLOWED - reached maximum (2) of consumers per channel"


def test_queues_per_vhost_past_the_limit_are_refused_406(
        configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker("[limits]\nmax_queues_per_vhost = 3\n")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    for name in ("q1", "q2", "q3"):
        ch.queue_declare(name)
    ch.queue_declare("q3")  # redeclaring an existing queue is no new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.queue_declare("q4")
    assert refused.value.reply_code == 406
    assert "queue limit in vhost '/' (3) is reached" in refused.value.reply_text
    ch = conn.channel()
    ch.queue_delete("q1")
    ch.queue_declare("q4")  # room again
    conn.close()


# ---------------------------------------------------------------- connections per user / address


def _mqtt_connack(port: int, version: int) -> int:
    """Connect a paho client; the CONNACK's reason code (as a number)."""
    proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cap-{version}-{time.time()}",
                         protocol=proto)
    client.username_pw_set("guest", "guest")
    got: list[int] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        got.append(reason.value)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def _stomp_refusal(port: int) -> str:
    conn = stomp.Connection12([("127.0.0.1", port)], auto_content_length=False)
    errors: list[str] = []

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_error(self, frame: Any) -> None:
            errors.append(frame.headers.get("message", ""))

    conn.set_listener("errors", Listener())
    with pytest.raises(stomp.exception.ConnectFailedException):
        conn.connect("guest", "guest", wait=True, headers={"host": "/"})
    return errors[0] if errors else ""


def _wamp_refusal(port: int) -> list[Any]:
    """A WAMP ticket login as guest over the HTTP port's /ws; the broker's answer."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10,
                                     subprotocols=["wamp.2.json"])
    try:
        ws.send(json.dumps([1, "/", {"roles": {"subscriber": {}}, "authmethods": ["ticket"],
                                     "authid": "guest"}]))
        challenge = json.loads(ws.recv())
        assert challenge[0] == 4, challenge  # CHALLENGE
        ws.send(json.dumps([5, "guest", {}]))  # AUTHENTICATE with the password
        answer: list[Any] = json.loads(ws.recv())
        return answer
    finally:
        ws.close()


@contextmanager
def _held(url: str, count: int) -> Iterator[None]:
    conns = [pika.BlockingConnection(pika.URLParameters(url)) for _ in range(count)]
    try:
        yield
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("key,text", [
    ("max_connections_per_user", "connection refused for user 'guest': user connection "
                                 "limit (2) is reached"),
    ("max_connections_per_address", "connection refused for 127.0.0.1: connection limit per "
                                    "address (2) is reached"),
])
def test_connections_past_the_per_user_or_per_address_limit_are_refused(
        configured_broker: Callable[[str], Any], key: str, text: str) -> None:
    broker = configured_broker(f"[limits]\n{key} = 2\n")
    with _held(broker.url, 2):
        # refused at connection.open, which pika reports as a probable access denial
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
            pika.BlockingConnection(pika.URLParameters(broker.url))
        assert f"(530) {f'NOT_ALLOWED - {text}'!r}" in str(refused.value)
        assert _mqtt_connack(broker.ports["mqtt"], 5) == 0x97  # quota exceeded
        # 3.1.1's return code 3 "server unavailable" (paho reports it as reason 0x88)
        assert _mqtt_connack(broker.ports["mqtt"], 4) == 0x88
        assert _stomp_refusal(broker.ports["stomp"]) == "Connection refused"
        abort = _wamp_refusal(broker.ports["http"])
        assert abort[0] == 3 and abort[2] == "wamp.error.not_authorized", abort  # ABORT
        assert text in abort[1].get("message", ""), abort
    # the held connections are gone: room again
    pika.BlockingConnection(pika.URLParameters(broker.url)).close()


# ---------------------------------------------------------------- before logging in


def test_bytes_before_login_are_capped(configured_broker: Callable[[str], Any]) -> None:
    """An MQTT CONNECT announcing 1 MB (under max_packet_size) is cut off once more than
    handshake_max_bytes have arrived, before the packet is complete (64 KiB are sent)."""
    broker = configured_broker("[limits]\nhandshake_max_bytes = 8192\n")
    sock = socket.create_connection(("127.0.0.1", broker.ports["mqtt"]), timeout=10)
    sock.sendall(b"\x10\x80\x80\x40")  # CONNECT, remaining length 1,048,576
    sent = 0
    closed = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sent < 65536:
        try:
            sock.sendall(b"\x00" * 4096)
            sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    if not closed:
        sock.settimeout(10)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
    sock.close()
    assert closed
    assert "sent more than handshake_max_bytes (8192) before logging in" in broker.output()


# ---------------------------------------------------------------- memory alarm, other protocols


def _queue_depth(ch: Any, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def test_memory_alarm_stops_reading_mqtt_and_stomp_publishers(
        configured_broker: Callable[[str], Any]) -> None:
    """Over the watermark, an MQTT and a STOMP client that keep publishing are not read
    (their queues stop growing short of what they sent); once the alarm clears, all of it
    arrives."""
    watermark = 1_000_000  # over what the two clients send (2 x 300 kB)
    broker = configured_broker(f"[limits]\nmemory_high_watermark = {watermark}\n")
    sent = 300
    body = b"p" * 1000
    admin = pika.BlockingConnection(pika.URLParameters(broker.url))
    ach = admin.channel()
    for name in ("hold", "from-mqtt", "from-stomp"):
        ach.queue_declare(name)
    ach.queue_bind("from-mqtt", "amq.topic", "alarm.mqtt")
    mqtt_sock = socket.create_connection(("127.0.0.1", broker.ports["mqtt"]), timeout=10)
    mqtt_sock.sendall(b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06alarmq")
    assert mqtt_sock.recv(4) == b"\x20\x02\x00\x00"
    stomp_sock = socket.create_connection(("127.0.0.1", broker.ports["stomp"]), timeout=10)
    stomp_sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
    assert stomp_sock.recv(4096).startswith(b"CONNECTED")

    events: list[str] = []
    publisher = pika.BlockingConnection(pika.URLParameters(broker.url))
    publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
    pch = publisher.channel()
    for _ in range(2 * watermark // len(body)):
        pch.basic_publish("", "hold", body)
    _wait_for(publisher, events, "blocked")  # the alarm is on

    topic = b"alarm/mqtt"
    mqtt_publish = b"\x30" + bytes([0x80 | (len(body) + 12) % 128, (len(body) + 12) // 128]) \
        + b"\x00\x0a" + topic + body
    stomp_send = b"SEND\ndestination:/amq/queue/from-stomp\ncontent-length:%d\n\n" % len(body) \
        + body + b"\x00"
    senders = [threading.Thread(target=sock.sendall, args=(frame * sent,), daemon=True)
               for sock, frame in ((mqtt_sock, mqtt_publish), (stomp_sock, stomp_send))]
    for sender in senders:
        sender.start()
    # each is read once (the read that tells the broker it publishes), then no more
    depths = {"from-mqtt": -1, "from-stomp": -2}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = dict(depths)
        admin.process_data_events(time_limit=0.3)
        depths = {name: _queue_depth(ach, name) for name in depths}
        if depths == before and all(depths.values()):
            break
    assert depths == before, f"still growing: {before} -> {depths}"
    assert all(0 < depth < sent for depth in depths.values()), depths

    ach.queue_delete("hold")  # the alarm clears: both are read again
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
            _queue_depth(ach, name) < sent for name in depths):
        admin.process_data_events(time_limit=0.1)
    assert {name: _queue_depth(ach, name) for name in depths} == \
        {"from-mqtt": sent, "from-stomp": sent}
    for sender in senders:
        sender.join(10)
    mqtt_sock.close()
    stomp_sock.close()
    publisher.close()
    admin.close()
