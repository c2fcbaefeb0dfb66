"""Queue types through pika, as a RabbitMQ 4 application meets them: `x-queue-type`
checked, bad arguments refused with RabbitMQ's 406 texts, unknown ones accepted and shown
as unsupported by the management API; quorum queues refusing what RabbitMQ 4 refuses
(non-durable, exclusive, auto-delete, global qos, `x-max-priority`), the `x-delivery-count`
header on redeliveries and a poison message dead-lettered with reason `delivery_limit`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pika.exceptions
import pytest
from test_pika_semantics import Scratch, closes_channel, connect, pump

QQ = {"x-queue-type": "quorum"}


@pytest.fixture
def names(broker: Any, unique: Any) -> Iterator[Scratch]:
    scratch = Scratch(unique)
    yield scratch
    with closing(connect(broker)) as connection:
        scratch.delete_all(connection)


@pytest.fixture
def conn(broker: Any) -> Iterator[pika.BlockingConnection]:
    with closing(connect(broker)) as opened:
        yield opened


def test_unknown_queue_type_is_406(conn: pika.BlockingConnection, names: Scratch) -> None:
    q = names.queue("foo-type")
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "foo"})
    assert "unsupported queue type 'foo'" in closed.value.reply_text
    # streams are refused with a reason rather than made classic queues
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
    assert "not supported yet" in closed.value.reply_text
    with closes_channel(404, "NOT_FOUND"):
        conn.channel().queue_declare(q, passive=True)


@pytest.mark.parametrize(("args", "reason"), [
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-message-ttl": "soon"}, "expected integer, got longstr"),
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-overflow": "drop-tail"}, "invalid_overflow"),
    ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
    ({"x-queue-mode": "eager"}, "unsupported queue mode 'eager'"),
    ({"x-delivery-limit": 3}, "of queue type rabbit_classic_queue"),
    ({"x-max-age": "7D"}, "of queue type rabbit_classic_queue"),
])
def test_bad_arguments_are_406(conn: pika.BlockingConnection, names: Scratch,
                               args: dict[str, Any], reason: str) -> None:
    q = names.queue("bad-arg")
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        conn.channel().queue_declare(q, arguments=args)
    text = closed.value.reply_text
    assert f"invalid arg '{next(iter(args))}' for queue '{q}'" in text
    assert reason in text


def test_unknown_arguments_accepted_and_shown_unsupported(
        broker: Any, conn: pika.BlockingConnection, names: Scratch) -> None:
    q = names.queue("unknown-args")
    conn.channel().queue_declare(q, arguments={"x-my-flag": "on", "x-max-length": 5})
    url = (f"http://{broker.host}:{broker.ports['http']}/api/queues/"
           f"{quote(broker.vhost, safe='')}/{q}")
    got = httpx.get(url, auth=(broker.user, broker.password), timeout=10).json()
    assert got["type"] == "classic"
    assert got["unsupported_arguments"] == ["x-my-flag"]


def test_quorum_queue_declare_refusals(conn: pika.BlockingConnection, names: Scratch) -> None:
    q = names.queue("qq-refused")
    for kwargs, prop in (({"durable": False}, "non-durable"),
                         ({"durable": True, "exclusive": True}, "exclusive-owner"),
                         ({"durable": True, "auto_delete": True}, "auto-delete")):
        with closes_channel(406, "PRECONDITION_FAILED") as closed:
            conn.channel().queue_declare(q, arguments=QQ, **kwargs)
        assert f"invalid property '{prop}' for queue '{q}'" in closed.value.reply_text
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        conn.channel().queue_declare(q, durable=True, arguments={**QQ, "x-max-priority": 5})
    assert "of queue type rabbit_quorum_queue" in closed.value.reply_text
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        conn.channel().queue_declare("", durable=True, arguments=QQ)
    assert "server-named" in closed.value.reply_text
    ok = conn.channel().queue_declare(q, durable=True, arguments=QQ)
    assert ok.method.queue == q


def test_global_qos_refused_on_quorum_queue(broker: Any, names: Scratch) -> None:
    q = names.queue("qq-global-qos")
    conn = connect(broker)  # the broker closes it: NOT_IMPLEMENTED is a connection error
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=QQ)
    ch.basic_qos(prefetch_count=10, global_qos=True)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        ch.basic_consume(q, lambda *a: None)
    assert closed.value.reply_code == 540
    assert "does not support global qos" in closed.value.reply_text
    assert conn.is_closed
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)  # per-consumer prefetch is fine
        assert ch.basic_consume(q, lambda *a: None)


def test_delivery_count_header_and_poison_message_dead_lettered(
        conn: pika.BlockingConnection, names: Scratch) -> None:
    dlx, dead, q = names.exchange("qq-dlx"), names.queue("qq-dead"), names.queue("qq-work")
    ch = conn.channel()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dead)
    ch.queue_bind(dead, dlx)
    ch.queue_declare(q, durable=True, arguments={**QQ, "x-delivery-limit": 3,
                                                 "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"poison", pika.BasicProperties(headers={"app": "x"}))
    seen: list[tuple[bool, Any]] = []

    def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
        headers = props.headers or {}
        seen.append((method.redelivered, headers.get("x-delivery-count")))
        assert headers.get("app") == "x"
        channel.basic_nack(method.delivery_tag, requeue=True)

    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q, on_message)
    pump(conn, lambda: ch.queue_declare(dead, passive=True).method.message_count == 1)
    # first delivery carries no count; each redelivery the times it came back; the
    # fourth return is past the limit of 3
    assert seen == [(False, None), (True, 1), (True, 2), (True, 3)]
    method, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"poison"
    death = props.headers["x-death"][0]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == q
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    assert ch.queue_declare(q, durable=True, arguments={
        **QQ, "x-delivery-limit": 3, "x-dead-letter-exchange": dlx}).method.message_count == 0


def test_quorum_queue_and_delivery_count_survive_restart(fresh_broker: Any) -> None:
    connection = connect(fresh_broker)
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        ch.queue_declare("qq-restart", durable=True, arguments=QQ)
        # transient: a quorum queue keeps every message on disk
        ch.basic_publish("", "qq-restart", b"job", pika.BasicProperties(delivery_mode=1))
        for expected in (None, 1):
            method, props, body = ch.basic_get("qq-restart")
            assert body == b"job"
            assert (props.headers or {}).get("x-delivery-count") == expected
            ch.basic_nack(method.delivery_tag, requeue=True)
        # a synchronous round trip: the nacks before it were processed
        assert ch.queue_declare("qq-restart", passive=True).method.message_count == 1
        fresh_broker.restart(kill=False)
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # the broker closed it when it stopped
    with closing(connect(fresh_broker)) as connection:
        ch = connection.channel()
        ok = ch.queue_declare("qq-restart", durable=True, arguments=QQ)
        assert ok.method.message_count == 1
        method, props, body = ch.basic_get("qq-restart")
        assert body == b"job" and method.redelivered
        assert props.headers["x-delivery-count"] == 2
        ch.basic_ack(method.delivery_tag)
