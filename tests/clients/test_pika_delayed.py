"""The x-delayed-message exchange (RabbitMQ's community plugin
rabbitmq-delayed-message-exchange) through pika: declare refusals, `x-delay` holding and the
order of release, `x-delayed-type` topic routing, mandatory publishes, a retry-with-backoff
consumer, the delayed-message limit, and held messages surviving SIGKILL. A message must not
arrive before its delay; it must arrive within the delay and a generous margin."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pika.exceptions
import pytest
from test_pika_semantics import Scratch, connect

MARGIN = 10.0  # s past the delay a delayed message may take to arrive (a loaded machine)
DELAYED = {"x-delayed-type": "direct"}


@pytest.fixture
def names(broker: Any, unique: Any) -> Iterator[Scratch]:
    scratch = Scratch(unique)
    yield scratch
    with closing(connect(broker)) as connection:
        scratch.delete_all(connection)


def _setup(ch: Any, names: Scratch, kind: str = "direct", durable: bool = False,
           key: str = "k") -> tuple[str, str]:
    x, q = names.exchange("dx"), names.queue("dq")
    ch.exchange_declare(x, "x-delayed-message", durable=durable,
                        arguments={"x-delayed-type": kind})
    ch.queue_declare(q, durable=durable)
    ch.queue_bind(q, x, key)
    return x, q


def _collect(conn: pika.BlockingConnection, ch: Any, queue: str, n: int,
             timeout: float) -> list[tuple[float, Any, bytes]]:
    """Consume until `n` messages came (at most `timeout` s): (arrival, properties, body)."""
    got: list[tuple[float, Any, bytes]] = []

    def on_message(c: Any, method: Any, props: Any, body: bytes) -> None:
        got.append((time.time(), props, body))
        c.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on_message)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    ch.basic_cancel(tag)
    return got


def test_declare_refused_as_the_plugin_refuses(broker: Any, names: Scratch) -> None:
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
            ch.exchange_declare(names.exchange("dx"), "x-delayed-message")
        assert missing.value.reply_code == 406
        assert missing.value.reply_text == ("PRECONDITION_FAILED - Invalid argument, "
                                            "'x-delayed-type' must be an existing exchange type")
    conn = connect(broker)  # closed by the broker: a connection error, as RabbitMQ's
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as unknown:
        ch.exchange_declare(names.exchange("dx"), "x-delayed-message",
                            arguments={"x-delayed-type": "foo"})
    assert unknown.value.reply_code == 503
    assert "unknown exchange type 'foo'" in unknown.value.reply_text
    assert conn.is_closed


def test_held_then_routed_in_due_order_with_properties(broker: Any, names: Scratch) -> None:
    """The plugin README's example: 5000 ms then 1000 ms published, the 1000 ms one comes
    first (shortened here to 2000 and 1000 ms)."""
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        x, q = _setup(ch, names, durable=True)
        start = time.time()
        ch.basic_publish(x, "k", b"delayed payload", pika.BasicProperties(
            headers={"x-delay": 2000, "app": "a"}, content_type="text/plain",
            correlation_id="c-1", delivery_mode=2))
        ch.basic_publish(x, "k", b"more delayed payload", pika.BasicProperties(
            headers={"x-delay": 1000}))
        ch.basic_publish(x, "k", b"no delay")  # no x-delay: routed at once
        vhost = quote(broker.vhost, safe="")
        answer = httpx.get(
            f"http://127.0.0.1:{broker.ports['http']}/api/exchanges/{vhost}/{x}",
            auth=(broker.user, broker.password), timeout=10)
        assert answer.json()["messages_delayed"] == 2
        got = _collect(conn, ch, q, 3, 2 + MARGIN)
        assert [body for _, _, body in got] == [b"no delay", b"more delayed payload",
                                                b"delayed payload"]
        (t1, p1, _), (t2, p2, _) = got[1], got[2]
        assert t1 - start >= 1.0 and t2 - start >= 2.0
        assert p1.headers == {"x-delay": -1000}
        assert p2.headers == {"x-delay": -2000, "app": "a"}
        assert (p2.content_type, p2.correlation_id, p2.delivery_mode) == (
            "text/plain", "c-1", 2)
    # the management API shows the exchange type and its arguments
    answer = httpx.get(f"http://127.0.0.1:{broker.ports['http']}/api/exchanges/{vhost}/{x}",
                       auth=(broker.user, broker.password), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["type"] == "x-delayed-message"
    assert answer.json()["arguments"] == {"x-delayed-type": "direct"}
    assert answer.json()["messages_delayed"] == 0


def test_topic_delayed_type(broker: Any, names: Scratch) -> None:
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        x, q = _setup(ch, names, kind="topic", key="orders.*.eu")
        start = time.time()
        for key in ("orders.new.eu", "orders.new.us", "orders.paid.eu"):
            ch.basic_publish(x, key, key.encode(),
                             pika.BasicProperties(headers={"x-delay": 1000}))
        got = _collect(conn, ch, q, 2, 1 + MARGIN)
        assert [body for _, _, body in got] == [b"orders.new.eu", b"orders.paid.eu"]
        assert all(t - start >= 1.0 for t, _, _ in got)
        assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_mandatory_delayed_publish_is_returned_and_still_delivered(
        broker: Any, names: Scratch) -> None:
    """As the plugin (README, Limitations; its issue #7): routing happens later, so a
    mandatory delayed publish is returned at once with 312 NO_ROUTE and delivered when due."""
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        x, q = _setup(ch, names)
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish(x, "k", b"returned but kept",
                             pika.BasicProperties(headers={"x-delay": 1000}), mandatory=True)
        ch.basic_publish(x, "k", b"not delayed", mandatory=True)  # routed now: no return
        got = _collect(conn, ch, q, 2, 1 + MARGIN)
        assert [body for _, _, body in got] == [b"not delayed", b"returned but kept"]


def test_retry_with_backoff(broker: Any, names: Scratch) -> None:
    """What applications do with the plugin: a consumer that fails a job republishes it to
    the delayed exchange with a growing x-delay and a retry count, until it succeeds."""
    delays = [500, 1000]  # ms before the 2nd and 3rd attempt
    with closing(connect(broker)) as conn:
        ch = conn.channel()
        x, q = _setup(ch, names, key="jobs")
        attempts: list[tuple[float, int]] = []
        done: list[bytes] = []

        def work(c: Any, method: Any, props: Any, body: bytes) -> None:
            retries = int((props.headers or {}).get("x-retries", 0))
            attempts.append((time.time(), retries))
            if retries < len(delays):  # fails: try again later
                c.basic_publish(x, "jobs", body, pika.BasicProperties(headers={
                    "x-retries": retries + 1, "x-delay": delays[retries]}))
            else:
                done.append(body)
            c.basic_ack(method.delivery_tag)

        tag = ch.basic_consume(q, work)
        ch.basic_publish(x, "jobs", b"job-1")
        deadline = time.monotonic() + sum(delays) / 1000 + MARGIN
        while not done and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        ch.basic_cancel(tag)
    assert done == [b"job-1"]
    assert [r for _, r in attempts] == [0, 1, 2]
    for (before, _), (after, _), delay in zip(attempts[:-1], attempts[1:], delays, strict=True):
        assert after - before >= delay / 1000


def test_limit_refuses_the_publish(configured_broker: Callable[[str], Any],
                                   unique: Callable[[str], str]) -> None:
    running = configured_broker("[limits]\ndelayed_max_messages = 2\n")
    with closing(connect(running)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        x, _ = _setup(ch, Scratch(unique))
        for _ in range(2):
            ch.basic_publish(x, "k", b"held", pika.BasicProperties(headers={"x-delay": 60000}))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.basic_publish(x, "k", b"over", pika.BasicProperties(headers={"x-delay": 60000}))
        assert err.value.reply_code == 406
        assert "delayed message limit of the vhost (2 messages) is reached" in (
            err.value.reply_text)
        ch = conn.channel()  # not delayed: still routed
        ch.basic_publish(x, "k", b"now")


def test_held_messages_survive_sigkill(fresh_broker: Any, unique: Callable[[str], str]
                                       ) -> None:
    """Persistent messages held by a durable delayed exchange are on disk once confirmed:
    SIGKILL, restart, and they arrive when due, in due order, once."""
    names = Scratch(unique)
    with closing(connect(fresh_broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        x, q = _setup(ch, names, durable=True)
        start = time.time()
        for body, delay in ((b"three", 3000), (b"two", 2000)):
            ch.basic_publish(x, "k", body, pika.BasicProperties(
                headers={"x-delay": delay}, delivery_mode=2))
    fresh_broker.restart(kill=True)
    with closing(connect(fresh_broker)) as conn:
        ch = conn.channel()
        got = _collect(conn, ch, q, 2, 3 + MARGIN)
        assert [body for _, _, body in got] == [b"two", b"three"]
        assert got[0][0] - start >= 2.0 and got[1][0] - start >= 3.0
        assert [p.headers for _, p, _ in got] == [{"x-delay": -2000}, {"x-delay": -3000}]
        conn.process_data_events(time_limit=1.0)
        assert ch.queue_declare(q, passive=True).method.message_count == 0
