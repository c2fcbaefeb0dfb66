"""Retained MQTT messages shared by gateway nodes through one RabbitMQ stream
(`--backend rabbitmq`, gateway/upstream/retained.py): two gateway nodes (subprocesses) in
front of the private RabbitMQ node, paho clients on each, pika reading the stream."""

from __future__ import annotations

import queue
import secrets
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gateway.store import serial

from .gateway_node import GatewayNode
from .rabbit import PASSWORD, USER, Cluster
from .test_backend_rabbitmq import TIMEOUT, Peer, pika_connection

STREAM = "gateway.retained"


@pytest.fixture(scope="module")
def nodes(rabbit_node: Cluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayNode, GatewayNode]]:
    a = GatewayNode(rabbit_node, tmp_path_factory.mktemp("ret-a")).start()
    b = GatewayNode(rabbit_node, tmp_path_factory.mktemp("ret-b")).start()
    yield a, b
    a.stop()
    b.stop()


def retain(port: int, topic: str, payload: bytes) -> None:
    """A retained QoS 1 PUBLISH, once its PUBACK came."""
    peer = Peer(port, f"ret-{secrets.token_hex(4)}")
    try:
        info = peer.client.publish(topic, payload, 1, retain=True)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()
    finally:
        peer.close()


def retained_batch(port: int, topic_filter: str, until: tuple[str, bytes] | None,
                   attempts: int = 50) -> dict[str, bytes]:
    """The retained messages a new subscriber to `topic_filter` gets right after its
    SUBACK. With `until` (a topic and payload): subscribe again (bounded) until it is among
    them (the node has read the stream that far)."""
    for _ in range(attempts):
        peer = Peer(port, f"sub-{secrets.token_hex(4)}")
        try:
            peer.subscribe(topic_filter, 1)
            got: dict[str, bytes] = {}
            while True:
                try:
                    msg = peer.messages.get(timeout=0.5)
                except queue.Empty:
                    break
                assert msg.retain, "a retained message sent on SUBSCRIBE has the retain flag"
                got[msg.topic] = msg.payload
        finally:
            peer.close()
        if until is None or got.get(until[0]) == until[1]:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{until} never became retained on this node")


def test_retained_on_node_a_reaches_a_wildcard_subscriber_on_node_b_also_after_a_restart(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    retain(a.ports["mqtt"], f"home/{tag}/kitchen/temp", b"21.5")
    retain(a.ports["mqtt"], f"home/{tag}/hall/temp", b"19.0")
    retain(a.ports["mqtt"], f"home/{tag}/hall/temp", b"19.5")  # replaces the one before
    # the PUBACK came after the stream's confirm: the records are in RabbitMQ's stream
    with pika_connection(rabbit_node) as conn:
        ch = conn.channel()
        ok = ch.queue_declare(STREAM, passive=True)
        assert ok.method.queue == STREAM
        ch.basic_qos(prefetch_count=1000)
        records: list[dict[str, object]] = []
        done = False

        def on_message(channel: object, method: object, props: object, body: bytes) -> None:
            nonlocal done
            record = serial.decode(body)
            if record.get("kind") == "set" and str(record["topic"]).startswith(f"home/{tag}"):
                records.append(record)
            if len(records) == 3:
                done = True

        ch.basic_consume(STREAM, on_message, auto_ack=False,
                         arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + TIMEOUT
        while not done and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        assert [(r["topic"], r["value"][0]) for r in records] == [  # type: ignore[index]
            (f"home/{tag}/kitchen/temp", b"21.5"), (f"home/{tag}/hall/temp", b"19.0"),
            (f"home/{tag}/hall/temp", b"19.5")]
    # a wildcard subscriber on node B gets every retained message its filter matches
    # (node B tails the stream: a few attempts while it reads the last records)
    got = retained_batch(b.ports["mqtt"], f"home/{tag}/+/temp",
                         (f"home/{tag}/hall/temp", b"19.5"))
    assert got == {f"home/{tag}/kitchen/temp": b"21.5", f"home/{tag}/hall/temp": b"19.5"}
    # node B restarts with an empty memory: it reads the stream from the start before its
    # listeners open, so the first subscriber gets them all at once
    b.stop()
    b.start()
    got = retained_batch(b.ports["mqtt"], f"home/{tag}/#", None, attempts=1)
    assert got == {f"home/{tag}/kitchen/temp": b"21.5", f"home/{tag}/hall/temp": b"19.5"}


def test_an_empty_retained_payload_on_node_b_clears_it_for_a_subscriber_on_node_a(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    retain(a.ports["mqtt"], f"cfg/{tag}/mode", b"eco")
    # node B learns it from the stream, then clears it (an empty retained payload)
    assert retained_batch(b.ports["mqtt"], f"cfg/{tag}/#", (f"cfg/{tag}/mode", b"eco")) == {
        f"cfg/{tag}/mode": b"eco"}
    retain(b.ports["mqtt"], f"cfg/{tag}/mode", b"")
    # a record after the clear: once node A has it, it has read the clear as well
    retain(b.ports["mqtt"], f"cfg/{tag}/after", b"1")
    got = retained_batch(a.ports["mqtt"], f"cfg/{tag}/#", (f"cfg/{tag}/after", b"1"))
    assert got == {f"cfg/{tag}/after": b"1"}


def test_an_expired_retained_message_is_not_sent_by_another_node(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    """MQTT 5 message expiry holds across nodes: the expiry travels with the record."""
    a, b = nodes
    tag = secrets.token_hex(4)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"exp-{tag}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(USER, PASSWORD)
    client.connect("127.0.0.1", a.ports["mqtt"])
    client.loop_start()
    try:
        props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 1
        info = client.publish(f"exp/{tag}/short", b"soon gone", 1, retain=True,
                              properties=props)
        info.wait_for_publish(TIMEOUT)
        info = client.publish(f"exp/{tag}/long", b"stays", 1, retain=True)
        info.wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    time.sleep(1.5)  # past the 1 s expiry (not a timing assertion: the wait makes it expire)
    got = retained_batch(b.ports["mqtt"], f"exp/{tag}/#", (f"exp/{tag}/long", b"stays"))
    assert got == {f"exp/{tag}/long": b"stays"}
