"""The message trace as the core tells it (gateway.core.observe): which consumer, on which
connection and channel (or session), got each message and what happened to it there:
acked, rejected, requeued, dead-lettered (and where the copy went), dropped. And the
per-protocol publish counters count a vhost from its first message."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import stomp
from mgmt_client import Api, api_for, q
from test_mgmt_metrics import poll, scrape


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


def _record(api: Api, vhost: str, payload: str) -> dict[str, Any]:
    for r in api.json(f"/traces/{q(vhost)}")["records"]:
        if r["payload_preview"] == payload:
            return r
    return {}


def _queue(record: dict[str, Any], name: str) -> dict[str, Any]:
    found = [e for e in record["queues"] if e["queue"] == name]
    assert len(found) == 1, record
    return found[0]


def _events(entry: dict[str, Any]) -> list[str]:
    return [s["event"] for s in entry["steps"]]


def _settled(api: Api, vhost: str, payload: str, queue: str, outcome: str
             ) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        r = _record(api, vhost, payload)
        if r and any(e["queue"] == queue and e["outcome"] == outcome for e in r["queues"]):
            return r
        return None

    found: dict[str, Any] = poll(check, f"{payload!r} {outcome} in {queue}")
    return found


def _connection_named(api: Api, client_name: str) -> dict[str, Any]:
    found = poll(lambda: [c for c in api.json("/connections")
                          if c["client_properties"].get("connection_name") == client_name],
                 f"connection {client_name}")
    conn: dict[str, Any] = found[0]
    return conn


def test_pika_trace_names_the_consumer_and_each_outcome(
        broker: Any, api: Api, unique: Callable[[str], str]) -> None:
    work, nodlx, dead = unique("tr-work"), unique("tr-nodlx"), unique("tr-dead")
    dlx = unique("tr-dlx")
    client_name = unique("tr-client")
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": client_name}
    conn = pika.BlockingConnection(params)
    try:
        setup = conn.channel()
        setup.exchange_declare(dlx, "fanout")
        setup.queue_declare(dead)
        setup.queue_bind(dead, dlx)
        setup.queue_declare(work, arguments={"x-dead-letter-exchange": dlx})
        setup.queue_declare(nodlx)
        assert api.put("/traces/%2F", {"enabled": True}).status_code == 204
        ch = conn.channel()  # the consumers' channel: number 2
        ch.basic_qos(prefetch_count=1)

        # acked
        setup.basic_publish("", work, b"trace-ack")
        for method, _props, body in ch.consume(work, inactivity_timeout=10):
            assert body == b"trace-ack"
            ch.basic_ack(method.delivery_tag)
            break
        ch.cancel()
        # requeued, redelivered, then rejected and dead-lettered into `dead`
        setup.basic_publish("", work, b"trace-dlx")
        seen = 0
        for method, _props, body in ch.consume(work, inactivity_timeout=10):
            assert body == b"trace-dlx"
            seen += 1
            if seen == 1:
                ch.basic_reject(method.delivery_tag, requeue=True)
            else:
                assert method.redelivered
                ch.basic_nack(method.delivery_tag, requeue=False)
                break
        ch.cancel()
        # rejected where no dead-letter exchange is: dropped
        setup.basic_publish("", nodlx, b"trace-drop")
        for method, _props, _body in ch.consume(nodlx, inactivity_timeout=10):
            ch.basic_reject(method.delivery_tag, requeue=False)
            break
        ch.cancel()

        named = _connection_named(api, client_name)["name"]
        acked = _queue(_settled(api, "/", "trace-ack", work, "acked"), work)
        assert _events(acked) == ["delivered", "acked"]
        who = acked["consumer"]
        assert who["connection"] == named and who["channel"] == ch.channel_number == 2
        assert who["protocol"] == "AMQP 0-9-1" and who["user"] == broker.user
        assert acked["steps"][0]["consumer"] == who

        record = _settled(api, "/", "trace-dlx", work, "dead-lettered")
        entry = _queue(record, work)
        assert _events(entry) == ["delivered", "requeued", "delivered", "rejected",
                                  "dead-lettered"]
        assert [s["redelivered"] for s in entry["steps"] if s["event"] == "delivered"] \
            == [False, True]
        assert entry["steps"][-1]["reason"] == "rejected"
        assert entry["steps"][-1]["exchange"] == dlx
        assert entry["steps"][-1]["queues"] == [dead]
        copy = _queue(record, dead)
        assert copy["via"] == f"dead-lettered from {work}" and copy["outcome"] == "queued"

        dropped = _queue(_settled(api, "/", "trace-drop", nodlx, "dropped"), nodlx)
        assert _events(dropped) == ["delivered", "rejected", "dropped"]
        assert dropped["steps"][-1]["reason"] == "rejected"
        assert dropped["consumer"]["connection"] == named
    finally:
        api.put("/traces/%2F", {"enabled": False})
        api.delete("/traces/%2F")
        for name in (work, nodlx, dead):
            api.delete(f"/queues/%2F/{q(name)}")
        api.delete(f"/exchanges/%2F/{q(dlx)}")
        conn.close()


def test_stomp_trace_names_the_session_and_each_outcome(
        broker: Any, api: Api, unique: Callable[[str], str]) -> None:
    name = unique("tr-stomp")
    got: list[Any] = []
    arrived = threading.Condition()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            with arrived:
                got.append(frame)
                arrived.notify_all()

    def next_message(n: int) -> Any:
        with arrived:
            assert arrived.wait_for(lambda: len(got) >= n, timeout=10), "no MESSAGE"
            return got[n - 1]

    assert api.put("/traces/%2F", {"enabled": True}).status_code == 204
    sc = stomp.Connection12([(broker.host, broker.ports["stomp"])])
    sc.set_listener("l", Listener())
    sc.connect(broker.user, broker.password, wait=True, headers={"host": "/"})
    try:
        sc.subscribe(f"/queue/{name}", id="s1", ack="client-individual")
        sc.send(f"/queue/{name}", "stomp-ack")
        sc.ack(next_message(1).headers["ack"])
        sc.send(f"/queue/{name}", "stomp-nack")
        sc.nack(next_message(2).headers["ack"], requeue="false")

        connections = poll(lambda: [c for c in api.json("/connections")
                                    if c["protocol"].startswith("STOMP")
                                    and c["user"] == broker.user], "the STOMP connection")
        names = {c["name"] for c in connections}
        acked = _queue(_settled(api, "/", "stomp-ack", name, "acked"), name)
        assert _events(acked) == ["delivered", "acked"]
        who = acked["consumer"]
        assert who["connection"] in names and who["channel"] is None
        assert who["protocol"].startswith("STOMP") and who["consumer_tag"]
        dropped = _queue(_settled(api, "/", "stomp-nack", name, "dropped"), name)
        assert _events(dropped) == ["delivered", "rejected", "dropped"]
        assert dropped["consumer"] == who
    finally:
        sc.disconnect()
        api.put("/traces/%2F", {"enabled": False})
        api.delete("/traces/%2F")
        api.delete(f"/queues/%2F/{q(name)}")


def test_a_new_vhost_is_counted_from_its_first_message(
        fresh_broker: Any, unique: Callable[[str], str]) -> None:
    """Publishes by protocol are told by the core in every vhost, also one created a
    moment ago (no sampling pass has to see it first)."""
    api = api_for(fresh_broker)
    received = ("gateway_messages_received_total", (("protocol", "amqp091"),))
    unroutable = ("rabbitmq_global_messages_unroutable_dropped_total",
                  (("protocol", "amqp091"),))
    try:
        before = scrape(fresh_broker)
        vhost = unique("tr-vh")
        assert api.put(f"/vhosts/{q(vhost)}", {}).status_code in (201, 204)
        assert api.put(f"/permissions/{q(vhost)}/{fresh_broker.user}",
                       {"configure": ".*", "write": ".*", "read": ".*"}).status_code \
            in (201, 204)
        started = time.monotonic()
        params = pika.URLParameters(fresh_broker.url)
        params.virtual_host = vhost
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(3):
            ch.basic_publish("amq.direct", "nowhere", b"x")
        conn.close()
        elapsed = time.monotonic() - started
        after = poll(lambda: (m := scrape(fresh_broker)).get(received, 0)
                     >= before.get(received, 0) + 3 and m, "three publishes counted")
        assert after[received] == before.get(received, 0) + 3
        assert after.get(unroutable, 0) == before.get(unroutable, 0) + 3, elapsed
    finally:
        api.close()
