"""Consumer timeouts through pika, as RabbitMQ's channel applies them: a delivery left
unacknowledged past the timeout closes its channel with 406 PRECONDITION_FAILED
("delivery acknowledgement on channel N timed out...") and the message is requeued.
The timeout is the `[amqp] consumer_timeout` key, or a queue's `x-consumer-timeout`
argument or `consumer-timeout` policy key."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest
from test_pika_semantics import Scratch, connect, pump

WAIT = 15.0


def _hold_until_closed(conn: pika.BlockingConnection, queue: str) -> tuple[Any, list[bytes]]:
    """Consume from `queue` without acking; return the channel-close exception and the
    bodies received."""
    ch = conn.channel()
    got: list[bytes] = []
    ch.basic_consume(queue, lambda _c, _m, _p, body: got.append(body))
    conn.call_later(WAIT, ch.stop_consuming)  # bounded: fails below if nothing closed it
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.start_consuming()
    return closed.value, got


def test_queue_argument_timeout_closes_channel_and_requeues(broker: Any, unique: Any) -> None:
    scratch = Scratch(unique)
    q = scratch.queue("ct-arg")
    try:
        with closing(connect(broker)) as conn:
            ch = conn.channel()
            ch.queue_declare(q, arguments={"x-consumer-timeout": 300})
            ch.basic_publish("", q, b"slow job")
            err, got = _hold_until_closed(conn, q)
            assert got == [b"slow job"]
            assert err.reply_code == 406
            assert err.reply_text.startswith("PRECONDITION_FAILED - delivery acknowledgement "
                                             "on channel ")
            assert "timed out. Timeout value used: 300 ms" in err.reply_text
            # requeued: the next consumer gets it again, redelivered
            method, _props, body = conn.channel().basic_get(q, auto_ack=True)
            assert body == b"slow job" and method.redelivered
            # the connection itself is still open
            assert conn.is_open
    finally:
        with closing(connect(broker)) as conn:
            scratch.delete_all(conn)


def test_bad_consumer_timeout_argument_is_406(broker: Any, unique: Any) -> None:
    with closing(connect(broker)) as conn:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            conn.channel().queue_declare(unique("ct-bad"),
                                         arguments={"x-consumer-timeout": -1})
        assert closed.value.reply_code == 406
        assert "invalid arg 'x-consumer-timeout'" in closed.value.reply_text


def test_config_key_and_policy(configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker("[amqp]\nconsumer_timeout = 500\n")
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        ch.queue_declare("by-config")
        ch.basic_publish("", "by-config", b"a")
        err, got = _hold_until_closed(conn, "by-config")
        assert got == [b"a"] and err.reply_code == 406
        assert "Timeout value used: 500 ms" in err.reply_text
        # a policy's consumer-timeout: acked within it, nothing is closed... and past it
        url = f"http://{broker.host}:{broker.ports['http']}/api/policies/%2F/ct"
        put = httpx.put(url, auth=(broker.user, broker.password), timeout=10, json={
            "pattern": "^by-policy$", "definition": {"consumer-timeout": 200},
            "apply-to": "queues"})
        assert put.status_code in (201, 204), put.text
        ch = conn.channel()
        ch.queue_declare("by-policy")
        ch.basic_publish("", "by-policy", b"b")
        err, got = _hold_until_closed(conn, "by-policy")
        assert got == [b"b"]
        assert "Timeout value used: 200 ms" in err.reply_text


def test_acked_in_time_is_not_closed(configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker("[amqp]\nconsumer_timeout = 1000\n")
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        ch.queue_declare("quick")
        for n in range(3):
            ch.basic_publish("", "quick", f"m{n}".encode())
        acked: list[bytes] = []

        def on_message(channel: Any, method: Any, _props: Any, body: bytes) -> None:
            channel.basic_ack(method.delivery_tag)
            acked.append(body)

        ch.basic_consume("quick", on_message)
        pump(conn, lambda: len(acked) == 3)
        # several timer ticks later the channel is still open (nothing is unacked)
        conn.sleep(2.5)
        assert ch.is_open
        assert acked == [b"m0", b"m1", b"m2"]
