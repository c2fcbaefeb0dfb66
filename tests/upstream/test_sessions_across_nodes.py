"""MQTT sessions across gateway nodes (`--backend rabbitmq`), with paho against two gateway
nodes (subprocesses) in front of private RabbitMQ nodes: a persistent session made on node
A is found by node B in RabbitMQ (session present, its subscriptions and their options, the
messages published meanwhile) without subscribing again; a session whose queue expired is
gone; a clean start on node B ends it; the same client id connecting to node B closes node
A's connection (DISCONNECT 0x8E on MQTT 5) and publishes its will; a kill -9 of node A
under QoS 1 load loses no PUBACKed message once the subscriber reconnects to node B; a QoS
2 exchange PUBREC'd by node A before its kill completes on node B, delivered once."""

from __future__ import annotations

import queue
import secrets
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.mqtt.codec import decode_packet, encode_packet
from protocols.mqtt.frames import (
    MQTT_311,
    Connack,
    Connect,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)

from .gateway_node import GatewayNode
from .rabbit import PASSWORD, USER, Cluster

TIMEOUT = 10.0



class Client:
    """A paho client (MQTT 3.1.1 or 5) logged in as the test user, not reconnecting by
    itself; every wait bounded."""

    def __init__(self, port: int, client_id: str, *, v5: bool = False, clean: bool = True,
                 expiry: int | None = None, will: tuple[str, bytes] | None = None,
                 connect: bool = True) -> None:
        self.v5 = v5
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": clean}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, reconnect_on_failure=False, **kwargs)
        self.client.username_pw_set(USER, PASSWORD)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.session_present: bool | None = None
        self.disconnect_reason: int | None = None
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(codes)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.port, self.clean, self.expiry = port, clean, expiry
        if connect:
            self.connect()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.disconnect_reason = int(getattr(reason, "value", reason))
        self.disconnected.set()

    def connect(self) -> None:
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self.expiry is not None:
                props.SessionExpiryInterval = self.expiry
            self.client.connect("127.0.0.1", self.port, clean_start=self.clean,
                                properties=props)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def subscribe(self, topic: str, qos: int, *, sub_id: int | None = None,
                  no_local: bool = False) -> None:
        if self.v5:
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            self.client.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=no_local),
                                  properties=props)
        else:
            self.client.subscribe(topic, qos)
        codes = self.subacks.get(timeout=TIMEOUT)
        assert [int(getattr(c, "value", c)) for c in codes] == [qos]

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no MQTT message") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def session_queue(client_id: str) -> str:
    return f"mqtt-subscription-{client_id}qos1"


def api_get(rabbit: Cluster, path: str) -> Any:
    node = rabbit.nodes[0]
    response = httpx.get(f"http://127.0.0.1:{node.management_port}/api/{path}",
                         auth=(USER, PASSWORD), timeout=TIMEOUT)
    return response.json() if response.status_code == 200 else None


def delete_queue(rabbit: Cluster, name: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(rabbit.nodes[0].url())) as conn:
        conn.channel().queue_delete(name)


def queue_exists(rabbit: Cluster, name: str) -> bool:
    with pika.BlockingConnection(pika.URLParameters(rabbit.nodes[0].url())) as conn:
        try:
            conn.channel().queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
    return True


