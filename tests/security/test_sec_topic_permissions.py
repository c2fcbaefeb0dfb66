"""RabbitMQ's topic permissions on amq.topic, enforced by routing key on every protocol with
real clients: pika (basic.publish -> 403), paho-mqtt 5 and 3.1.1 (PUBACK 0x87 /
disconnect, SUBACK 0x87 / 0x80), stomp.py (ERROR on SEND and SUBSCRIBE) and autobahn
(ERROR wamp.error.not_authorized). The user logs in with a scrypt-hashed password, so every
login here also goes through the worker-thread check."""

from __future__ import annotations

import asyncio
import queue
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from sec_clients import TIMEOUT, StompPeer, join, leave, ws_url

from protocols.mqtt.codec import MQTTCodec, encode_packet
from protocols.mqtt.frames import NEED_DATA, Connack, Connect, SubAck, Subscribe, Subscription

PASSWORD = "t0pic-pw"


class User:
    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.name = f"sensor-{secrets.token_hex(4)}"
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                                auth=("guest", "guest"), timeout=TIMEOUT)
        for path, body in (
                (f"/users/{self.name}", {"password": PASSWORD, "tags": ""}),
                (f"/permissions/%2F/{self.name}", {"configure": ".*", "write": ".*",
                                                   "read": ".*"}),
                (f"/topic-permissions/%2F/{self.name}", {
                    "exchange": "amq.topic", "write": r"^sensors\.{username}\.",
                    "read": r"^sensors\."})):
            assert self.api.put(path, json=body).status_code == 201, path

    @property
    def own(self) -> str:
        return f"sensors.{self.name}"


@pytest.fixture(scope="module")
def user(broker: Any) -> Iterator[User]:
    u = User(broker)
    yield u
    u.api.delete(f"/users/{u.name}")
    u.api.close()


def test_api_lists_topic_permissions_in_rabbitmqs_shape(user: User) -> None:
    expected = {"user": user.name, "vhost": "/", "exchange": "amq.topic",
                "write": r"^sensors\.{username}\.", "read": r"^sensors\."}
    assert expected in user.api.get("/topic-permissions").json()
    assert user.api.get(f"/topic-permissions/%2F/{user.name}").json() == [expected]
    assert user.api.get(f"/users/{user.name}/topic-permissions").json() == [expected]
    assert expected in user.api.get("/vhosts/%2F/topic-permissions").json()
    assert user.api.get("/topic-permissions/%2F/nobody-at-all").status_code == 404
    bad = user.api.put(f"/topic-permissions/%2F/{user.name}", json={"exchange": "x"})
    assert bad.status_code == 400


# -- AMQP ----------------------------------------------------------------------------------


def test_amqp_publish_checked_by_routing_key(user: User) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=user.broker.ports["amqp"],
        credentials=pika.PlainCredentials(user.name, PASSWORD)))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", f"{user.own}.temp", b"ok")
        ch.basic_publish("amq.direct", "sensors.other.temp", b"not a topic exchange")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            ch.basic_publish("amq.topic", "sensors.other.temp", b"denied")
        assert closed.value.reply_code == 403
        assert closed.value.reply_text == (
            "ACCESS_REFUSED - access to topic 'sensors.other.temp' in exchange 'amq.topic' "
            f"in vhost '/' refused for user '{user.name}'")
        assert conn.is_open  # a channel error only
    finally:
        conn.close()


# -- MQTT ----------------------------------------------------------------------------------


class Paho:
    def __init__(self, broker: Any, name: str, protocol: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"c-{secrets.token_hex(4)}", protocol=protocol)
        self.client.username_pw_set(name, PASSWORD)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        connected = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.events.put(
            ("suback", [int(getattr(c, "value", c)) for c in codes]))
        self.client.on_publish = lambda _c, _u, _m, rc, _p: self.events.put(
            ("puback", int(getattr(rc, "value", rc))))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.events.put(
            ("disconnect", int(getattr(rc, "value", rc))))
        self.client.connect("127.0.0.1", broker.ports["mqtt"])
        self.client.loop_start()
        assert connected.wait(TIMEOUT), "no CONNACK"

    def next(self, kind: str) -> Any:
        while True:
            try:
                got, value = self.events.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {kind} within {TIMEOUT} s") from None
            if got == kind:
                return value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt5_publish_gets_puback_0x87_and_subscribe_suback_0x87(user: User) -> None:
    c = Paho(user.broker, user.name, mqtt.MQTTv5)
    try:
        c.client.publish(f"sensors/{user.name}/temp", b"ok", qos=1)
        assert c.next("puback") in (0x00, 0x10)  # success / no matching subscribers
        c.client.publish("sensors/other/temp", b"denied", qos=1)
        assert c.next("puback") == 0x87
        c.client.subscribe([("sensors/#", 1), ("alerts/#", 1)])
        assert c.next("suback") == [1, 0x87]
    finally:
        c.close()


