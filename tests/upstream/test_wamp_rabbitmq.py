"""WAMP with `--backend rabbitmq`: autobahn-python clients on two gateway nodes
(subprocesses) in front of the private RabbitMQ node. A subscriber on node B gets node A's
WAMP and MQTT publishes (its subscription is a queue in RabbitMQ bound to `amq.topic`); a
caller on node A reaches a callee on node B, and a pika RPC server on RabbitMQ itself (the
call is a message to the procedure's queue with reply-to and correlation id). Server-named
queues (WAMP's, STOMP's /temp-queue/) are `gateway.gen-...` in RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import secrets
import threading
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pika
import pytest
import stomp
from ab_client import join, leave
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from .gateway_node import GatewayNode
from .rabbit import PASSWORD, USER, Cluster
from .test_backend_rabbitmq import TIMEOUT, Peer, pika_connection

T = TypeVar("T")


@pytest.fixture(scope="module")
def nodes(rabbit_node: Cluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayNode, GatewayNode]]:
    """Two gateway nodes with their HTTP listener (WAMP at /ws) on."""
    extra = ["--http-port", "0"]
    a = GatewayNode(rabbit_node, tmp_path_factory.mktemp("wamp-a"), extra=extra).start()
    b = GatewayNode(rabbit_node, tmp_path_factory.mktemp("wamp-b"), extra=extra).start()
    yield a, b
    a.stop()
    b.stop()


def ws_url(node: GatewayNode) -> str:
    return f"ws://127.0.0.1:{node.ports['http']}/ws"


async def joined(node: GatewayNode) -> Any:
    return await join(ws_url(node), authid=USER, secret=PASSWORD)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(main(), 3 * TIMEOUT))  # type: ignore[arg-type]


def test_a_subscriber_on_node_b_gets_wamp_and_mqtt_publishes_from_node_a(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    topic = f"com.example.{tag}.temp"

    async def main() -> list[Any]:
        sub = await joined(b)
        pub = await joined(a)
        got: asyncio.Queue[Any] = asyncio.Queue()
        # SUBSCRIBED comes once RabbitMQ has the subscription's queue and binding
        await sub.subscribe(lambda *args, **kw: got.put_nowait(list(args)), topic)
        # PUBLISHED (acknowledge) comes after RabbitMQ's publisher confirm
        await pub.publish(topic, 21.5, options=PublishOptions(acknowledge=True))
        first = await asyncio.wait_for(got.get(), TIMEOUT)
        await asyncio.get_running_loop().run_in_executor(None, mqtt_publish, a, tag)
        second = await asyncio.wait_for(got.get(), TIMEOUT)
        await leave(sub)
        await leave(pub)
        return [first, second]

    assert run(main) == [[21.5], ["from mqtt"]]


def mqtt_publish(node: GatewayNode, tag: str) -> None:
    peer = Peer(node.ports["mqtt"], f"wamp-mqtt-{tag}")
    try:
        peer.publish(f"com/example/{tag}/temp", b"from mqtt", 1)
    finally:
        peer.close()


def test_the_subscription_queue_is_a_gateway_named_exclusive_queue_in_rabbitmq(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    """A server-named queue is `gateway.gen-...` upstream (RabbitMQ refuses `amq.*` names
    from clients), and goes when the session leaves."""
    _, b = nodes
    tag = secrets.token_hex(4)
    topic = f"com.named.{tag}"

    def bound_queues() -> list[str]:
        """The queues bound to amq.topic with the topic, from RabbitMQ's HTTP API."""
        bindings = management_get(rabbit_node, "/api/exchanges/%2F/amq.topic/bindings/source")
        return [x["destination"] for x in bindings if x["routing_key"] == topic]

    async def main() -> tuple[list[str], list[str]]:
        sub = await joined(b)
        await sub.subscribe(lambda *a: None, topic)
        loop = asyncio.get_running_loop()
        during = await loop.run_in_executor(None, bound_queues)
        await leave(sub)
        after: list[str] = during
        for _ in range(50):  # the delete follows the session's end (bounded)
            after = await loop.run_in_executor(None, bound_queues)
            if not after:
                break
            await asyncio.sleep(0.1)
        return during, after

    during, after = run(main)
    assert len(during) == 1 and during[0].startswith("gateway.gen-"), during
    assert after == []