def test_persistent_session_is_found_on_another_node(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"dev-{tag}"
    first = Client(a.ports["mqtt"], client_id, clean=False)
    assert first.session_present is False
    first.subscribe(f"fleet/{tag}/#", 1)
    first.subscribe(f"alerts/{tag}", 0)
    first.close()
    # the subscriptions are the queue's bindings on amq.topic, with their QoS; RabbitMQ
    # lets one consumer at a time deliver from the queue
    found = api_get(rabbit_node, f"queues/%2F/{session_queue(client_id)}")
    assert found["arguments"]["x-single-active-consumer"] is True
    bindings = api_get(rabbit_node, f"queues/%2F/{session_queue(client_id)}/bindings")
    qos = {x["routing_key"]: x["arguments"].get("x-mqtt-subscription-qos")
           for x in bindings if x["source"] == "amq.topic"}
    assert qos == {f"fleet.{tag}.#": 1, f"alerts.{tag}": 0}
    pub = Client(a.ports["mqtt"], f"pub-{tag}")
    try:
        for i in range(10):
            pub.publish(f"fleet/{tag}/m", f"m{i}".encode(), 1)
        pub.publish(f"alerts/{tag}", b"alert", 1)
    finally:
        pub.close()
    second = Client(b.ports["mqtt"], client_id, clean=False)  # no SUBSCRIBE on node B
    try:
        assert second.session_present is True
        got = {m.payload: m.qos for m in (second.message() for _ in range(11))}
        # each at the QoS of its subscription: the options came back from the bindings
        assert got == {**{f"m{i}".encode(): 1 for i in range(10)}, b"alert": 0}
        # the subscription is live on node B: a message published now reaches it too
        later = Client(b.ports["mqtt"], f"pub2-{tag}")
        try:
            later.publish(f"fleet/{tag}/later", b"later", 1)
        finally:
            later.close()
        assert second.message().payload == b"later"
    finally:
        second.close()
    delete_queue(rabbit_node, session_queue(client_id))


def test_mqtt5_subscription_options_come_back_on_another_node(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"v5-{tag}"
    first = Client(a.ports["mqtt"], client_id, v5=True, clean=True, expiry=600)
    first.subscribe(f"opts/{tag}/#", 1, sub_id=42, no_local=True)
    first.subscribe(f"low/{tag}", 0, sub_id=7)
    first.close()
    bindings = api_get(rabbit_node, f"queues/%2F/{session_queue(client_id)}/bindings")
    kept = {x["routing_key"]: x["arguments"] for x in bindings if x["source"] == "amq.topic"}
    assert kept == {f"opts.{tag}.#": {"x-mqtt-subscription-qos": 1, "x-mqtt-no-local": True,
                                      "x-mqtt-subscription-id": 42},
                    f"low.{tag}": {"x-mqtt-subscription-qos": 0,
                                   "x-mqtt-subscription-id": 7}}
    second = Client(b.ports["mqtt"], client_id, v5=True, clean=False, expiry=600)
    other = Client(b.ports["mqtt"], f"other-{tag}", v5=True)
    try:
        assert second.session_present is True
        second.publish(f"opts/{tag}/own", b"own", 1)  # no local: not sent back
        other.publish(f"opts/{tag}/x", b"theirs", 1)
        message = second.message()
        assert (message.payload, message.qos) == (b"theirs", 1)
        assert message.properties is not None
        assert message.properties.SubscriptionIdentifier == [42]
        other.publish(f"low/{tag}", b"low", 1)
        message = second.message()
        assert (message.payload, message.qos) == (b"low", 0)
        assert message.properties is not None
        assert message.properties.SubscriptionIdentifier == [7]
        with pytest.raises(queue.Empty):
            second.messages.get(timeout=1.0)
    finally:
        other.close()
        second.close()
    delete_queue(rabbit_node, session_queue(client_id))


def test_a_session_queue_made_as_rabbitmqs_mqtt_plugin_makes_it_is_resumed(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    """A classic durable queue with x-expires and a binding without arguments, no single
    active consumer: resumed as it is, the binding's subscription at QoS 1."""
    _, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"plugin-{tag}"
    name = session_queue(client_id)
    with pika.BlockingConnection(pika.URLParameters(rabbit_node.nodes[0].url())) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(name, durable=True, arguments={"x-expires": 600_000})
        ch.queue_bind(name, "amq.topic", f"legacy.{tag}")
        ch.basic_publish("amq.topic", f"legacy.{tag}", b"waiting",
                         pika.BasicProperties(delivery_mode=2))
    client = Client(b.ports["mqtt"], client_id, clean=False)
    try:
        assert client.session_present is True
        message = client.message()
        assert (message.payload, message.qos) == (b"waiting", 1)  # persistent: QoS 1
        bindings = api_get(rabbit_node, f"queues/%2F/{name}/bindings")
        assert [x["arguments"] for x in bindings if x["source"] == "amq.topic"] == [
            {"x-mqtt-subscription-qos": 1}]
        found = api_get(rabbit_node, f"queues/%2F/{name}")
        assert "x-single-active-consumer" not in found["arguments"]
    finally:
        client.close()
    delete_queue(rabbit_node, name)


def test_an_expired_session_queue_is_no_session(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"exp-{tag}"
    first = Client(a.ports["mqtt"], client_id, v5=True, clean=True, expiry=1)
    first.subscribe(f"exp/{tag}", 1)
    first.close()
    deadline = time.monotonic() + 30
    while queue_exists(rabbit_node, session_queue(client_id)):
        assert time.monotonic() < deadline, "RabbitMQ did not expire the session queue"
        time.sleep(0.5)
    second = Client(b.ports["mqtt"], client_id, v5=True, clean=False, expiry=60)
    try:
        assert second.session_present is False
    finally:
        second.close()
    with pika.BlockingConnection(pika.URLParameters(rabbit_node.nodes[0].url())) as conn:
        conn.channel().queue_delete(session_queue(client_id))


def test_a_clean_start_on_node_b_ends_the_session_made_on_node_a(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"clean-{tag}"
    first = Client(a.ports["mqtt"], client_id, clean=False)
    first.subscribe(f"old/{tag}", 1)
    first.close()
    pub = Client(a.ports["mqtt"], f"pub-{tag}")
    try:
        pub.publish(f"old/{tag}", b"kept for the old session", 1)
        second = Client(b.ports["mqtt"], client_id, clean=True)
        try:
            assert second.session_present is False
            second.subscribe(f"new/{tag}", 1)  # a transient queue of the same name now
            found = api_get(rabbit_node, f"queues/%2F/{session_queue(client_id)}")
            assert (found["durable"], found["auto_delete"]) == (False, True)
            pub.publish(f"old/{tag}", b"old", 1)
            pub.publish(f"new/{tag}", b"new", 1)
            assert second.message().payload == b"new"
            with pytest.raises(queue.Empty):
                second.messages.get(timeout=1.0)
        finally:
            second.close()
    finally:
        pub.close()


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_same_client_id_on_node_b_closes_node_a_and_publishes_its_will(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode], v5: bool) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"take-{tag}"
    watcher = Client(b.ports["mqtt"], f"watch-{tag}")
    watcher.subscribe(f"will/{tag}", 1)
    first = Client(a.ports["mqtt"], client_id, v5=v5, clean=v5, expiry=600 if v5 else None,
                   will=(f"will/{tag}", b"gone"))
    first.subscribe(f"work/{tag}", 1)
    second = Client(b.ports["mqtt"], client_id, v5=v5, clean=False,
                    expiry=600 if v5 else None)
    try:
        assert first.disconnected.wait(TIMEOUT), "node A kept the connection"
        if v5:
            assert first.disconnect_reason == 0x8E  # session taken over
        assert watcher.message().payload == b"gone"
        assert second.session_present is True
        # node B delivers from the session queue now (its consumer is the active one)
        pub = Client(a.ports["mqtt"], f"pub-{tag}")
        try:
            pub.publish(f"work/{tag}", b"job", 1)
        finally:
            pub.close()
        assert second.message().payload == b"job"
        assert first.messages.empty()
    finally:
        first.client.loop_stop()
        second.close()
        watcher.close()
    delete_queue(rabbit_node, session_queue(client_id))


def test_kill_9_of_a_gateway_node_under_qos1_load_loses_no_acknowledged_message(
        rabbit_cluster: Cluster, tmp_path: Path) -> None:
    """A bounded QoS 1 publisher on node B, a persistent subscriber on node A; node A is
    killed (SIGKILL) while messages flow; the subscriber reconnects to node B: every
    message node B PUBACKed arrives (duplicates allowed, counted)."""
    a = GatewayNode(rabbit_cluster, tmp_path / "a").start()
    b = GatewayNode(rabbit_cluster, tmp_path / "b").start()
    tag = secrets.token_hex(4)
    client_id = f"kill-{tag}"
    total = 400
    acked: list[bytes] = []
    received: Counter[bytes] = Counter()
    subscriber = Client(a.ports["mqtt"], client_id, clean=False)
    publisher = Client(b.ports["mqtt"], f"load-{tag}")
    try:
        subscriber.subscribe(f"load/{tag}", 1)

        def publish() -> None:
            for i in range(total):
                payload = f"{i:05d}".encode()
                info = publisher.client.publish(f"load/{tag}", payload, 1)
                info.wait_for_publish(TIMEOUT)
                if info.is_published():  # PUBACKed by node B
                    acked.append(payload)
                time.sleep(0.005)

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while sum(received.values()) < total // 4:
            assert time.monotonic() < deadline, "no messages flowing to node A"
            received[bytes(subscriber.message().payload)] += 1
        a.kill()
        assert subscriber.disconnected.wait(TIMEOUT)
        subscriber.client.loop_stop()
        while not subscriber.messages.empty():  # delivered before the kill
            received[bytes(subscriber.messages.get().payload)] += 1
        again = Client(b.ports["mqtt"], client_id, clean=False)
        assert again.session_present is True
        thread.join(120)
        assert not thread.is_alive()
        assert len(acked) == total
        deadline = time.monotonic() + 60
        while set(acked) - set(received):
            assert time.monotonic() < deadline, (
                f"{len(set(acked) - set(received))} PUBACKed messages lost")
            try:
                received[bytes(again.messages.get(timeout=1.0).payload)] += 1
            except queue.Empty:
                continue
        duplicates = sum(n - 1 for n in received.values())
        print(f"kill -9 under QoS 1 load: {total} PUBACKed, 0 lost, {duplicates} duplicates")
        again.close()
    finally:
        publisher.close()
        subscriber.client.loop_stop()
        a.kill()
        b.stop()
    delete_queue(rabbit_cluster, session_queue(client_id))


class RawClient:
    """MQTT 3.1.1 over a plain socket with the project's codec, for the one exchange paho
    cannot be stopped in the middle of: a QoS 2 PUBLISH PUBREC'd, then the node killed."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        self.send(Connect(client_id, MQTT_311, clean_start=False, username=USER,
                          password=PASSWORD.encode()))
        connack = self.read()
        assert isinstance(connack, Connack) and connack.reason_code == 0
        self.session_present = connack.session_present

    def send(self, packet: Any) -> None:
        self.sock.sendall(encode_packet(packet, MQTT_311))

    def read(self) -> Any:
        while True:
            if len(self.buffer) >= 2:
                length, shift, i = 0, 0, 1
                while i < len(self.buffer):
                    byte = self.buffer[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        break
                else:
                    i = -1
                if i > 0 and len(self.buffer) >= i + length:
                    first, body = self.buffer[0], self.buffer[i:i + length]
                    self.buffer = self.buffer[i + length:]
                    return decode_packet(first, body, MQTT_311)
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


def test_qos2_publish_pubrecd_before_a_kill_9_completes_on_node_b_exactly_once(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode], tmp_path: Path) -> None:
    """A QoS 2 PUBLISH is routed through RabbitMQ (confirmed) before its PUBREC: the client
    that got the PUBREC from node A, killed then, sends its PUBREL to node B, gets PUBCOMP,
    and the subscriber gets the message once."""
    _, b = nodes
    a = GatewayNode(rabbit_node, tmp_path / "a").start()
    tag = secrets.token_hex(4)
    client_id = f"q2-{tag}"
    watcher = Client(b.ports["mqtt"], f"watch-{tag}")
    raw: RawClient | None = None
    try:
        watcher.subscribe(f"q2/{tag}", 2)
        raw = RawClient(a.ports["mqtt"], client_id)
        raw.send(Subscribe(1, (Subscription(f"own/{tag}", 1),)))  # a session to resume
        assert isinstance(raw.read(), SubAck)
        raw.send(Publish(f"q2/{tag}", b"once", 2, packet_id=7))
        pubrec = raw.read()
        assert isinstance(pubrec, PubRec) and pubrec.packet_id == 7
        a.kill()
        raw.close()
        raw = RawClient(b.ports["mqtt"], client_id)
        assert raw.session_present
        raw.send(PubRel(7))
        pubcomp = raw.read()
        assert isinstance(pubcomp, PubComp) and pubcomp.packet_id == 7
        assert watcher.message().payload == b"once"
        with pytest.raises(queue.Empty):
            watcher.messages.get(timeout=2.0)
    finally:
        if raw is not None:
            raw.close()
        watcher.close()
        a.kill()
    delete_queue(rabbit_node, session_queue(client_id))
