"""Retained MQTT messages shared by gateway nodes through one RabbitMQ stream
(`--backend rabbitmq`, gateway/upstream/retained.py): two gateway nodes (subprocesses) in
front of the private RabbitMQ node, paho clients on each, pika reading the stream."""

from __future__ import annotations

import contextlib
import queue
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika

from gateway.store import serial

from .gateway_node import GatewayNode
from .rabbit import PASSWORD, USER, Cluster
from .test_backend_rabbitmq import TIMEOUT, Peer, pika_connection

STREAM = "gateway.retained"



@contextlib.contextmanager
def stream_reader(rabbit: Cluster) -> Iterator[pika.BlockingConnection]:
    """A pika connection for reading the stream. At close, pika nacks the deliveries it
    holds and has not handed out, which RabbitMQ refuses on a stream (540, closing the
    connection): that close ends the reading, as the test wants."""
    conn = pika_connection(rabbit)
    try:
        yield conn
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            conn.close()


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
    with stream_reader(rabbit_node) as conn:
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


def stream_records(rabbit: Cluster, prefix: str, until: Callable[[list[dict[str, Any]]], bool]
                   ) -> list[dict[str, Any]]:
    """The stream's records whose topic starts with `prefix`, with their offsets, read
    with pika from the first offset until `until(records)` (bounded)."""
    deadline = time.monotonic() + 3 * TIMEOUT
    while True:
        records: list[dict[str, Any]] = []
        with stream_reader(rabbit) as conn:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1000)

            def on_message(channel: Any, method: Any, props: Any, body: bytes,
                           into: list[dict[str, Any]] = records) -> None:
                record = serial.decode(body)
                if str(record.get("topic", "")).startswith(prefix):
                    record["offset"] = props.headers["x-stream-offset"]
                    into.append(record)
                channel.basic_ack(method.delivery_tag)

            ch.basic_consume(STREAM, on_message, arguments={"x-stream-offset": "first"})
            conn.process_data_events(time_limit=1.0)
        if until(records) or time.monotonic() > deadline:
            return records


def test_live_retained_messages_are_appended_again_and_keep_their_value(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode],
        tmp_path: Path) -> None:
    """A node with a short `retained_refresh` appends a live message again (a `refresh`
    record naming the offset it copies); the value stays. The stream exists already with
    other arguments (7 days): the node uses it as it is."""
    _, b = nodes
    config = tmp_path / "gateway.toml"
    config.write_text('[backend.rabbitmq]\nretained_max_age = "1h"\nretained_refresh = 2\n')
    c = GatewayNode(rabbit_node, tmp_path / "data", extra=["--config", str(config)]).start()
    try:
        assert "exists with other arguments" in c.output()
        tag = secrets.token_hex(4)
        retain(c.ports["mqtt"], f"ref/{tag}/v", b"kept")
        records = stream_records(rabbit_node, f"ref/{tag}/",
                                 lambda rs: any(r["kind"] == "refresh" for r in rs))
        kinds = [r["kind"] for r in records]
        assert kinds[0] == "set" and "refresh" in kinds, kinds
        refresh = next(r for r in records if r["kind"] == "refresh")
        assert refresh["origin"] == records[0]["offset"]
        assert refresh["value"][0] == b"kept"
        # every node still has the value
        for port in (c.ports["mqtt"], b.ports["mqtt"]):
            assert retained_batch(port, f"ref/{tag}/#", (f"ref/{tag}/v", b"kept")) == {
                f"ref/{tag}/v": b"kept"}
    finally:
        c.stop()
