"""The rabbitmq_event_exchange plugin's `amq.rabbitmq.event` with pika: queue, exchange,
binding and consumer events of any vhost, in the default vhost's exchange, with the
plugin's routing keys and headers; who may bind to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from mgmt_client import Api, api_for, q

EVENTS = "amq.rabbitmq.event"


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


def _connect(broker: Any, vhost: str = "/", user: str | None = None,
             password: str | None = None) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], vhost,
        pika.PlainCredentials(user or broker.user, password or broker.password)))


def _events(ch: Any, queue: str, want: Callable[[list[tuple[str, dict[str, Any]]]], bool]
            ) -> list[tuple[str, dict[str, Any]]]:
    """Events from `queue` until `want` holds (each waited for at most 10 s)."""
    got: list[tuple[str, dict[str, Any]]] = []
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=10):
        assert method is not None, f"timed out; got {got}"
        assert body == b""
        assert isinstance(props.timestamp, int)
        got.append((method.routing_key, props.headers or {}))
        if want(got):
            break
    ch.cancel()
    return got


def _find(got: list[tuple[str, dict[str, Any]]], key: str, **match: Any) -> dict[str, Any]:
    for k, headers in got:
        if k == key and all(headers.get(f) == v for f, v in match.items()):
            return headers
    raise AssertionError(f"no {key} {match} in {got}")


def _has(key: str, **match: Any) -> Callable[[list[tuple[str, dict[str, Any]]]], bool]:
    def check(got: list[tuple[str, dict[str, Any]]]) -> bool:
        return any(k == key and all(h.get(f) == v for f, v in match.items())
                   for k, h in got)
    return check


def test_exchange_is_in_the_default_vhost_only(api: Api, unique: Callable[[str], str]
                                               ) -> None:
    x = api.json(f"/exchanges/%2F/{EVENTS}")
    assert (x["type"], x["durable"], x["internal"]) == ("topic", True, True)
    vh = unique("ev-vh")
    api.put(f"/vhosts/{q(vh)}", {})
    try:
        assert api.get(f"/exchanges/{q(vh)}/{EVENTS}").status_code == 404
    finally:
        api.delete(f"/vhosts/{q(vh)}")


def test_queue_exchange_binding_consumer_events(broker: Any, api: Api,
                                                unique: Callable[[str], str]) -> None:
    vh = unique("ev-other")
    api.put(f"/vhosts/{q(vh)}", {})
    watch = _connect(broker)
    work = _connect(broker, vh)
    try:
        wch = watch.channel()
        events = wch.queue_declare("", exclusive=True).method.queue
        wch.queue_bind(events, EVENTS, "queue.*")
        wch.queue_bind(events, EVENTS, "exchange.*")
        wch.queue_bind(events, EVENTS, "binding.*")
        wch.queue_bind(events, EVENTS, "consumer.*")
        ch = work.channel()
        qname, xname = unique("ev-q"), unique("ev-x")
        ch.exchange_declare(xname, "direct", durable=True)
        ch.queue_declare(qname, arguments={"x-max-length": 5})
        ch.queue_bind(qname, xname, "rk")
        tag = ch.basic_consume(qname, lambda *a: None)
        ch.basic_cancel(tag)
        ch.queue_unbind(qname, xname, "rk")
        ch.queue_delete(qname)
        ch.exchange_delete(xname)
        got = _events(wch, events, _has("exchange.deleted", name=xname))
        keys = [k for k, h in got if h.get("vhost") == vh]
        assert keys == ["exchange.created", "queue.created", "binding.created",
                        "consumer.created", "consumer.deleted", "binding.deleted",
                        "queue.deleted", "exchange.deleted"], got
        x = _find(got, "exchange.created", name=xname)
        assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == (
            "direct", True, False, False)
        assert isinstance(x["timestamp_in_ms"], int)
        qh = _find(got, "queue.created", name=qname)
        assert (qh["durable"], qh["exclusive"], qh["auto_delete"], qh["type"]) == (
            False, False, False, "classic")
        assert qh["arguments"] == {"x-max-length": 5}
        b = _find(got, "binding.created", destination_name=qname)
        assert (b["source_name"], b["source_kind"], b["destination_kind"],
                b["routing_key"]) == (xname, "exchange", "queue", "rk")
        c = _find(got, "consumer.created", queue=qname)
        assert (c["consumer_tag"], c["ack_required"], c["exclusive"]) == (tag, True, False)
        assert c["channel"] == 1 and c["user"] == broker.user
        assert _find(got, "consumer.deleted", queue=qname)["consumer_tag"] == tag
        assert _find(got, "queue.deleted", name=qname)["vhost"] == vh
    finally:
        watch.close()
        work.close()
        api.delete(f"/vhosts/{q(vh)}")


def test_binding_to_the_event_exchange_needs_read_on_it(
        broker: Any, api: Api, unique: Callable[[str], str]) -> None:
    user = unique("ev-user")
    assert api.put(f"/users/{q(user)}", {"password": "pw", "tags": ""}).status_code == 201
    try:
        api.put(f"/permissions/%2F/{q(user)}",
                {"configure": ".*", "write": ".*", "read": "^(?!amq\\.rabbitmq\\.).*"})
        conn = _connect(broker, "/", user, "pw")
        try:
            ch = conn.channel()
            mine = ch.queue_declare("", exclusive=True).method.queue
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                ch.queue_bind(mine, EVENTS, "#")
            assert refused.value.reply_code == 403
        finally:
            if conn.is_open:
                conn.close()
    finally:
        api.delete(f"/users/{q(user)}")


def test_an_mqtt_subscription_shows_as_queue_binding_and_consumer(
        broker: Any, unique: Callable[[str], str]) -> None:
    watch = _connect(broker)
    client_id = unique("ev-mqtt")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(broker.user, broker.password)
    session_queue = f"mqtt-subscription-{client_id}qos1"
    try:
        wch = watch.channel()
        events = wch.queue_declare("", exclusive=True).method.queue
        wch.queue_bind(events, EVENTS, "#")
        client.connect("127.0.0.1", broker.ports["mqtt"])
        client.loop_start()
        client.subscribe("rooms/+/temp", qos=1)
        got = _events(wch, events, lambda g: _has("binding.created",
                                                  destination_name=session_queue)(g)
                      and _has("consumer.created", queue=session_queue)(g))
        _find(got, "queue.created", name=session_queue)
        b = _find(got, "binding.created", destination_name=session_queue)
        assert (b["source_name"], b["routing_key"]) == ("amq.topic", "rooms.*.temp")
        assert _find(got, "consumer.created", queue=session_queue)["user"] == broker.user
    finally:
        client.loop_stop()
        client.disconnect()
        watch.close()
