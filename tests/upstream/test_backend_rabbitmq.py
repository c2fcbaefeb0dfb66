"""`gateway serve --backend rabbitmq`: gateway nodes (subprocesses) in front of a private
RabbitMQ node, with real clients: MQTT (paho) across two gateway nodes at QoS 0 and 1, MQTT
to and from pika on RabbitMQ itself, STOMP (stomp.py) to pika with the receipt only after
RabbitMQ's confirm, and a persistent MQTT session that moves from node A to node B."""

from __future__ import annotations

import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp

from .gateway_node import REPO_ROOT, GatewayNode
from .rabbit import PASSWORD, USER, Cluster

TIMEOUT = 10.0



class Peer:
    """A paho MQTT 3.1.1 client logged in as the test user; every wait bounded."""

    def __init__(self, port: int, client_id: str, *, clean: bool = True) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=clean)
        self.client.username_pw_set(USER, PASSWORD)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(codes)
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def subscribe(self, topic: str, qos: int) -> None:
        self.client.subscribe(topic, qos)
        codes = self.subacks.get(timeout=TIMEOUT)
        assert [int(getattr(c, "value", c)) for c in codes] == [qos]

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def message(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no MQTT message") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pika_connection(rabbit: Cluster) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(rabbit.nodes[0].url()))


def test_mqtt_on_node_a_to_mqtt_on_node_b(nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    sub = Peer(b.ports["mqtt"], f"sub-{tag}")
    pub = Peer(a.ports["mqtt"], f"pub-{tag}")
    try:
        sub.subscribe(f"ab/{tag}/+", 1)  # the SUBACK comes once RabbitMQ has the binding
        for qos in (0, 1):
            pub.publish(f"ab/{tag}/q{qos}", f"hello {qos}".encode(), qos)
            got = sub.message()
            assert (got.topic, got.payload, got.qos) == (f"ab/{tag}/q{qos}",
                                                        f"hello {qos}".encode(), qos)
    finally:
        sub.close()
        pub.close()


def test_mqtt_publish_reaches_a_pika_consumer(rabbit_node: Cluster,
                                              nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, _ = nodes
    tag = secrets.token_hex(4)
    with pika_connection(rabbit_node) as conn:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", f"sensors.{tag}.temp")
        pub = Peer(a.ports["mqtt"], f"pub-{tag}")
        try:
            pub.publish(f"sensors/{tag}/temp", b"21.5", 1)  # PUBACK after RabbitMQ's confirm
        finally:
            pub.close()
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert method is not None, "the PUBACKed message is not in RabbitMQ's queue"
        assert body == b"21.5"
        assert method.routing_key == f"sensors.{tag}.temp"
        assert method.exchange == "amq.topic"


def test_pika_publish_reaches_an_mqtt_subscriber(rabbit_node: Cluster,
                                                 nodes: tuple[GatewayNode, GatewayNode]
                                                 ) -> None:
    _, b = nodes
    tag = secrets.token_hex(4)
    sub = Peer(b.ports["mqtt"], f"sub-{tag}")
    try:
        sub.subscribe(f"cmd/{tag}/#", 1)
        with pika_connection(rabbit_node) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("amq.topic", f"cmd.{tag}.reboot", b"now",
                             pika.BasicProperties(delivery_mode=2))
        got = sub.message()
        assert (got.topic, got.payload) == (f"cmd/{tag}/reboot", b"now")
    finally:
        sub.close()


def test_stomp_send_reaches_pika_with_the_receipt_after_the_confirm(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, _ = nodes
    tag = secrets.token_hex(4)
    with pika_connection(rabbit_node) as conn:
        ch = conn.channel()
        q = ch.queue_declare(f"orders-{tag}", durable=True).method.queue
        client = stomp.Connection12([("127.0.0.1", a.ports["stomp"])])
        receipts: queue.Queue[str] = queue.Queue()

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_receipt(self, frame: Any) -> None:
                receipts.put(frame.headers["receipt-id"])

        client.set_listener("r", Listener())
        client.connect(USER, PASSWORD, wait=True)
        try:
            for i in range(3):
                client.send(f"/amq/queue/{q}", f"order {i}", headers={"persistent": "true"},
                            receipt=f"r{i}")
            got = [receipts.get(timeout=TIMEOUT) for _ in range(3)]
            assert got == ["r0", "r1", "r2"]
            # a receipt came after RabbitMQ's confirm: the messages are in its queue now
            bodies = []
            for _ in range(3):
                method, props, body = ch.basic_get(q, auto_ack=True)
                assert method is not None, "a receipted SEND is not in RabbitMQ's queue"
                bodies.append(body)
                assert props.delivery_mode == 2
            assert bodies == [b"order 0", b"order 1", b"order 2"]
        finally:
            client.disconnect()
        ch.queue_delete(q)


def test_mqtt_on_node_a_to_a_stomp_topic_subscriber_on_node_b(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client = stomp.Connection12([("127.0.0.1", b.ports["stomp"])])
    frames: queue.Queue[tuple[str, Any]] = queue.Queue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_receipt(self, frame: Any) -> None:
            frames.put(("receipt", frame.headers["receipt-id"]))

        def on_message(self, frame: Any) -> None:
            frames.put(("message", frame))

    client.set_listener("l", Listener())
    client.connect(USER, PASSWORD, wait=True)
    pub = Peer(a.ports["mqtt"], f"pub-{tag}")
    try:
        # the receipt comes once the subscription's queue is bound in RabbitMQ
        client.subscribe(f"/topic/alerts.{tag}", id="s1", ack="client-individual",
                         headers={"receipt": "sub"})
        assert frames.get(timeout=TIMEOUT) == ("receipt", "sub")
        pub.publish(f"alerts/{tag}", b"fire", 1)
        kind, frame = frames.get(timeout=TIMEOUT)
        assert kind == "message"
        assert frame.body == "fire"
        client.ack(frame.headers["message-id"], "s1")
    finally:
        pub.close()
        client.disconnect()


def test_persistent_session_moves_from_node_a_to_node_b(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    client_id = f"dev-{tag}"
    first = Peer(a.ports["mqtt"], client_id, clean=False)
    first.subscribe(f"fleet/{tag}/#", 1)
    first.close()
    # RabbitMQ holds the session's queue (quorum by default) while the client is away
    with pika_connection(rabbit_node) as conn:
        ch = conn.channel()
        ok = ch.queue_declare(f"mqtt-subscription-{client_id}qos1", passive=True)
        assert ok.method.consumer_count == 0
    pub = Peer(a.ports["mqtt"], f"pub-{tag}")
    try:
        for i in range(5):
            pub.publish(f"fleet/{tag}/m", f"m{i}".encode(), 1)
    finally:
        pub.close()
    second = Peer(b.ports["mqtt"], client_id, clean=False)
    try:
        # node B finds the session in RabbitMQ; subscribing again to the same filter at the
        # same QoS changes nothing there (test_sessions_across_nodes.py does not subscribe)
        second.subscribe(f"fleet/{tag}/#", 1)
        got = sorted(second.message().payload for _ in range(5))
        assert got == [f"m{i}".encode() for i in range(5)]
    finally:
        second.close()
    with pika_connection(rabbit_node) as conn:
        ch = conn.channel()
        ok = ch.queue_declare(f"mqtt-subscription-{client_id}qos1", passive=True)
        deadline = time.monotonic() + TIMEOUT
        while ok.method.message_count and time.monotonic() < deadline:
            time.sleep(0.1)
            ok = ch.queue_declare(f"mqtt-subscription-{client_id}qos1", passive=True)
        assert ok.method.message_count == 0, "the acknowledged messages are still upstream"
        ch.queue_delete(f"mqtt-subscription-{client_id}qos1")


def serve(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "serve", "--data-dir",
                           str(tmp_path), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("args", "expected"), [
    (["--backend", "rabbitmq"], "backend.rabbitmq.urls: backend \"rabbitmq\" needs the URL"),
    (["--backend", "rabbitmq", "--upstream", "http://u:secret@h:5672/",
      "--upstream-management", "http://u:p@h:15672"], "--upstream: must be an amqp:// URL"),
    (["--backend", "rabbitmq", "--upstream", "amqp://u:p@h:5672/%2F"],
     "needs RabbitMQ's management API"),
    (["--workers", "2"], "more than one worker needs backend \"rabbitmq\""),
    (["--backend", "rabbitmq", "--upstream", "amqp://u:p@h:5672/%2F", "--upstream-management",
      "http://u:p@h:15672", "--workers", "0"], "--workers: must be 1 or more"),
])
def test_bad_backend_flags_are_refused_at_start(args: list[str], expected: str,
                                                tmp_path: Path) -> None:
    done = serve(*args, tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "secret" not in done.stderr


def test_no_rabbitmq_node_answering_stops_the_start(tmp_path: Path) -> None:
    from .rabbit import free_port

    port = free_port()
    done = serve("--backend", "rabbitmq", "--upstream", f"amqp://u:p@127.0.0.1:{port}/%2F",
                 "--upstream-management", f"http://u:p@127.0.0.1:{port}",
                 "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "off",
                 tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "backend rabbitmq: no upstream node answered" in done.stderr
