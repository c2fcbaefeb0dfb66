"""RabbitMQ's own `rabbitmqadmin` (v1, shipped in Debian's rabbitmq-server package) pointed
at this broker: list queues, exchanges and connections, declare a queue, publish and get."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pika
from mgmt_client import api_for, q

# Debian puts it on PATH; the plugin directory holds the same script
CANDIDATES = ("rabbitmqadmin",)


def rabbitmqadmin(broker: Any, *args: str) -> Any:
    path = next((p for p in map(shutil.which, CANDIDATES) if p), None)
    assert path is not None, "rabbitmqadmin not found: the Makefile's test bootstrap " \
                             "installs Debian's rabbitmq-server package, which ships it"
    result = subprocess.run(
        ["python3", path, "-H", broker.host, "-P", str(broker.ports["http"]),
         "-u", broker.user, "-p", broker.password, "-f", "raw_json", *args],
        capture_output=True, timeout=60, text=True)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    out = result.stdout.strip()
    return json.loads(out) if out.startswith(("[", "{")) else out


def test_rabbitmqadmin_lists_declares_publishes_and_gets(
        broker: Any, unique: Callable[[str], str]) -> None:
    name = unique("admin-q")
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": name}
    conn = pika.BlockingConnection(params)
    api = api_for(broker)
    try:
        assert rabbitmqadmin(broker, "declare", "queue", f"name={name}", "durable=true") \
            == "queue declared"
        assert api.json(f"/queues/%2F/{q(name)}")["durable"] is True
        queues = rabbitmqadmin(broker, "list", "queues", "name", "messages", "durable")
        assert {"name": name, "messages": 0, "durable": True} in queues
        exchanges = rabbitmqadmin(broker, "list", "exchanges", "name", "type")
        assert {"name": "amq.topic", "type": "topic"} in exchanges
        connections = rabbitmqadmin(broker, "list", "connections", "name", "user",
                                    "protocol", "client_properties")
        mine = [c for c in connections
                if c["client_properties"].get("connection_name") == name]
        assert len(mine) == 1
        assert mine[0]["user"] == "guest" and mine[0]["protocol"] == "AMQP 0-9-1"
        assert rabbitmqadmin(broker, "publish", "exchange=amq.default", f"routing_key={name}",
                             "payload=from-admin") == "Message published"
        got = rabbitmqadmin(broker, "get", f"queue={name}", "ackmode=ack_requeue_false")
        assert [m["payload"] for m in got] == ["from-admin"]
        overview = rabbitmqadmin(broker, "show", "overview")
        assert overview[0]["object_totals"]["queues"] >= 1
        assert rabbitmqadmin(broker, "delete", "queue", f"name={name}") == "queue deleted"
        assert api.get(f"/queues/%2F/{q(name)}").status_code == 404
    finally:
        api.close()
        conn.close()