def management_get(rabbit: Cluster, path: str) -> Any:
    parts = urllib.parse.urlsplit(rabbit.nodes[0].management_url)
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}{path}")
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.load(response)


def test_a_caller_on_node_a_and_a_callee_on_node_b(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    tag = secrets.token_hex(4)
    procedure = f"com.example.{tag}.add"

    async def main() -> tuple[Any, Any]:
        callee = await joined(b)
        caller = await joined(a)
        # REGISTERED comes once the procedure's queue is declared in RabbitMQ
        await callee.register(lambda x, y: x + y, procedure)
        result = await caller.call(procedure, 2, 3)
        kw = await caller.call(procedure, x="a", y="b")
        await leave(caller)
        await leave(callee)
        return result, kw

    assert run(main) == (5, "ab")


def test_a_callee_error_reaches_the_caller_on_another_node(
        nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, b = nodes
    procedure = f"com.example.{secrets.token_hex(4)}.fail"

    async def main() -> str:
        callee = await joined(b)
        caller = await joined(a)

        def fail() -> None:
            raise ApplicationError("com.example.error.nope", "no")

        await callee.register(fail, procedure)
        try:
            await caller.call(procedure)
        except ApplicationError as err:
            return str(err.error)
        finally:
            await leave(caller)
            await leave(callee)
        return "no error"

    assert run(main) == "com.example.error.nope"


@contextlib.contextmanager
def rpc_server(rabbit: Cluster) -> Iterator[tuple[str, list[str]]]:
    """The RabbitMQ tutorials' rpc_server.py in a thread: fib(n) to reply_to with the
    request's correlation id. Yields its queue and the reply_to of each request."""
    rpc_queue = f"rpc_queue_{secrets.token_hex(4)}"
    served: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def server() -> None:
        with pika_connection(rabbit) as conn:
            ch = conn.channel()
            ch.queue_declare(rpc_queue)
            ch.basic_qos(prefetch_count=1)

            def on_request(channel: Any, method: Any, props: Any, body: bytes) -> None:
                n = int(body)
                a, b = 0, 1
                for _ in range(n):
                    a, b = b, a + b
                served.append(props.reply_to)
                channel.basic_publish("", props.reply_to, str(a).encode(),
                                      pika.BasicProperties(correlation_id=props.correlation_id))
                channel.basic_ack(method.delivery_tag)

            ch.basic_consume(rpc_queue, on_request)
            ready.set()
            while not stop.is_set():
                conn.process_data_events(time_limit=0.1)
            ch.queue_delete(rpc_queue)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    try:
        yield rpc_queue, served
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_a_pika_rpc_server_on_rabbitmq_answers_a_wamp_call(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    a, _ = nodes
    with rpc_server(rabbit_node) as (rpc_queue, served):
        async def main() -> Any:
            caller = await joined(a)
            try:
                return await caller.call(rpc_queue, 30)  # body b"30" (JSON of 30)
            finally:
                await leave(caller)

        assert run(main) == 832040
    # the reply went to the caller's reply queue, named by the gateway for RabbitMQ
    assert len(served) == 1 and served[0].startswith("gateway.gen-")


def test_a_pika_rpc_server_answers_a_stomp_temp_queue(
        rabbit_node: Cluster, nodes: tuple[GatewayNode, GatewayNode]) -> None:
    """STOMP's /temp-queue/ is a server-named queue too: `gateway.gen-...` in RabbitMQ."""
    _, b = nodes
    client = stomp.Connection12([("127.0.0.1", b.ports["stomp"])])
    replies: queue.Queue[Any] = queue.Queue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            replies.put(frame)

    client.set_listener("l", Listener())
    client.connect(USER, PASSWORD, wait=True)
    try:
        with rpc_server(rabbit_node) as (rpc_queue, served):
            client.send(f"/amq/queue/{rpc_queue}", "10",
                        headers={"reply-to": "/temp-queue/fib", "correlation-id": "c1"})
            frame = replies.get(timeout=TIMEOUT)
        assert frame.body == "55"
        assert frame.headers["correlation-id"] == "c1"
        assert frame.headers["subscription"] == "/temp-queue/fib"
        assert len(served) == 1 and served[0].startswith("gateway.gen-")
    finally:
        client.disconnect()
