"""The management API against a running broker, with a real HTTP client (httpx) and real
protocol clients (pika; raw MQTT and STOMP frames) on the other side."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from mgmt_client import Api, api_for, q, wait_for

DEADLINE = 10.0


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


# -- auth and the node --------------------------------------------------------------------


def test_requests_without_or_with_bad_credentials_are_401(api: Api) -> None:
    anonymous = api.client.get("/api/overview", auth=None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    bad = api.as_user("guest", "wrong")
    try:
        response = bad.get("/overview")
        assert response.status_code == 401
        assert response.json() == {"error": "not_authorised", "reason": "Login failed"}
    finally:
        bad.close()


def test_whoami_overview_nodes_and_alarms(api: Api, broker: Any) -> None:
    assert api.json("/whoami") == {"name": "guest", "tags": ["administrator"]}
    overview = api.json("/overview")
    for key in ("management_version", "rabbitmq_version", "node", "message_stats",
                "queue_totals", "object_totals", "listeners", "exchange_types"):
        assert key in overview
    ports = {(entry["protocol"], entry["port"]) for entry in overview["listeners"]}
    assert ("amqp", broker.amqp_port) in ports
    assert ("http", broker.ports["http"]) in ports
    nodes = api.json("/nodes")
    assert len(nodes) == 1 and nodes[0]["running"] is True
    assert nodes[0]["mem_used"] > 0 and nodes[0]["fd_total"] > 0
    assert api.json(f"/nodes/{q(nodes[0]['name'])}")["name"] == nodes[0]["name"]
    assert api.json("/health/checks/alarms") == {"status": "ok"}
    assert api.json(f"/health/checks/port-listener/{broker.amqp_port}") == {"status": "ok"}
    assert api.get("/health/checks/port-listener/1").status_code == 503
    assert api.get("/no/such/endpoint").status_code == 404


# -- queues, exchanges, bindings ---------------------------------------------------------


def test_queue_declare_show_list_and_delete(api: Api, unique: Callable[[str], str]) -> None:
    name = unique("mgmt-q")
    path = f"/queues/%2F/{q(name)}"
    created = api.put(path, {"durable": True, "auto_delete": False,
                             "arguments": {"x-max-length": 10}})
    assert created.status_code == 201
    assert api.put(path, {"durable": True, "arguments": {"x-max-length": 10}}).status_code \
        == 204
    clash = api.put(path, {"durable": False})
    assert clash.status_code == 400 and "inequivalent arg 'durable'" in clash.json()["reason"]
    shown = api.json(path)
    assert shown["name"] == name and shown["vhost"] == "/" and shown["durable"] is True
    assert shown["arguments"] == {"x-max-length": 10}
    assert shown["messages"] == 0 and shown["consumers"] == 0
    assert "messages_details" in shown and "rate" in shown["messages_details"]
    names = [item["name"] for item in api.json("/queues")]
    assert name in names
    assert name in [item["name"] for item in api.json("/queues/%2F")]
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404


def test_publish_get_browse_and_purge(api: Api, broker: Any,
                                      unique: Callable[[str], str]) -> None:
    name = unique("mgmt-msgs")
    assert api.put(f"/queues/%2F/{q(name)}", {"durable": False}).status_code == 201
    for i in range(3):
        routed = api.post("/exchanges/%2F/amq.default/publish", {
            "routing_key": name, "payload": f"m{i}", "payload_encoding": "string",
            "properties": {"content_type": "text/plain", "headers": {"n": i}}})
        assert routed.json() == {"routed": True}
    binary = api.post("/exchanges/%2F/amq.default/publish", {
        "routing_key": name, "payload": base64.b64encode(b"\xff\x00").decode(),
        "payload_encoding": "base64", "properties": {}})
    assert binary.json() == {"routed": True}
    unrouted = api.post("/exchanges/%2F/amq.default/publish", {
        "routing_key": unique("nowhere"), "payload": "x", "payload_encoding": "string",
        "properties": {}})
    assert unrouted.json() == {"routed": False}

    browsed = api.json(f"/queues/%2F/{q(name)}/browse")
    assert browsed["ready"] == 4
    assert [m["payload"] for m in browsed["messages"][:3]] == ["m0", "m1", "m2"]
    assert browsed["messages"][3]["payload_encoding"] == "base64"
    assert all(m["redelivered"] is False for m in browsed["messages"])
    assert api.json(f"/queues/%2F/{q(name)}/browse", offset=1, count=1)["messages"][0][
        "payload"] == "m1"

    got = api.post(f"/queues/%2F/{q(name)}/get", {"count": 2, "ackmode": "ack_requeue_true",
                                                   "encoding": "auto"})
    assert got.status_code == 200
    messages = got.json()
    assert [m["payload"] for m in messages] == ["m0", "m1"]
    assert messages[0]["properties"]["headers"] == {"n": 0}
    assert messages[0]["properties"]["content_type"] == "text/plain"
    assert messages[0]["routing_key"] == name and messages[0]["exchange"] == ""
    # requeued at the head, in order, now redelivered
    again = api.post(f"/queues/%2F/{q(name)}/get", {"count": 1, "ackmode": "ack_requeue_false",
                                                     "encoding": "auto"}).json()
    assert again[0]["payload"] == "m0" and again[0]["redelivered"] is True
    assert api.json(f"/queues/%2F/{q(name)}")["messages"] == 3
    assert api.delete(f"/queues/%2F/{q(name)}/contents").status_code == 204
    assert api.json(f"/queues/%2F/{q(name)}")["messages"] == 0
    assert api.post(f"/queues/%2F/{q(name)}/get", {"count": 1, "ackmode": "ack_requeue_false",
                                                    "encoding": "auto"}).json() == []
    bad = api.post(f"/queues/%2F/{q(name)}/get", {"count": 1, "ackmode": "nonsense"})
    assert bad.status_code == 400
    # properties every protocol can carry, or a 400 before anything is published
    for wrong in ({"content_type": 5}, {"delivery_mode": 3}, {"headers": []},
                  {"no_such_property": "x"}):
        refused = api.post("/exchanges/%2F/amq.default/publish", {
            "routing_key": name, "payload": "x", "payload_encoding": "string",
            "properties": wrong})
        assert refused.status_code == 400, wrong
    stamped = api.post("/exchanges/%2F/amq.default/publish", {
        "routing_key": name, "payload": "t", "payload_encoding": "string",
        "properties": {"timestamp": 1700000000, "priority": 3}})
    assert stamped.json() == {"routed": True}
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        method, props, body = conn.channel().basic_get(name, auto_ack=True)
        assert body == b"t" and props.timestamp == 1700000000 and props.priority == 3
    finally:
        conn.close()
    api.delete(f"/queues/%2F/{q(name)}")


def test_exchange_declare_bind_route_unbind_delete(api: Api,
                                                   unique: Callable[[str], str]) -> None:
    x, queue = unique("mgmt-x"), unique("mgmt-bound")
    assert api.put(f"/exchanges/%2F/{q(x)}", {"type": "topic", "durable": True}).status_code \
        == 201
    assert api.json(f"/exchanges/%2F/{q(x)}")["type"] == "topic"
    assert api.put(f"/exchanges/%2F/{q(x)}", {"durable": True}).status_code == 400
    assert api.put("/exchanges/%2F/amq.nope", {"type": "direct"}).status_code == 403
    api.put(f"/queues/%2F/{q(queue)}", {"durable": False})
    bound = api.post(f"/bindings/%2F/e/{q(x)}/q/{q(queue)}", {"routing_key": "a.*",
                                                             "arguments": {}})
    assert bound.status_code == 201
    assert bound.headers["location"].endswith("/a.%2A") or bound.headers[
        "location"].endswith("/a.*")
    between = api.json(f"/bindings/%2F/e/{q(x)}/q/{q(queue)}")
    assert [(b["routing_key"], b["properties_key"]) for b in between] == [("a.*", "a.*")]
    listed = api.json("/bindings/%2F")
    assert any(b["source"] == x and b["destination"] == queue for b in listed)
    assert any(b["source"] == "" and b["destination"] == queue for b in listed)
    qb = api.json(f"/queues/%2F/{q(queue)}/bindings")
    assert {b["source"] for b in qb} == {"", x}
    assert len(api.json(f"/exchanges/%2F/{q(x)}/bindings/source")) == 1

    routed = api.post(f"/exchanges/%2F/{q(x)}/publish", {
        "routing_key": "a.b", "payload": "hello", "payload_encoding": "string",
        "properties": {}})
    assert routed.json() == {"routed": True}
    assert api.json(f"/queues/%2F/{q(queue)}")["messages"] == 1

    assert api.delete(f"/bindings/%2F/e/{q(x)}/q/{q(queue)}/{q('a.*')}").status_code == 204
    assert api.json(f"/bindings/%2F/e/{q(x)}/q/{q(queue)}") == []
    assert api.delete(f"/bindings/%2F/e/{q(x)}/q/{q(queue)}/nope").status_code == 404
    assert api.delete(f"/exchanges/%2F/{q(x)}").status_code == 204
    assert api.get(f"/exchanges/%2F/{q(x)}").status_code == 404
    api.delete(f"/queues/%2F/{q(queue)}")


def test_lists_take_columns_sort_and_pages(api: Api, unique: Callable[[str], str]) -> None:
    prefix = unique("mgmt-page")
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        api.put(f"/queues/%2F/{q(name)}", {"durable": False})
    try:
        rows = api.json("/queues", columns="name,messages", name=prefix, sort="name",
                        sort_reverse="true")
        assert rows == [{"name": n, "messages": 0} for n in reversed(names)]
        page = api.json("/queues", page=2, page_size=2, name=prefix, sort="name")
        assert page["filtered_count"] == 3 and page["page_count"] == 2
        assert [item["name"] for item in page["items"]] == names[2:]
    finally:
        for name in names:
            api.delete(f"/queues/%2F/{q(name)}")


# -- connections of every protocol ---------------------------------------------------------


def _mqtt_connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    sock.sendall(b"\x10" + bytes([len(var)]) + var)
    assert sock.recv(4)[:1] == b"\x20"  # CONNACK
    return sock


def _stomp_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    assert sock.recv(4096).startswith(b"CONNECTED")
    return sock


def test_connections_channels_and_consumers_of_every_protocol(
        api: Api, broker: Any, unique: Callable[[str], str]) -> None:
    name = unique("mgmt-consumed")
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": name}
    conn = pika.BlockingConnection(params)
    mqtt = _mqtt_connect(broker.ports["mqtt"], unique("mgmt"))
    stomp = _stomp_connect(broker.ports["stomp"])
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)
        ch.queue_declare(name, auto_delete=True)
        tag = ch.basic_consume(name, lambda *a: None)

        def rows() -> list[dict[str, Any]]:
            return list(api.json("/connections"))

        def mine() -> dict[str, Any] | None:
            for row in rows():
                if row["client_properties"].get("connection_name") == name:
                    return row
            return None

        row = wait_for(mine, "the AMQP connection in /api/connections")
        assert row["user"] == "guest" and row["vhost"] == "/" and row["channels"] == 1
        assert row["protocol"] == "AMQP 0-9-1"
        assert row["client_properties"]["product"] == "Pika Python Client Library"
        protocols = {r["protocol"].split()[0].upper() for r in rows()}
        assert {"AMQP", "MQTT", "STOMP"} <= protocols, protocols
        single = api.json(f"/connections/{q(row['name'])}")
        assert single["peer_port"] == row["peer_port"] and single["peer_host"] == "127.0.0.1"
        channels = api.json(f"/connections/{q(row['name'])}/channels")
        assert [(c["number"], c["prefetch_count"], c["consumer_count"]) for c in channels] \
            == [(1, 7, 1)]
        assert any(c["name"] == channels[0]["name"] for c in api.json("/channels"))
        consumers = [c for c in api.json("/consumers/%2F") if c["queue"]["name"] == name]
        assert len(consumers) == 1
        assert consumers[0]["consumer_tag"] == tag and consumers[0]["ack_required"] is True
        assert consumers[0]["prefetch_count"] == 7
        assert consumers[0]["channel_details"]["connection_name"] == row["name"]
        assert api.json(f"/queues/%2F/{q(name)}")["consumers"] == 1

        closed = api.client.delete(f"/api/connections/{q(row['name'])}",
                                   headers={"X-Reason": "test says bye"})
        assert closed.status_code == 204
        with pytest.raises(pika.exceptions.ConnectionClosed) as info:
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert "test says bye" in str(info.value)
        wait_for(lambda: mine() is None, "the closed connection to leave the list")
    finally:
        mqtt.close()
        stomp.close()
        if conn.is_open:
            conn.close()
