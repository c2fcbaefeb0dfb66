"""The six RabbitMQ tutorials, run with pika's BlockingConnection against the broker.

Each test reproduces one tutorial's behaviour (hello world, work queues, publish/subscribe,
routing, topics, RPC) with the calls the tutorial makes, on uniquely named queues and
exchanges. Every wait is bounded: `pump` processes connection events until a condition holds
or a deadline passes; routing results are read with basic.get after the publishes were
confirmed, so no test waits for something that might never come.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing

import pika
import pika.exceptions
import pytest

WAIT = 10.0  # seconds: upper bound for anything the broker should do promptly


def connect(broker) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


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


# --------------------------------------------------------------------------- 1 hello world


def test_hello_world(broker, scratch):
    queue = scratch.queue("hello")
    with closing(connect(broker)) as sender:
        channel = sender.channel()
        channel.queue_declare(queue)
        channel.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")

    received = []
    with closing(connect(broker)) as receiver:
        channel = receiver.channel()
        channel.queue_declare(queue)
        channel.basic_consume(
            queue, lambda ch, method, properties, body: received.append(body), auto_ack=True
        )
        pump(receiver, lambda: received)
    assert received == [b"Hello World!"]


# --------------------------------------------------------------------------- 2 work queues


def test_work_queue_fair_dispatch_and_redelivery(broker, scratch):
    queue = scratch.queue("task_queue")
    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    with (
        closing(connect(broker)) as producer,
        closing(connect(broker)) as slow_worker,
        closing(connect(broker)) as fast_worker,
    ):
        publisher = producer.channel()
        publisher.queue_declare(queue, durable=True)

        held = []  # the slow worker takes one task and never acks it
        slow = slow_worker.channel()
        slow.basic_qos(prefetch_count=1)
        slow.basic_consume(queue, lambda ch, method, props, body: held.append((method, body)))

        done = []

        def work(ch, method, properties, body):
            done.append((method, properties, body))
            ch.basic_ack(delivery_tag=method.delivery_tag)

        fast = fast_worker.channel()
        fast.basic_qos(prefetch_count=1)
        fast.basic_consume(queue, work)

        publisher.confirm_delivery()
        tasks = [f"task {n}".encode() for n in range(4)]
        for body in tasks:
            publisher.basic_publish("", queue, body, properties=persistent)

        pump([slow_worker, fast_worker], lambda: len(held) + len(done) == len(tasks))
        # Round-robin gave the slow worker one task; prefetch 1 kept it at one while it
        # held that task unacked, so the free worker did the other three.
        assert len(held) == 1
        assert len(done) == 3
        assert sorted([body for _, body in held] + [body for _, _, body in done]) == tasks
        assert all(props.delivery_mode == 2 for _, props, _ in done)
        assert not any(method.redelivered for method, _, _ in done)

        # The slow worker's channel closes without an ack: its task goes back to the queue
        # and the free worker gets it, marked redelivered.
        slow.close()
        pump(fast_worker, lambda: len(done) == 4)
        method, properties, body = done[-1]
        assert body == held[0][1]
        assert method.redelivered is True
        assert properties.delivery_mode == 2
        assert publisher.queue_declare(queue, passive=True).method.message_count == 0


# --------------------------------------------------------------------------- 3 publish/subscribe


def test_publish_subscribe_fanout_with_server_named_queues(broker, scratch):
    exchange = scratch.exchange("logs")
    with closing(connect(broker)) as emitter:
        channel = emitter.channel()
        channel.exchange_declare(exchange, exchange_type="fanout")
        subscribers = []
        for _ in range(2):
            connection = connect(broker)
            sub = connection.channel()
            queue = sub.queue_declare(queue="", exclusive=True).method.queue
            assert queue.startswith("amq.gen-")
            sub.queue_bind(queue=queue, exchange=exchange)
            received: list[bytes] = []
            sub.basic_consume(
                queue, lambda ch, m, p, body, into=received: into.append(body), auto_ack=True
            )
            subscribers.append((connection, queue, received))
        assert subscribers[0][1] != subscribers[1][1]

        lines = [b"info: one", b"warning: two", b"error: three"]
        for line in lines:
            channel.basic_publish(exchange=exchange, routing_key="ignored", body=line)
        try:
            for connection, _, received in subscribers:
                pump(connection, lambda received=received: len(received) == len(lines))
                assert received == lines
        finally:
            for connection, _, _ in subscribers:
                connection.close()

        # The server-named queues were exclusive: they went with their connections.
        for _, queue, _ in subscribers:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                emitter.channel().queue_declare(queue, passive=True)
            assert closed.value.reply_code == 404


# --------------------------------------------------------------------------- 4 routing


def test_direct_routing_by_severity(broker, scratch):
    exchange = scratch.exchange("direct_logs")
    errors_only, everything = scratch.queue("errors"), scratch.queue("all")
    with closing(connect(broker)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="direct")
        for queue, severities in (
            (errors_only, ["error"]),
            (everything, ["info", "warning", "error"]),
        ):
            channel.queue_declare(queue)
            for severity in severities:
                channel.queue_bind(queue, exchange, routing_key=severity)

        channel.confirm_delivery()
        for severity in ["info", "warning", "error", "debug"]:
            channel.basic_publish(exchange, severity, f"{severity} message".encode())

        assert get_all(channel, errors_only) == [b"error message"]
        assert get_all(channel, everything) == [
            b"info message",
            b"warning message",
            b"error message",
        ]


# --------------------------------------------------------------------------- 5 topics

TUTORIAL_BINDINGS = {
    "Q1": ["*.orange.*"],
    "Q2": ["*.*.rabbit", "lazy.#"],
    "Q3": ["#"],
}
TUTORIAL_KEYS = {
    "quick.orange.rabbit": {"Q1", "Q2", "Q3"},
    "lazy.orange.elephant": {"Q1", "Q2", "Q3"},
    "quick.orange.fox": {"Q1", "Q3"},
    "lazy.brown.fox": {"Q2", "Q3"},
    "lazy.pink.rabbit": {"Q2", "Q3"},  # matches both of Q2's bindings, delivered once
    "quick.brown.fox": {"Q3"},
    "orange": {"Q3"},
    "quick.orange.new.rabbit": {"Q3"},
    "lazy.orange.new.rabbit": {"Q2", "Q3"},
    "lazy": {"Q2", "Q3"},  # `#` matches zero words
    "": {"Q3"},
}

EDGE_BINDINGS = {
    "star": ["*"],
    "ends-with-end": ["#.end"],
    "a-to-b": ["a.#.b"],
    "exact": ["a.b"],
}
EDGE_KEYS = {
    "": set(),  # `*` needs exactly one word; the empty key has none
    "lazy": {"star"},
    "end": {"star", "ends-with-end"},
    "x.y.end": {"ends-with-end"},
    "end.x": set(),
    "a.b": {"a-to-b", "exact"},
    "a..b": {"a-to-b"},  # an empty word is still a word
    "a.x.y.b": {"a-to-b"},
    "a.b.c": set(),
}


@pytest.mark.parametrize(
    ("bindings", "keys"),
    [(TUTORIAL_BINDINGS, TUTORIAL_KEYS), (EDGE_BINDINGS, EDGE_KEYS)],
    ids=["tutorial", "edge-cases"],
)
def test_topic_routing(broker, scratch, bindings, keys):
    exchange = scratch.exchange("topic_logs")
    queues = {label: scratch.queue(label) for label in bindings}
    with closing(connect(broker)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic")
        for label, patterns in bindings.items():
            channel.queue_declare(queues[label])
            for pattern in patterns:
                channel.queue_bind(queues[label], exchange, routing_key=pattern)

        channel.confirm_delivery()
        for key in keys:
            channel.basic_publish(exchange, key, key.encode() or b"<empty>")

        for label, queue in queues.items():
            expected = [
                key.encode() or b"<empty>" for key, labels in keys.items() if label in labels
            ]
            assert get_all(channel, queue) == expected, f"queue {label} bound {bindings[label]}"


# --------------------------------------------------------------------------- 6 RPC


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def run_rpc_server(broker, queue: str, ready: threading.Event, stop: threading.Event, errors: list):
    try:
        with closing(connect(broker)) as connection:
            channel = connection.channel()
            channel.queue_declare(queue)
            channel.basic_qos(prefetch_count=1)

            def on_request(ch, method, props, body):
                response = str(fib(int(body))).encode()
                ch.basic_publish(
                    exchange="",
                    routing_key=props.reply_to,
                    properties=pika.BasicProperties(correlation_id=props.correlation_id),
                    body=response,
                )
                ch.basic_ack(delivery_tag=method.delivery_tag)

            channel.basic_consume(queue, on_request)
            ready.set()
            while not stop.is_set():
                connection.process_data_events(time_limit=0.05)
    except Exception as error:  # reported by the test thread
        errors.append(error)
        ready.set()


def test_rpc_with_reply_to_and_correlation_id(broker, scratch):
    rpc_queue = scratch.queue("rpc_queue")
    ready, stop, server_errors = threading.Event(), threading.Event(), []
    server = threading.Thread(
        target=run_rpc_server, args=(broker, rpc_queue, ready, stop, server_errors), daemon=True
    )
    server.start()
    try:
        assert ready.wait(WAIT), "RPC server did not start consuming"
        assert not server_errors
        with closing(connect(broker)) as client:
            channel = client.channel()
            callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
            responses: dict[str, bytes] = {}

            def on_response(ch, method, props, body):
                responses[props.correlation_id] = body

            channel.basic_consume(callback_queue, on_response, auto_ack=True)
            requests = {str(uuid.uuid4()): n for n in (10, 15, 20)}
            for correlation_id, n in requests.items():
                channel.basic_publish(
                    exchange="",
                    routing_key=rpc_queue,
                    properties=pika.BasicProperties(
                        reply_to=callback_queue, correlation_id=correlation_id
                    ),
                    body=str(n).encode(),
                )
            pump(client, lambda: len(responses) == len(requests))
            assert responses == {cid: str(fib(n)).encode() for cid, n in requests.items()}
    finally:
        stop.set()
        server.join(WAIT)
    assert not server.is_alive()
    assert not server_errors
