"""Prometheus /metrics with RabbitMQ's names, and the message trace (where did it go)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pika
import pytest
from mgmt_client import Api, api_for, q, wait_for
from prometheus_client.parser import text_string_to_metric_families

DEADLINE = 10.0


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


def scrape(broker: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://{broker.host}:{broker.ports['http']}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def poll(check: Callable[[], Any], what: str) -> Any:
    return wait_for(check, what, DEADLINE)


def test_metrics_use_rabbitmq_names_and_count_per_protocol(
        broker: Any, api: Api, unique: Callable[[str], str]) -> None:
    name = unique("metrics-q")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        before = scrape(broker)
        for key in ("rabbitmq_identity_info", "rabbitmq_build_info", "rabbitmq_queues",
                    "rabbitmq_connections", "rabbitmq_process_resident_memory_bytes",
                    "rabbitmq_process_open_fds", "rabbitmq_erlang_uptime_seconds"):
            assert any(k[0] == key for k in before), key
        received = ("rabbitmq_global_messages_received_total", (("protocol", "amqp091"),))
        start = before.get(received, 0.0)
        for _ in range(5):
            ch.basic_publish("", name, b"x")
        conn.process_data_events(time_limit=0)
        after = poll(lambda: (m := scrape(broker)).get(received, 0) >= start + 5 and m,
                     "the AMQP publishes in rabbitmq_global_messages_received_total")
        assert after[("rabbitmq_queue_messages_ready", ())] >= 5
        assert after[("rabbitmq_queue_messages", ())] >= 5
        assert after[("gateway_connections", (("protocol", "amqp"),))] >= 1
        assert after[("gateway_connections_opened_total", (("protocol", "amqp"),))] >= 1
        assert after[("gateway_messages_received_total", (("protocol", "amqp091"),))] >= 5
        assert after[("rabbitmq_alarms_memory_used_watermark", ())] == 0
    finally:
        api.delete(f"/queues/%2F/{q(name)}")
        conn.close()


def test_trace_follows_a_message_through_exchanges_to_queues_and_consumers(
        broker: Any, api: Api, unique: Callable[[str], str]) -> None:
    outer, inner = unique("trace-x1"), unique("trace-x2")
    consumed, waiting = unique("trace-consumed"), unique("trace-waiting")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.exchange_declare(outer, "topic", auto_delete=False)
        ch.exchange_declare(inner, "fanout")
        ch.exchange_bind(inner, outer, "orders.#")
        ch.queue_declare(consumed)
        ch.queue_declare(waiting)
        ch.queue_bind(consumed, inner)
        ch.queue_bind(waiting, outer, "orders.eu")
        tag = ch.basic_consume(consumed, lambda *a: None)
        assert api.put("/traces/%2F", {"enabled": True}).status_code == 204
        ch.basic_publish(outer, "orders.eu", b"order 1",
                         pika.BasicProperties(message_id="m-1"))
        stomp = socket.create_connection((broker.host, broker.ports["stomp"]), timeout=10)
        stomp.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n"
                      b"\x00")
        assert stomp.recv(4096).startswith(b"CONNECTED")
        stomp.sendall(f"SEND\ndestination:/exchange/{outer}/orders.us\n\nfrom stomp\x00"
                      .encode())

        def records() -> list[dict[str, Any]]:
            data = api.json("/traces/%2F")
            assert data["enabled"] is True
            return [r for r in data["records"] if r["exchange"] == outer]

        found = poll(lambda: len(records()) >= 2 and records(), "two traced publishes")
        stomp.close()
        by_key = {r["routing_key"]: r for r in found}
        amqp = by_key["orders.eu"]
        assert amqp["origin"] == "amqp091" and amqp["message_id"] == "m-1"
        assert amqp["routed"] is True and amqp["payload_preview"] == "order 1"
        hops = {(h["from"], h["to"], h["to_type"]) for h in amqp["hops"]}
        assert {(outer, inner, "exchange"), (inner, consumed, "queue"),
                (outer, waiting, "queue")} <= hops
        outcome = {r["queue"]: r for r in amqp["queues"]}
        assert outcome[consumed]["outcome"] == "delivered"
        assert outcome[consumed]["consumer"]["consumer_tag"] == tag
        assert outcome[consumed]["consumer"]["protocol"] == "AMQP 0-9-1"
        assert outcome[waiting]["outcome"] == "queued"
        via_stomp = by_key["orders.us"]
        assert via_stomp["origin"] == "stomp"
        assert [r["queue"] for r in via_stomp["queues"]] == [consumed]
        assert api.put("/traces/%2F", {"enabled": False}).status_code == 204
        ch.basic_publish(outer, "orders.eu", b"order 2")
        conn.process_data_events(time_limit=0)
        assert api.json(f"/queues/%2F/{q(waiting)}")["messages"] >= 1
        assert all(r["payload_preview"] != "order 2"
                   for r in api.json("/traces/%2F")["records"])
    finally:
        api.delete("/traces/%2F")
        for queue in (consumed, waiting):
            api.delete(f"/queues/%2F/{q(queue)}")
        for x in (outer, inner):
            api.delete(f"/exchanges/%2F/{q(x)}")
        conn.close()
