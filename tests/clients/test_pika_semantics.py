"""AMQP 0-9-1 semantics in RabbitMQ's dialect, observed through pika (BlockingConnection).

Errors are checked as pika reports them: a channel error raises ChannelClosedByBroker with
the reply code, and RabbitMQ's reply text starts with the code's name
("NOT_FOUND - no queue 'x' in vhost '/'"). Asynchronous errors (a publish to a missing
exchange) surface on the channel's next synchronous call or at the publisher confirm.
Waits are bounded: `pump` processes events until a condition holds or fails at a deadline;
queue contents are read with basic.get after confirmed publishes.

The last tests speak AMQP on a raw socket (frames built with pamqp) to send what no client
library would, and check that the broker answers with connection.close and keeps serving
everyone else.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from pamqp import commands, frame, header, heartbeat

WAIT = 10.0  # seconds: upper bound for anything the broker should do promptly
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


# --------------------------------------------------------------------------- helpers


def connect(broker, url: str | None = None) -> pika.BlockingConnection:
    params = pika.URLParameters(url or broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


def url_for(broker, user=None, password=None, vhost=None) -> str:
    """The broker's URL with other credentials or another vhost."""
    user, password = user or broker.user, password or broker.password
    vhost = quote(vhost or broker.vhost, safe="")
    return f"amqp://{user}:{password}@{broker.host}:{broker.amqp_port}/{vhost}"


def pump(
    connections: pika.BlockingConnection | Sequence[pika.BlockingConnection],
    until: Callable[[], object],
    timeout: float = WAIT,
) -> None:
    """Process events on the connections until `until()` is true; fail after `timeout`."""
    if isinstance(connections, pika.BlockingConnection):
        connections = [connections]
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        for connection in connections:
            connection.process_data_events(time_limit=0.02)


def get_all(channel, queue: str, limit: int = 1000) -> list[bytes]:
    """Bodies of every message ready in `queue`, removed with basic.get (auto-ack)."""
    bodies = []
    for _ in range(limit):
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)
    raise AssertionError(f"more than {limit} messages in {queue}")


def ready_count(connection: pika.BlockingConnection, queue: str) -> int:
    return connection.channel().queue_declare(queue, passive=True).method.message_count