def test_mqtt311_publish_denied_disconnects_subscribe_gets_0x80(user: User) -> None:
    c = Paho(user.broker, user.name, mqtt.MQTTv311)
    try:
        c.client.subscribe([("sensors/+/temp", 0), ("alerts/#", 0)])
        assert c.next("suback") == [0, 0x80]
        c.client.publish("sensors/other/temp", b"denied", qos=1)
        assert c.next("disconnect") != 0  # the broker closed the connection
    finally:
        c.close()


def test_mqtt_connect_then_subscribe_in_one_write_waits_for_the_password_check(
        user: User) -> None:
    """The scrypt check runs in a thread while the SUBSCRIBE that came with the CONNECT
    waits; both are answered, in order."""
    codec = MQTTCodec(version=5, server=False)
    connect = Connect(protocol_level=5, client_id=f"raw-{secrets.token_hex(4)}",
                      username=user.name, password=PASSWORD.encode())
    subscribe = Subscribe(1, (Subscription("sensors/#", 0), Subscription("alerts/x", 0)))
    with socket.create_connection(("127.0.0.1", user.broker.ports["mqtt"]),
                                  timeout=TIMEOUT) as sock:
        sock.sendall(encode_packet(connect, 5) + encode_packet(subscribe, 5))
        got: list[Any] = []
        while len(got) < 2:
            packet = codec.next_event()
            if packet is NEED_DATA:
                data = sock.recv(65536)
                assert data, f"closed after {got}"
                codec.receive_data(data)
                continue
            got.append(packet)
    assert isinstance(got[0], Connack) and got[0].reason_code == 0
    assert isinstance(got[1], SubAck) and list(got[1].reason_codes) == [0, 0x87]


# -- STOMP ---------------------------------------------------------------------------------


def test_stomp_send_and_subscribe_to_topics_checked(user: User) -> None:
    ok = StompPeer(user.broker.ports["stomp"], "1.2")
    ok.connect(user.name, PASSWORD)
    ok.subscribe(f"/topic/{user.own}.temp", "s1")
    ok.conn.send(f"/topic/{user.own}.temp", b"allowed", headers={"receipt": "r1"})
    ok.receipt("r1")
    assert ok.message().body == b"allowed"
    ok.close()

    sender = StompPeer(user.broker.ports["stomp"], "1.2")
    sender.connect(user.name, PASSWORD)
    sender.conn.send("/topic/sensors.other.temp", b"denied")
    err = sender.error()
    assert err.headers["message"] == "access_refused"
    assert b"access to topic 'sensors.other.temp' in exchange 'amq.topic'" in err.body
    sender.close()

    reader = StompPeer(user.broker.ports["stomp"], "1.2")
    reader.connect(user.name, PASSWORD)
    reader.conn.subscribe(destination="/topic/alerts.fire", id="s2")
    assert reader.error().headers["message"] == "access_refused"
    reader.close()


# -- WAMP ----------------------------------------------------------------------------------


def test_wamp_publish_and_subscribe_checked(user: User) -> None:
    async def main() -> list[str]:
        s = await join(ws_url(user.broker), authmethods=["ticket"], authid=user.name,
                       secret=PASSWORD)
        errors = []
        await s.publish(f"{user.own}.temp", 1, options=PublishOptions(acknowledge=True))
        await s.subscribe(lambda *a: None, "sensors.x")
        for attempt in (
                s.publish("sensors.other.temp", 1, options=PublishOptions(acknowledge=True)),
                s.subscribe(lambda *a: None, "alerts.fire")):
            try:
                await attempt
            except ApplicationError as exc:
                errors.append(exc.error)
        await leave(s)
        return errors

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == [
        "wamp.error.not_authorized", "wamp.error.not_authorized"]
