"""Queue arguments of RabbitMQ's dialect through pika, beside those in
test_pika_semantics.py: the `x-death` header in full for each reason (rejected, expired by
queue TTL and by per-message expiration, maxlen) and counted up on a repeated death,
`x-max-length-bytes`, `x-overflow` reject-publish-dlx, `x-expires` and
`x-single-active-consumer`. Like test_pika_semantics.py these run against RabbitMQ too
(GATEWAY_TEST_AMQP_URL), which is how the header shapes were checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Any

import pika
import pika.compat
import pika.exceptions
import pytest
from test_pika_semantics import (
    Scratch,
    connect,
    consume_dead_letters,
    dead_letter_setup,
    get_all,
    pump,
)

WAIT = 10.0
# RabbitMQ's fields of an x-death entry, in its order
DEATH_KEYS = ["count", "reason", "queue", "time", "exchange", "routing-keys"]


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


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> Any:
    opened = conn.channel()
    opened.confirm_delivery()
    return opened


def get_one(conn: pika.BlockingConnection, ch: Any, queue: str) -> Any:
    """basic.get until a message is there (bounded): (method, properties, body)."""
    got: list[Any] = []

    def fetched() -> bool:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            got.append((method, props, body))
        return bool(got)

    pump(conn, fetched)
    return got[0]


def check_death(headers: dict[str, Any], reason: str, queue: str,
                extra: dict[str, Any] | None = None) -> None:
    """One `x-death` entry, with exactly RabbitMQ's fields, order and types (`count` a
    64-bit integer, which pika decodes to its `long`), and the first-death headers (for a
    message published to the default exchange with the queue's name)."""
    [death] = headers["x-death"]
    assert list(death) == DEATH_KEYS + list(extra or {}), death
    assert death["count"] == 1 and isinstance(death["count"], pika.compat.long)
    assert (death["reason"], death["queue"], death["exchange"]) == (reason, queue, "")
    assert death["routing-keys"] == [queue]
    assert isinstance(death["time"], datetime)
    for key, value in (extra or {}).items():
        assert death[key] == value
    assert headers["x-first-death-reason"] == reason
    assert headers["x-first-death-queue"] == queue
    assert headers["x-first-death-exchange"] == ""


def test_x_death_for_rejected_expired_and_maxlen(conn: pika.BlockingConnection, ch: Any,
                                                 names: Scratch) -> None:
    dlx, dead = dead_letter_setup(ch, names)
    rejected, ttl, expiring, bounded = (names.queue(n) for n in (
        "rejected", "queue-ttl", "message-ttl", "bounded"))
    ch.queue_declare(rejected, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_declare(ttl, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": 50})
    ch.queue_declare(expiring, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_declare(bounded, arguments={"x-dead-letter-exchange": dlx, "x-max-length": 1})
    keep = pika.BasicProperties(headers={"app": "kept"})
    ch.basic_publish("", rejected, b"rejected", properties=keep)
    ch.basic_publish("", ttl, b"queue-ttl", properties=keep)
    ch.basic_publish("", expiring, b"message-ttl",
                     properties=pika.BasicProperties(expiration="50", headers={"app": "kept"}))
    ch.basic_publish("", bounded, b"maxlen", properties=keep)
    ch.basic_publish("", bounded, b"newer", properties=keep)
    method, _, _ = ch.basic_get(rejected)
    ch.basic_reject(method.delivery_tag, requeue=False)

    got = {body: props for _, props, body in consume_dead_letters(conn, dead, count=4)}
    assert set(got) == {b"rejected", b"queue-ttl", b"message-ttl", b"maxlen"}
    assert all(p.headers["app"] == "kept" for p in got.values())
    check_death(got[b"rejected"].headers, "rejected", rejected)
    check_death(got[b"queue-ttl"].headers, "expired", ttl)
    check_death(got[b"message-ttl"].headers, "expired", expiring,
                {"original-expiration": "50"})
    assert got[b"message-ttl"].expiration is None
    check_death(got[b"maxlen"].headers, "maxlen", bounded)
    assert get_all(ch, bounded) == [b"newer"]


def test_x_death_counts_a_repeated_death(conn: pika.BlockingConnection, ch: Any,
                                         names: Scratch) -> None:
    """Rejected twice from the same queue (it dead-letters to itself): one entry, count 2."""
    queue = names.queue("retry")
    ch.queue_declare(queue, arguments={"x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": queue})
    ch.basic_publish("", queue, b"again")
    method, props, _ = get_one(conn, ch, queue)
    assert not (props.headers or {}).get("x-death")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, _ = get_one(conn, ch, queue)
    [death] = props.headers["x-death"]
    assert (death["count"], death["reason"], death["queue"]) == (1, "rejected", queue)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get_one(conn, ch, queue)
    ch.basic_ack(method.delivery_tag)
    assert body == b"again"
    [death] = props.headers["x-death"]
    assert (death["count"], death["reason"], death["queue"]) == (2, "rejected", queue)
    assert death["routing-keys"] == [queue] and death["exchange"] == ""
    assert props.headers["x-first-death-reason"] == "rejected"


def test_max_length_bytes_drops_heads(conn: pika.BlockingConnection, ch: Any,
                                      names: Scratch) -> None:
    dlx, dead = dead_letter_setup(ch, names)
    queue = names.queue("bytes")
    ch.queue_declare(queue, arguments={"x-max-length-bytes": 10, "x-dead-letter-exchange": dlx})
    for body in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        ch.basic_publish("", queue, body)
    dropped = consume_dead_letters(conn, dead, count=2)
    assert [body for _, _, body in dropped] == [b"aaaa", b"bbbb"]
    assert {p.headers["x-death"][0]["reason"] for _, p, _ in dropped} == {"maxlen"}
    assert get_all(ch, queue) == [b"cccc", b"dddd"]  # 8 bytes; a third would be 12


@pytest.mark.parametrize("overflow", ["reject-publish-dlx", "reject-publish"])
def test_reject_publish_nacks_and_dead_letters_with_dlx_only(
        conn: pika.BlockingConnection, ch: Any, names: Scratch, overflow: str) -> None:
    dlx, dead = dead_letter_setup(ch, names)
    queue = names.queue("full")
    ch.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": overflow,
                                       "x-dead-letter-exchange": dlx})
    ch.basic_publish("", queue, b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", queue, b"refused")
    if overflow == "reject-publish-dlx":
        [(_, props, body)] = consume_dead_letters(conn, dead)
        assert body == b"refused"
        check_death(props.headers, "maxlen", queue)
    else:
        # a marker through the same exchange: the dead-letter queue holds nothing before it
        ch.basic_publish(dlx, "", b"marker")
        assert get_all(ch, dead) == [b"marker"]
    assert get_all(ch, queue) == [b"first"]


def test_queue_expires_when_unused(ch: Any, names: Scratch) -> None:
    """Watched by mandatory publishes (a publish does not use a queue; a passive declare or
    basic.get would): once it has expired they come back unroutable."""
    queue = names.queue("expiring")
    ch.queue_declare(queue, arguments={"x-expires": 300})
    deadline = time.monotonic() + WAIT
    while True:
        try:
            ch.basic_publish("", queue, b"still there?", mandatory=True)
        except pika.exceptions.UnroutableError:
            break
        assert time.monotonic() < deadline, "the queue did not expire"
        time.sleep(0.05)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare(queue, passive=True)
    assert closed.value.reply_code == 404


def test_single_active_consumer(conn: pika.BlockingConnection, ch: Any,
                                names: Scratch) -> None:
    queue = names.queue("sac")
    ch.queue_declare(queue, arguments={"x-single-active-consumer": True})
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    channels = {}
    for name in ("a", "b"):
        consumer_channel = conn.channel()
        consumer_channel.basic_consume(
            queue, lambda _c, _m, _p, body, name=name: got[name].append(body), auto_ack=True)
        channels[name] = consumer_channel
    for i in range(4):
        ch.basic_publish("", queue, f"m{i}".encode())
    pump(conn, lambda: len(got["a"]) + len(got["b"]) == 4)
    assert got == {"a": [b"m0", b"m1", b"m2", b"m3"], "b": []}  # only the first is active
    channels["a"].close()
    for i in range(4, 6):
        ch.basic_publish("", queue, f"m{i}".encode())
    pump(conn, lambda: len(got["b"]) == 2)
    assert got["b"] == [b"m4", b"m5"] and len(got["a"]) == 4