@contextmanager
def closes_channel(code: int, name: str) -> Iterator[pytest.ExceptionInfo]:
    """The block must end with the broker closing the channel with `code` ("NAME - ...")."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        yield closed
    assert closed.value.reply_code == code, closed.value
    assert closed.value.reply_text.startswith(f"{name} - "), closed.value


class Scratch:
    """Uniquely named queues and exchanges for one test, deleted when it ends."""

    def __init__(self, unique: Callable[[str], str]) -> None:
        self._unique = unique
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, prefix: str) -> str:
        self.queues.append(self._unique(prefix))
        return self.queues[-1]

    def exchange(self, prefix: str) -> str:
        self.exchanges.append(self._unique(prefix))
        return self.exchanges[-1]

    def delete_all(self, connection: pika.BlockingConnection) -> None:
        for delete, names in (("queue_delete", self.queues), ("exchange_delete", self.exchanges)):
            for name in names:
                try:
                    getattr(connection.channel(), delete)(name)
                except pika.exceptions.ChannelClosedByBroker:
                    pass  # already gone (exclusive or auto-delete)


@pytest.fixture
def scratch(broker, unique) -> Iterator[Scratch]:
    names = Scratch(unique)
    yield names
    with closing(connect(broker)) as connection:
        names.delete_all(connection)


@pytest.fixture
def connection(broker) -> Iterator[pika.BlockingConnection]:
    with closing(connect(broker)) as opened:
        yield opened


@pytest.fixture
def channel(connection):
    """A channel in confirm mode: once basic_publish returns, the message is routed."""
    opened = connection.channel()
    opened.confirm_delivery()
    return opened


# --------------------------------------------------------------------------- connection


def test_server_capabilities_and_tuning(connection):
    assert connection.publisher_confirms_supported
    assert connection.basic_nack_supported
    assert connection.consumer_cancel_notify_supported
    assert connection.exchange_exchange_bindings_supported
    # pika keeps the rest of connection.start's server-properties on its implementation.
    properties = connection._impl.server_properties
    capabilities = properties["capabilities"]
    for name in (
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ):
        assert capabilities.get(name) is True, name
    assert properties["product"]
    # Negotiated in connection.tune / tune-ok: the server proposes heartbeats (RabbitMQ: 60 s)
    # and a frame_max of at least the spec's minimum.
    params = connection._impl.params
    assert params.heartbeat > 0
    assert params.frame_max >= 4096


def test_many_channels_on_one_connection(connection, scratch):
    queue = scratch.queue("channels")
    channels = [connection.channel() for _ in range(50)]
    assert len({ch.channel_number for ch in channels}) == 50
    channels[0].queue_declare(queue)
    for n, ch in enumerate(channels):
        ch.confirm_delivery()
        ch.basic_publish("", queue, str(n).encode())
    assert sorted(get_all(channels[-1], queue)) == sorted(str(n).encode() for n in range(50))
    channels[7].close()  # closing one channel leaves the others open
    assert channels[8].queue_declare(queue, passive=True).method.message_count == 0


def test_wrong_password_is_refused_with_403(broker):
    url = url_for(broker, password="not-the-password")
    with pytest.raises(
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
    ) as refused:
        connect(broker, url)
    # pika wraps the broker's connection.close: (403) 'ACCESS_REFUSED - Login was refused ...'
    assert "403" in str(refused.value)
    assert "ACCESS_REFUSED" in str(refused.value)


def test_unknown_user_is_refused_with_403(broker):
    url = url_for(broker, user="no-such-user", password="secret")
    with pytest.raises(
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
    ) as refused:
        connect(broker, url)
    assert "403" in str(refused.value)


def test_unknown_vhost_is_refused_with_530(broker, unique):
    url = url_for(broker, vhost=unique("no-such-vhost"))
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        connect(broker, url)
    # (530) 'NOT_ALLOWED - vhost no-such-vhost-... not found'
    assert "530" in str(refused.value)
    assert "NOT_ALLOWED" in str(refused.value)


# --------------------------------------------------------------------------- declare errors


def test_passive_declare_of_missing_queue_or_exchange_is_404(connection, unique):
    missing = unique("missing")
    with closes_channel(404, "NOT_FOUND") as closed:
        connection.channel().queue_declare(missing, passive=True)
    assert missing in closed.value.reply_text
    with closes_channel(404, "NOT_FOUND"):
        connection.channel().exchange_declare(missing, passive=True)
    # Only the channel closed: the connection still works.
    assert connection.channel().queue_declare("", exclusive=True).method.queue


def test_redeclare_with_other_properties_is_406(connection, scratch):
    queue, exchange = scratch.queue("args"), scratch.exchange("type")
    connection.channel().queue_declare(queue, arguments={"x-message-ttl": 60000})
    # The same declaration again is fine.
    connection.channel().queue_declare(queue, arguments={"x-message-ttl": 60000})
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        connection.channel().queue_declare(queue, arguments={"x-message-ttl": 1000})
    assert "x-message-ttl" in closed.value.reply_text
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        connection.channel().queue_declare(queue, durable=True, arguments={"x-message-ttl": 60000})
    assert "durable" in closed.value.reply_text

    connection.channel().exchange_declare(exchange, exchange_type="direct")
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        connection.channel().exchange_declare(exchange, exchange_type="fanout")
    assert "type" in closed.value.reply_text
    with closes_channel(406, "PRECONDITION_FAILED"):
        connection.channel().exchange_declare("amq.direct", exchange_type="topic", durable=True)


def test_exclusive_queue_of_another_connection_is_405(broker, connection, unique):
    with closing(connect(broker)) as owner:
        owned = owner.channel()
        queue = unique("exclusive")
        owned.queue_declare(queue, exclusive=True)
        for attempt in (
            lambda ch: ch.queue_declare(queue, passive=True),
            lambda ch: ch.queue_declare(queue, exclusive=True),
            lambda ch: ch.basic_consume(queue, lambda *args: None),
            lambda ch: ch.queue_delete(queue),
            lambda ch: ch.queue_purge(queue),
        ):
            with closes_channel(405, "RESOURCE_LOCKED"):
                attempt(connection.channel())
        # The owner is not disturbed.
        owned.confirm_delivery()
        owned.basic_publish("", queue, b"mine")
        assert get_all(owned, queue) == [b"mine"]


def test_reserved_amq_prefix_is_403(connection, unique):
    with closes_channel(403, "ACCESS_REFUSED") as closed:
        connection.channel().exchange_declare(unique("amq.mine"), exchange_type="direct")
    assert "amq." in closed.value.reply_text
    with closes_channel(403, "ACCESS_REFUSED"):
        connection.channel().queue_declare(unique("amq.mine"))


def test_predeclared_exchanges(connection):
    ch = connection.channel()
    for name, kind in (
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ):
        ch.exchange_declare(name, passive=True)
        # Redeclaring one as it is (durable, same type) is allowed.
        ch.exchange_declare(name, exchange_type=kind, durable=True)


# --------------------------------------------------------------------------- publishing


def test_publish_to_missing_exchange_closes_channel_404(connection, unique):
    missing = unique("no-exchange")
    ch = connection.channel()
    ch.basic_publish(missing, "key", b"lost")  # asynchronous: no reply on success
    with closes_channel(404, "NOT_FOUND") as closed:
        ch.queue_declare("", exclusive=True)  # the next synchronous call sees the close
    assert missing in closed.value.reply_text

    confirming = connection.channel()
    confirming.confirm_delivery()
    with closes_channel(404, "NOT_FOUND"):
        confirming.basic_publish(missing, "key", b"lost")


def test_publish_to_internal_exchange_is_403(connection, scratch):
    internal = scratch.exchange("internal")
    connection.channel().exchange_declare(internal, exchange_type="fanout", internal=True)
    ch = connection.channel()
    ch.confirm_delivery()
    with closes_channel(403, "ACCESS_REFUSED"):
        ch.basic_publish(internal, "", b"refused")


def test_mandatory_unroutable_message_is_returned(connection, scratch):
    exchange = scratch.exchange("nowhere")
    ch = connection.channel()
    ch.exchange_declare(exchange, exchange_type="direct")
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    ch.basic_publish(exchange, "no-binding", b"come back", mandatory=True)
    pump(connection, lambda: returned)
    method, body = returned[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key, body) == (exchange, "no-binding", b"come back")

    # In confirm mode pika raises UnroutableError for the returned message ...
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as unroutable:
        ch.basic_publish(exchange, "no-binding", b"again", mandatory=True)
    assert [m.body for m in unroutable.value.messages] == [b"again"]
    # ... and an unroutable message without `mandatory` is confirmed and dropped.
    ch.basic_publish(exchange, "no-binding", b"dropped")


def test_publisher_confirms(connection, scratch):
    queue = scratch.queue("confirms")
    ch = connection.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for n in range(20):
        ch.basic_publish("", queue, str(n).encode(), properties=PERSISTENT)  # raises on nack
    assert ch.queue_declare(queue, passive=True).method.message_count == 20


def test_confirm_nack_when_queue_rejects_publish(channel, scratch):
    queue = scratch.queue("full")
    channel.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.basic_publish("", queue, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", queue, b"does not fit")
    assert get_all(channel, queue) == [b"fits"]


def test_transactions_commit_and_rollback(connection, scratch):
    queue = scratch.queue("tx")
    observer = connection.channel()
    observer.queue_declare(queue)
    tx = connection.channel()
    tx.tx_select()
    tx.basic_publish("", queue, b"rolled back 1")
    tx.basic_publish("", queue, b"rolled back 2")
    tx.tx_rollback()
    tx.basic_publish("", queue, b"committed")
    assert ready_count(connection, queue) == 0  # nothing is visible before the commit
    tx.tx_commit()
    assert get_all(observer, queue) == [b"committed"]


def test_transactional_ack_is_undone_by_rollback(connection, channel, scratch):
    queue = scratch.queue("tx-ack")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"job")

    tx = connection.channel()
    tx.tx_select()
    method, _, _ = tx.basic_get(queue)
    tx.basic_ack(method.delivery_tag)
    tx.tx_rollback()
    tx.close()  # the ack was rolled back, so the message is still unacked here: requeued
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"job", True)

    channel.basic_publish("", queue, b"job 2")
    tx = connection.channel()
    tx.tx_select()
    method, _, _ = tx.basic_get(queue)
    tx.basic_ack(method.delivery_tag)
    tx.tx_commit()
    tx.close()
    assert ready_count(connection, queue) == 0


# --------------------------------------------------------------------------- basic.get, acks


def test_basic_get_and_get_empty(channel, scratch):
    queue = scratch.queue("get")
    channel.queue_declare(queue)
    for body in (b"one", b"two", b"three"):
        channel.basic_publish("", queue, body, properties=pika.BasicProperties(type="t"))
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"one"
    assert method.message_count == 2  # messages left after this one
    assert (method.exchange, method.routing_key, method.redelivered) == ("", queue, False)
    assert properties.type == "t"
    assert channel.basic_get(queue, auto_ack=True)[0].message_count == 1
    assert channel.basic_get(queue, auto_ack=True)[0].message_count == 0
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)  # get-empty


def test_ack_multiple(connection, channel, scratch):
    queue = scratch.queue("ack-multiple")
    channel.queue_declare(queue)
    for n in range(4):
        channel.basic_publish("", queue, str(n).encode())
    consumer = connection.channel()
    tags = [consumer.basic_get(queue)[0].delivery_tag for _ in range(4)]
    assert tags == sorted(tags) and len(set(tags)) == 4
    consumer.basic_ack(tags[2], multiple=True)  # acks the first three
    consumer.close()  # the fourth was unacked: back to the queue
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"3", True)
    assert channel.basic_get(queue) == (None, None, None)


def test_unknown_delivery_tag_is_406(connection, channel, scratch):
    queue = scratch.queue("tags")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"x")
    ch = connection.channel()
    method, _, _ = ch.basic_get(queue)
    ch.basic_ack(method.delivery_tag)
    ch.basic_ack(method.delivery_tag)  # twice
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        ch.queue_declare(queue, passive=True)
    assert "unknown delivery tag" in closed.value.reply_text


def test_nack_requeue_sets_redelivered(connection, channel, scratch):
    queue = scratch.queue("nack")
    channel.queue_declare(queue)
    for body in (b"a", b"b", b"c"):
        channel.basic_publish("", queue, body)
    ch = connection.channel()
    first, _, _ = ch.basic_get(queue)
    ch.basic_nack(first.delivery_tag, requeue=True)
    again, _, body = ch.basic_get(queue)
    assert (body, again.redelivered) == (b"a", True)

    second, _, _ = ch.basic_get(queue)
    assert second.redelivered is False
    ch.basic_nack(second.delivery_tag, multiple=True, requeue=True)  # a and b
    got = [ch.basic_get(queue, auto_ack=True) for _ in range(3)]
    # Requeued messages go back to their place at the head, in order.
    assert [(m.redelivered, body) for m, _, body in got] == [
        (True, b"a"),
        (True, b"b"),
        (False, b"c"),
    ]


def test_reject_without_requeue_drops(connection, channel, scratch):
    queue = scratch.queue("reject")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"bad")
    ch = connection.channel()
    method, _, _ = ch.basic_get(queue)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ch.basic_get(queue) == (None, None, None)
    ch.close()
    assert ready_count(connection, queue) == 0


def test_recover_redelivers_unacked_messages(connection, channel, scratch):
    queue = scratch.queue("recover")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"again")
    deliveries = []
    ch = connection.channel()
    ch.basic_consume(queue, lambda _ch, method, props, body: deliveries.append((method, body)))
    pump(connection, lambda: deliveries)
    ch.basic_recover(requeue=True)
    pump(connection, lambda: len(deliveries) == 2)
    (first, body1), (second, body2) = deliveries
    assert (body1, first.redelivered) == (b"again", False)
    assert (body2, second.redelivered) == (b"again", True)


# --------------------------------------------------------------------------- queues


def test_queue_purge_returns_count(channel, scratch):
    queue = scratch.queue("purge")
    channel.queue_declare(queue)
    for n in range(5):
        channel.basic_publish("", queue, str(n).encode())
    assert channel.queue_purge(queue).method.message_count == 5
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def test_queue_delete_if_empty_and_if_unused(connection, channel, scratch):
    queue = scratch.queue("delete")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"keep me")
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        connection.channel().queue_delete(queue, if_empty=True)
    assert "not empty" in closed.value.reply_text

    consumer = connection.channel()
    consumer.basic_consume(queue, lambda *args: None)
    with closes_channel(406, "PRECONDITION_FAILED") as closed:
        connection.channel().queue_delete(queue, if_unused=True)
    assert "in use" in closed.value.reply_text
    consumer.close()

    other = scratch.queue("delete-count")
    channel.queue_declare(other)
    channel.basic_publish("", other, b"1")
    channel.basic_publish("", other, b"2")
    assert channel.queue_delete(other).method.message_count == 2
    with closes_channel(404, "NOT_FOUND"):
        connection.channel().queue_declare(other, passive=True)


def test_exchange_delete_if_unused(connection, scratch):
    exchange, queue = scratch.exchange("in-use"), scratch.queue("bound")
    ch = connection.channel()
    ch.exchange_declare(exchange, exchange_type="direct")
    ch.queue_declare(queue)
    ch.queue_bind(queue, exchange, "k")
    with closes_channel(406, "PRECONDITION_FAILED"):
        connection.channel().exchange_delete(exchange, if_unused=True)
    ch = connection.channel()
    ch.queue_unbind(queue, exchange, "k")
    ch.exchange_delete(exchange, if_unused=True)
    with closes_channel(404, "NOT_FOUND"):
        connection.channel().exchange_declare(exchange, passive=True)


def test_declare_ok_counts_messages_and_consumers(broker, channel, scratch):
    queue = scratch.queue("counts")
    declared = channel.queue_declare(queue).method
    assert (declared.queue, declared.message_count, declared.consumer_count) == (queue, 0, 0)
    for n in range(3):
        channel.basic_publish("", queue, str(n).encode())
    with closing(connect(broker)) as other:
        ch = other.channel()
        ok = ch.queue_declare(queue, passive=True).method
        assert (ok.message_count, ok.consumer_count) == (3, 0)
        assert channel.queue_purge(queue).method.message_count == 3
        ch.basic_consume(queue, lambda *args: None)
        ch.basic_consume(queue, lambda *args: None)
        ok = channel.queue_declare(queue).method  # a plain redeclare reports counts too
        assert (ok.message_count, ok.consumer_count) == (0, 2)


def test_server_named_queue(connection):
    ch = connection.channel()
    first = ch.queue_declare("", exclusive=True).method.queue
    second = ch.queue_declare("", exclusive=True).method.queue
    assert first.startswith("amq.gen-") and second.startswith("amq.gen-")
    assert first != second
    # The default exchange routes by queue name.
    ch.confirm_delivery()
    ch.basic_publish("", first, b"by name")
    assert get_all(ch, first) == [b"by name"]
    assert get_all(ch, second) == []


def test_auto_delete_queue_goes_with_its_last_consumer(connection, scratch):
    queue = scratch.queue("auto-delete")
    ch = connection.channel()
    ch.queue_declare(queue, auto_delete=True)
    first = ch.basic_consume(queue, lambda *args: None)
    second = ch.basic_consume(queue, lambda *args: None)
    ch.basic_cancel(first)
    assert connection.channel().queue_declare(queue, passive=True).method.consumer_count == 1
    ch.basic_cancel(second)
    with closes_channel(404, "NOT_FOUND"):
        connection.channel().queue_declare(queue, passive=True)


# --------------------------------------------------------------------------- consumers


def test_consumer_tags_and_no_ack_round_robin(broker, connection, channel, scratch):
    queue = scratch.queue("round-robin")
    channel.queue_declare(queue)
    received: dict[str, list[bytes]] = {"worker-a": [], "worker-b": []}
    with closing(connect(broker)) as other:
        for conn, tag in ((connection, "worker-a"), (other, "worker-b")):
            ch = conn.channel()
            assert (
                ch.basic_consume(
                    queue,
                    lambda _ch, method, props, body: received[method.consumer_tag].append(body),
                    auto_ack=True,
                    consumer_tag=tag,
                )
                == tag
            )
        for n in range(6):
            channel.basic_publish("", queue, str(n).encode())
        pump([connection, other], lambda: sum(map(len, received.values())) == 6)
    # Deliveries alternate between the two consumers.
    assert sorted(len(bodies) for bodies in received.values()) == [3, 3]
    assert sorted(received["worker-a"] + received["worker-b"]) == [
        str(n).encode() for n in range(6)
    ]


def test_per_consumer_prefetch(connection, channel, scratch):
    queue = scratch.queue("prefetch")
    channel.queue_declare(queue)
    for n in range(5):
        channel.basic_publish("", queue, str(n).encode())
    held = []
    ch = connection.channel()
    ch.basic_qos(prefetch_count=2)
    ch.basic_consume(queue, lambda _ch, method, props, body: held.append(method))
    pump(connection, lambda: len(held) == 2)
    # Two unacked deliveries fill the window: three messages stay ready in the queue.
    assert ready_count(connection, queue) == 3
    assert len(held) == 2
    ch.basic_ack(held[0].delivery_tag)
    pump(connection, lambda: len(held) == 3)
    assert ready_count(connection, queue) == 2


def test_channel_wide_prefetch(connection, channel, scratch):
    queue = scratch.queue("global-prefetch")
    channel.queue_declare(queue)
    for n in range(8):
        channel.basic_publish("", queue, str(n).encode())
    held = []
    ch = connection.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)  # RabbitMQ: shared by the channel's consumers
    for _ in range(2):
        ch.basic_consume(queue, lambda _ch, method, props, body: held.append(method))
    pump(connection, lambda: len(held) == 3)
    assert ready_count(connection, queue) == 5
    ch.basic_ack(held[-1].delivery_tag, multiple=True)
    pump(connection, lambda: len(held) == 6)
    assert ready_count(connection, queue) == 2


def test_exclusive_consumer_refuses_others_403(connection, scratch):
    queue, busy = scratch.queue("exclusive-consumer"), scratch.queue("busy")
    ch = connection.channel()
    ch.queue_declare(queue)
    ch.basic_consume(queue, lambda *args: None, exclusive=True)
    with closes_channel(403, "ACCESS_REFUSED") as closed:
        connection.channel().basic_consume(queue, lambda *args: None)
    assert "exclusive" in closed.value.reply_text

    ch.queue_declare(busy)
    ch.basic_consume(busy, lambda *args: None)
    with closes_channel(403, "ACCESS_REFUSED"):
        connection.channel().basic_consume(busy, lambda *args: None, exclusive=True)


def test_consumer_cancel_notification_when_queue_deleted(broker, connection, scratch):
    queue = scratch.queue("doomed")
    ch = connection.channel()
    ch.queue_declare(queue)
    cancelled = []
    ch.add_on_cancel_callback(lambda method_frame: cancelled.append(method_frame.method))
    tag = ch.basic_consume(queue, lambda *args: None)
    with closing(connect(broker)) as other:
        other.channel().queue_delete(queue)
    pump(connection, lambda: cancelled)
    assert cancelled[0].consumer_tag == tag
    assert ch.is_open  # only the consumer ends, not the channel
    assert ch.consumer_tags == []


# --------------------------------------------------------------------------- exchanges


def test_headers_exchange_all_and_any(channel, scratch):
    exchange = scratch.exchange("headers")
    match_all, match_any, default = (scratch.queue(n) for n in ("all", "any", "default"))
    channel.exchange_declare(exchange, exchange_type="headers")
    for queue, arguments in (
        (match_all, {"x-match": "all", "format": "pdf", "type": "report"}),
        (match_any, {"x-match": "any", "format": "pdf", "type": "log"}),
        (default, {"format": "zip"}),  # x-match defaults to all
    ):
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, routing_key="", arguments=arguments)

    messages = {
        b"pdf report": {"format": "pdf", "type": "report"},
        b"pdf report extra": {"format": "pdf", "type": "report", "lang": "en"},
        b"zip log": {"format": "zip", "type": "log"},
        b"zip report": {"format": "zip", "type": "report"},
        b"pdf only": {"format": "pdf"},
        b"no headers": None,
    }
    for body, headers in messages.items():
        channel.basic_publish(
            exchange, "ignored", body, properties=pika.BasicProperties(headers=headers)
        )
    assert get_all(channel, match_all) == [b"pdf report", b"pdf report extra"]
    assert get_all(channel, match_any) == [
        b"pdf report",
        b"pdf report extra",
        b"zip log",
        b"pdf only",
    ]
    assert get_all(channel, default) == [b"zip log", b"zip report"]


def test_exchange_to_exchange_binding(channel, scratch):
    source, destination = scratch.exchange("source"), scratch.exchange("destination")
    queue = scratch.queue("e2e")
    channel.exchange_declare(source, exchange_type="direct")
    channel.exchange_declare(destination, exchange_type="fanout")
    channel.queue_declare(queue)
    channel.queue_bind(queue, destination)
    channel.exchange_bind(destination=destination, source=source, routing_key="forward")

    channel.basic_publish(source, "forward", b"via two exchanges")
    channel.basic_publish(source, "other", b"not forwarded")
    assert get_all(channel, queue) == [b"via two exchanges"]

    channel.exchange_unbind(destination=destination, source=source, routing_key="forward")
    channel.basic_publish(source, "forward", b"after unbind")
    assert get_all(channel, queue) == []


def test_alternate_exchange_takes_unroutable_messages(channel, scratch):
    main, alternate = scratch.exchange("main"), scratch.exchange("alternate")
    routed, unrouted = scratch.queue("routed"), scratch.queue("unrouted")
    channel.exchange_declare(alternate, exchange_type="fanout")
    channel.exchange_declare(
        main, exchange_type="direct", arguments={"alternate-exchange": alternate}
    )
    channel.queue_declare(routed)
    channel.queue_bind(routed, main, "known")
    channel.queue_declare(unrouted)
    channel.queue_bind(unrouted, alternate)

    channel.basic_publish(main, "known", b"routed")
    # mandatory is satisfied by the alternate exchange: nothing is returned.
    channel.basic_publish(main, "unknown", b"caught", mandatory=True)
    assert get_all(channel, routed) == [b"routed"]
    assert get_all(channel, unrouted) == [b"caught"]


# --------------------------------------------------------------------------- direct reply-to


def test_direct_reply_to_round_trip(broker, connection, scratch):
    service = scratch.queue("service")
    client = connection.channel()
    client.queue_declare(service)
    replies = []
    client.basic_consume(
        "amq.rabbitmq.reply-to",
        lambda _ch, method, props, body: replies.append((props, body)),
        auto_ack=True,
    )
    client.basic_publish(
        "",
        service,
        b"ping",
        properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"),
    )

    with closing(connect(broker)) as server:
        requests = []
        server.channel().basic_consume(
            service, lambda _ch, method, props, body: requests.append(props), auto_ack=True
        )
        pump(server, lambda: requests)
        reply_to = requests[0].reply_to
        # The broker rewrote the pseudo-queue name into an address for this channel.
        assert reply_to.startswith("amq.rabbitmq.reply-to.")
        responder = server.channel()
        responder.basic_publish(
            "",
            reply_to,
            b"pong",
            properties=pika.BasicProperties(correlation_id=requests[0].correlation_id),
        )
        pump(connection, lambda: replies)
    props, body = replies[0]
    assert (body, props.correlation_id) == (b"pong", "c1")


def test_direct_reply_to_misuse_is_406(connection):
    with closes_channel(406, "PRECONDITION_FAILED"):
        # a request asking for a direct reply on a channel that does not consume them
        ch = connection.channel()
        ch.basic_publish(
            "", "anything", b"", properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")
        )
        ch.queue_declare("", exclusive=True)
    with closes_channel(406, "PRECONDITION_FAILED"):
        # replies cannot be acknowledged: the pseudo-queue is consumed with no-ack only
        connection.channel().basic_consume("amq.rabbitmq.reply-to", lambda *args: None)


# --------------------------------------------------------------------------- TTL, DLX, limits


def dead_letter_setup(channel, scratch) -> tuple[str, str]:
    """A fanout dead-letter exchange and the queue bound to it."""
    exchange, queue = scratch.exchange("dlx"), scratch.queue("dead-letters")
    channel.exchange_declare(exchange, exchange_type="fanout")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange)
    return exchange, queue


def consume_dead_letters(connection, queue: str, count: int = 1) -> list:
    """Wait (bounded) for `count` messages on `queue`: (method, properties, body) each."""
    got: list = []
    ch = connection.channel()
    ch.basic_consume(queue, lambda _ch, *delivery: got.append(delivery), auto_ack=True)
    pump(connection, lambda: len(got) >= count)
    return got


def test_dead_letter_on_reject(connection, channel, scratch):
    dlx, dead = dead_letter_setup(channel, scratch)
    queue = scratch.queue("work")
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": dlx})
    channel.basic_publish("", queue, b"poison", properties=pika.BasicProperties(headers={"h": 1}))
    ch = connection.channel()
    method, _, _ = ch.basic_get(queue)
    ch.basic_reject(method.delivery_tag, requeue=False)

    [(method, properties, body)] = consume_dead_letters(connection, dead)
    assert body == b"poison"
    assert (method.exchange, method.routing_key) == (dlx, queue)  # original routing key kept
    headers = properties.headers
    assert headers["h"] == 1
    [death] = headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == queue
    assert death["count"] == 1
    assert death["exchange"] == ""
    assert death["routing-keys"] == [queue]
    assert "time" in death
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == queue
    assert headers["x-first-death-exchange"] == ""


def test_dead_letter_routing_key_and_queue_ttl(connection, channel, scratch):
    dlx, dead = dead_letter_setup(channel, scratch)
    queue = scratch.queue("ttl")
    channel.queue_declare(
        queue,
        arguments={
            "x-message-ttl": 200,
            "x-dead-letter-exchange": dlx,
            "x-dead-letter-routing-key": "expired-work",
        },
    )
    channel.basic_publish("", queue, b"too slow")
    # Nobody consumes `queue`: after 200 ms the message expires and is dead-lettered.
    [(method, properties, body)] = consume_dead_letters(connection, dead)
    assert (body, method.routing_key) == (b"too slow", "expired-work")
    [death] = properties.headers["x-death"]
    assert (death["reason"], death["queue"], death["routing-keys"]) == ("expired", queue, [queue])
    assert ready_count(connection, queue) == 0


def test_per_message_ttl(connection, channel, scratch):
    dlx, dead = dead_letter_setup(channel, scratch)
    queue = scratch.queue("message-ttl")
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": dlx})
    channel.basic_publish("", queue, b"expires", properties=pika.BasicProperties(expiration="200"))
    channel.basic_publish("", queue, b"stays", properties=pika.BasicProperties(expiration="600000"))
    [(_, properties, body)] = consume_dead_letters(connection, dead)
    assert body == b"expires"
    assert properties.expiration is None  # removed from the dead-lettered copy ...
    [death] = properties.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "200"  # ... and kept here
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert (body, properties.expiration) == (b"stays", "600000")


def test_zero_ttl_message_without_consumer_is_dropped(channel, scratch):
    queue = scratch.queue("ttl-zero")
    channel.queue_declare(queue)
    channel.basic_publish(
        "", queue, b"now or never", properties=pika.BasicProperties(expiration="0")
    )
    channel.basic_publish("", queue, b"kept")
    assert get_all(channel, queue) == [b"kept"]


def test_max_length_drops_from_the_head(connection, channel, scratch):
    dlx, dead = dead_letter_setup(channel, scratch)
    queue = scratch.queue("bounded")
    channel.queue_declare(queue, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    for body in (b"1", b"2", b"3", b"4"):
        channel.basic_publish("", queue, body)
    assert get_all(channel, queue) == [b"3", b"4"]
    dropped = consume_dead_letters(connection, dead, count=2)
    assert [body for _, _, body in dropped] == [b"1", b"2"]
    assert {props.headers["x-death"][0]["reason"] for _, props, _ in dropped} == {"maxlen"}


def test_max_priority_orders_messages(channel, scratch):
    queue = scratch.queue("priority")
    channel.queue_declare(queue, arguments={"x-max-priority": 10})
    for label, priority in (("p1", 1), ("none", None), ("p9", 9), ("p5", 5), ("p9 again", 9)):
        channel.basic_publish(
            "", queue, label.encode(), properties=pika.BasicProperties(priority=priority)
        )
    # Highest priority first; equal priorities keep publish order; no priority counts as 0.
    assert get_all(channel, queue) == [b"p9", b"p9 again", b"p5", b"p1", b"none"]


# --------------------------------------------------------------------------- broken clients


class RawClient:
    """An AMQP client on a plain socket that can send anything. Every read is bounded."""

    def __init__(self, broker) -> None:
        self.sock = socket.create_connection((broker.host, broker.amqp_port), timeout=5)
        self.sock.settimeout(5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, value, channel: int = 0) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def read_frame(self):
        """(channel, frame) or None at end of stream; raises socket.timeout if silent."""
        while True:
            if len(self.buffer) >= 7:
                size = struct.unpack(">I", self.buffer[3:7])[0]
                if len(self.buffer) >= size + 8:
                    consumed, channel, value = frame.unmarshal(self.buffer[: size + 8])
                    self.buffer = self.buffer[consumed:]
                    return channel, value
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buffer += data

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = self.buffer
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def open(self, broker, heartbeat: int = 0) -> None:
        """Protocol header, PLAIN login, tune, connection.open."""
        self.send(b"AMQP\x00\x00\x09\x01")
        _, start = self.read_frame()
        assert isinstance(start, commands.Connection.Start)
        assert "PLAIN" in start.mechanisms.split()
        self.send_frame(
            commands.Connection.StartOk(
                client_properties={"product": "raw socket test"},
                mechanism="PLAIN",
                response=f"\0{broker.user}\0{broker.password}",
                locale="en_US",
            )
        )
        _, tune = self.read_frame()
        assert isinstance(tune, commands.Connection.Tune)
        self.send_frame(
            commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=heartbeat
            )
        )
        self.send_frame(commands.Connection.Open(virtual_host=broker.vhost))
        _, open_ok = self.read_frame()
        assert isinstance(open_ok, commands.Connection.OpenOk)

    def expect_connection_close(self) -> commands.Connection.Close:
        """Skip other frames until connection.close; answer close-ok; see the socket close."""
        while True:
            received = self.read_frame()
            assert received is not None, "connection dropped without connection.close"
            channel, value = received
            if isinstance(value, commands.Connection.Close):
                assert channel == 0
                self.send_frame(commands.Connection.CloseOk())
                self.read_until_closed()  # bounded by the socket timeout
                return value

    def close(self) -> None:
        self.sock.close()


def channel_open_frame() -> bytes:
    return frame.marshal(commands.Channel.Open(), 1)


GARBAGE = {
    # frame-end octet is not 0xCE
    "bad-frame-end": (channel_open_frame()[:-1] + b"\x00", 501, "FRAME_ERROR"),
    # frame type 9 does not exist
    "unknown-frame-type": (b"\x09\x00\x01\x00\x00\x00\x02ab\xce", 501, "FRAME_ERROR"),
    # a frame header announcing ~2 GB, far over frame_max: refused before any body arrives
    "oversized-frame": (b"\x01\x00\x01\x7f\x00\x00\x00" + b"x" * 64, 501, "FRAME_ERROR"),
    # text where a frame header should be
    "text": (b"garbage garbage garbage garbage\r\n", 501, "FRAME_ERROR"),
    # a method on a channel that was never opened
    "unopened-channel": (frame.marshal(commands.Queue.Declare(queue="q"), 5), 504, "CHANNEL_ERROR"),
    # a content header where a method frame must come
    "header-without-method": (
        channel_open_frame()
        + frame.marshal(header.ContentHeader(0, 3, commands.Basic.Properties()), 1),
        505,
        "UNEXPECTED_FRAME",
    ),
}


def assert_broker_still_serves(broker, scratch) -> None:
    queue = scratch.queue("still-serving")
    with closing(connect(broker)) as connection:
        ch = connection.channel()
        ch.queue_declare(queue)
        ch.confirm_delivery()
        ch.basic_publish("", queue, b"alive")
        assert get_all(ch, queue) == [b"alive"]


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_broken_client_gets_connection_close(broker, scratch, kind):
    data, code, name = GARBAGE[kind]
    with closing(connect(broker)) as bystander:  # a well-behaved client, connected meanwhile
        raw = RawClient(broker)
        try:
            raw.open(broker)
            raw.send(data)
            close = raw.expect_connection_close()
        finally:
            raw.close()
        assert close.reply_code == code, close.reply_text
        assert close.reply_text.startswith(f"{name} - "), close.reply_text
        bystander.channel().queue_declare("", exclusive=True)
    assert_broker_still_serves(broker, scratch)


def test_garbage_during_handshake_ends_the_connection(broker, scratch):
    raw = RawClient(broker)
    try:
        raw.send(b"AMQP\x00\x00\x09\x01")
        _, start = raw.read_frame()
        assert isinstance(start, commands.Connection.Start)
        raw.send(b"garbage garbage garbage garbage\r\n")
        # RabbitMQ closes the socket without a connection.close at this stage; a close
        # with a 5xx code first is as good.
        received = raw.read_frame()
        if received is not None:
            assert isinstance(received[1], commands.Connection.Close)
            assert 500 <= received[1].reply_code < 600
            raw.send_frame(commands.Connection.CloseOk())
            raw.read_until_closed()
    finally:
        raw.close()
    assert_broker_still_serves(broker, scratch)


def test_unknown_method_ends_the_connection(broker, scratch):
    raw = RawClient(broker)
    try:
        raw.open(broker)
        raw.send_frame(commands.Channel.Open(), 1)
        assert isinstance(raw.read_frame()[1], commands.Channel.OpenOk)
        raw.send(b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x01\xce")  # class 99, method 1
        # RabbitMQ 3.10 drops the TCP connection here; a connection.close with 5xx
        # (503 COMMAND_INVALID or 540 NOT_IMPLEMENTED) is the better answer and also passes.
        received = raw.read_frame()
        if received is not None:
            assert isinstance(received[1], commands.Connection.Close)
            assert 500 <= received[1].reply_code < 600
    finally:
        raw.close()
    assert_broker_still_serves(broker, scratch)


def test_heartbeats_both_ways(broker):
    raw = RawClient(broker)
    try:
        raw.open(broker, heartbeat=1)
        # The broker sends heartbeats (RabbitMQ: every half interval) ...
        started = time.monotonic()
        received = raw.read_frame()
        assert received is not None and isinstance(received[1], heartbeat.Heartbeat)
        assert time.monotonic() - started < 2
        # ... and drops a client that sends nothing for two intervals (RabbitMQ closes the
        # socket after about 3 s here, without a connection.close).
        while True:
            received = raw.read_frame()  # a silent socket for 5 s raises TimeoutError
            if received is None:
                break
            if isinstance(received[1], commands.Connection.Close):
                assert received[1].reply_code >= 500
                break
            assert isinstance(received[1], heartbeat.Heartbeat)
            assert time.monotonic() - started < 10, "still connected after 10 s of silence"
    finally:
        raw.close()


@pytest.mark.parametrize(
    "greeting",
    [b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x0a", b"AMQP\x00\x00\x09\x02", b"GET / HT"],
    ids=["amqp-0-8", "amqp-0-10", "unknown-revision", "http"],
)
def test_unsupported_protocol_header_gets_ours_back(broker, greeting):
    raw = RawClient(broker)
    try:
        raw.send(greeting)
        assert raw.read_until_closed() == b"AMQP\x00\x00\x09\x01"
    finally:
        raw.close()
