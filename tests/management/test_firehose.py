"""RabbitMQ's firehose: `gateway ctl trace_on/trace_off`, the vhost's `amq.rabbitmq.trace`
exchange, `publish.<exchange>` and `deliver.<queue>` messages with RabbitMQ's headers, for
AMQP and MQTT publishes; and who may bind to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from mgmt_client import Api, api_for, q, wait_for

from gateway.cli.main import main

TRACE = "amq.rabbitmq.trace"


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


@pytest.fixture
def vhost(api: Api, unique: Callable[[str], str]) -> Iterator[str]:
    name = unique("fh-vh")
    assert api.put(f"/vhosts/{q(name)}", {}).status_code == 201
    yield name
    api.delete(f"/vhosts/{q(name)}")


def ctl(broker: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["ctl", "--host", broker.host, "--port", str(broker.ports["http"]),
                 "--username", broker.user, "--password", broker.password, *args])
    out, _ = capsys.readouterr()
    return code, out


def _connect(broker: Any, vhost: str, user: str | None = None,
             password: str | None = None) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], vhost,
        pika.PlainCredentials(user or broker.user, password or broker.password))
    return pika.BlockingConnection(params)


def _drain(ch: Any, queue: str, count: int) -> list[tuple[str, dict[str, Any], bytes]]:
    """`count` messages of `queue` (waiting up to 10 s for each)."""
    got: list[tuple[str, dict[str, Any], bytes]] = []
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=10):
        assert method is not None, f"only {len(got)} of {count} trace messages: {got}"
        got.append((method.routing_key, props.headers or {}, body))
        if len(got) == count:
            break
    ch.cancel()
    return got


def test_trace_exchange_is_predeclared_internal_topic(api: Api, vhost: str) -> None:
    x = api.json(f"/exchanges/{q(vhost)}/{TRACE}")
    assert (x["type"], x["durable"], x["internal"]) == ("topic", True, True)


def test_ctl_trace_on_amqp_publish_and_deliver(
        broker: Any, api: Api, vhost: str, capsys: pytest.CaptureFixture[str],
        unique: Callable[[str], str]) -> None:
    code, out = ctl(broker, capsys, "trace_on", "-p", vhost)
    assert code == 0 and f'Starting tracing for vhost "{vhost}"' in out
    assert api.json(f"/vhosts/{q(vhost)}")["tracing"] is True
    conn = _connect(broker, vhost)
    try:
        ch = conn.channel()
        fh = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(fh, TRACE, "#")
        work = unique("fh-work")
        ch.queue_declare(work)
        props = pika.BasicProperties(content_type="text/plain", message_id="m-1",
                                     headers={"app": "x"}, delivery_mode=2,
                                     timestamp=1_700_000_000)
        ch.basic_publish("", work, b"hello firehose", props)
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=1)
        method, _, body = next(consumer.consume(work, inactivity_timeout=10))
        assert body == b"hello firehose"
        consumer.basic_ack(method.delivery_tag)

        traces = _drain(ch, fh, 2)
        by_key = {key: (headers, body) for key, headers, body in traces}
        assert set(by_key) == {"publish.", f"deliver.{work}"}
        pub, pub_body = by_key["publish."]
        assert pub_body == b"hello firehose"
        assert pub["exchange_name"] == ""
        assert pub["routing_keys"] == [work]
        assert pub["routed_queues"] == [work]
        assert pub["properties"]["content_type"] == "text/plain"
        assert pub["properties"]["message_id"] == "m-1"
        assert pub["properties"]["delivery_mode"] == 2
        assert pub["properties"]["headers"] == {"app": "x"}
        # an AMQP timestamp in a table, which pika reads as a datetime
        assert pub["properties"]["timestamp"] == datetime.fromtimestamp(1_700_000_000,
                                                                        UTC)
        assert pub["node"].startswith("gateway@")
        deliver, deliver_body = by_key[f"deliver.{work}"]
        assert deliver_body == b"hello firehose"
        assert deliver["exchange_name"] == ""
        assert deliver["routing_keys"] == [work]
        assert deliver["redelivered"] == 0
        assert deliver["channel"] == 2
        assert deliver["user"] == broker.user
        assert deliver["connection"].endswith(f"-> 127.0.0.1:{broker.ports['amqp']}")

        # off: nothing is traced; on again, the next publish is (and only it)
        code, out = ctl(broker, capsys, "trace_off", "-p", vhost)
        assert code == 0 and f'Stopping tracing for vhost "{vhost}"' in out
        assert api.json(f"/vhosts/{q(vhost)}")["tracing"] is False
        ch.basic_publish("amq.topic", "while.off", b"unseen")
        assert ctl(broker, capsys, "trace_on", "-p", vhost)[0] == 0
        ch.basic_publish("amq.topic", "after.on", b"seen")
        traces = _drain(ch, fh, 1)
        assert [(k, h["routing_keys"], b) for k, h, b in traces] == [
            ("publish.amq.topic", ["after.on"], b"seen")]
        assert ch.queue_declare(fh, passive=True).method.message_count == 0
    finally:
        ctl(broker, capsys, "trace_off", "-p", vhost)
        conn.close()


def test_trace_messages_are_not_traced_again(broker: Any, api: Api, vhost: str) -> None:
    assert api.put(f"/vhosts/{q(vhost)}", {"tracing": True}).status_code == 204  # RabbitMQ's
    conn = _connect(broker, vhost)
    try:
        ch = conn.channel()
        fh = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(fh, TRACE, "#")
        ch.basic_publish("amq.fanout", "", b"one")  # unrouted: a publish trace only
        traces = _drain(ch, fh, 1)  # consuming the trace message: no deliver.<fh> trace
        assert traces[0][0] == "publish.amq.fanout"
        assert traces[0][1]["routed_queues"] == []
        ch.basic_publish("amq.fanout", "", b"two")
        traces = _drain(ch, fh, 1)
        assert [(k, b) for k, _, b in traces] == [("publish.amq.fanout", b"two")]
    finally:
        api.put(f"/traces/{q(vhost)}", {"enabled": False})
        conn.close()


def test_mqtt_publish_is_traced(broker: Any, api: Api, vhost: str,
                                unique: Callable[[str], str]) -> None:
    assert api.put(f"/traces/{q(vhost)}", {"enabled": True}).status_code == 204
    conn = _connect(broker, vhost)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("fh-mqtt"))
    client.username_pw_set(f"{vhost}:{broker.user}", broker.password)
    try:
        ch = conn.channel()
        fh = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(fh, TRACE, "publish.amq.topic")
        ch.queue_bind(fh, TRACE, "deliver.#")
        got: list[bytes] = []
        client.on_message = lambda _c, _u, msg: got.append(msg.payload)
        client.connect("127.0.0.1", broker.ports["mqtt"])
        client.loop_start()
        client.subscribe("sensors/#", qos=1)
        client.publish("sensors/t1", b"21.5", qos=1).wait_for_publish(10)
        wait_for(lambda: got, "the MQTT delivery")
        traces = {key: (headers, body) for key, headers, body in _drain(ch, fh, 2)}
        headers, body = traces["publish.amq.topic"]
        assert body == b"21.5"
        assert headers["exchange_name"] == "amq.topic"
        assert headers["routing_keys"] == ["sensors.t1"]
        (deliver_key,) = set(traces) - {"publish.amq.topic"}
        assert deliver_key.startswith("deliver.mqtt-subscription-")
        headers, body = traces[deliver_key]
        assert body == b"21.5"
        assert headers["user"] == broker.user
        assert headers["redelivered"] == 0
        assert headers["connection"].endswith(f"-> 127.0.0.1:{broker.ports['mqtt']}")
    finally:
        client.loop_stop()
        client.disconnect()
        api.put(f"/traces/{q(vhost)}", {"enabled": False})
        conn.close()


def test_binding_to_the_trace_exchange_needs_read_on_it(
        broker: Any, api: Api, vhost: str, unique: Callable[[str], str]) -> None:
    user = unique("fh-user")
    assert api.put(f"/users/{q(user)}", {"password": "pw", "tags": ""}).status_code == 201
    try:
        # read on everything but the trace exchange, as a RabbitMQ deployment would grant
        assert api.put(f"/permissions/{q(vhost)}/{q(user)}",
                       {"configure": ".*", "write": ".*",
                        "read": "^(?!amq\\.rabbitmq\\.trace$).*"}).status_code in (201, 204)
        conn = _connect(broker, vhost, user, "pw")
        try:
            ch = conn.channel()
            mine = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(mine, "amq.topic", "#")  # read on amq.topic: allowed
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                ch.queue_bind(mine, TRACE, "#")
            assert refused.value.reply_code == 403
            # nobody publishes to it: it is internal
            ch = conn.channel()
            ch.basic_publish(TRACE, "publish.x", b"forged")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as internal:
                ch.queue_declare("", exclusive=True)
            assert internal.value.reply_code == 403
        finally:
            if conn.is_open:
                conn.close()
    finally:
        api.delete(f"/users/{q(user)}")


def test_trace_on_unknown_vhost_is_a_data_error(broker: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(broker, capsys, "trace_on", "-p", "no-such-vhost-fh")[0] == 65


def test_tracing_off_again_when_the_vhost_is_gone(api: Api, broker: Any,
                                                  unique: Callable[[str], str]) -> None:
    name = unique("fh-gone")
    api.put(f"/vhosts/{q(name)}", {"tracing": True})
    assert api.json(f"/vhosts/{q(name)}")["tracing"] is True
    api.delete(f"/vhosts/{q(name)}")
    api.put(f"/vhosts/{q(name)}", {})
    try:
        assert wait_for(lambda: api.json(f"/vhosts/{q(name)}")["tracing"] is False,
                        "tracing off")
    finally:
        api.delete(f"/vhosts/{q(name)}")
