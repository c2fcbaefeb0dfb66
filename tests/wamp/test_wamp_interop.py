"""WAMP meets the core: pika (AMQP 0-9-1) and stomp.py (STOMP) on the other side.

- a WAMP PUBLISH to `com.example.temp` reaches a pika queue bound `com.example.*` on
  amq.topic and a STOMP subscriber of `/topic/com.example.temp`; and back;
- a WAMP CALL of `rpc_queue` is answered by an RPC server written as the RabbitMQ
  tutorials' `rpc_server.py` (queue `rpc_queue`, prefetch 1, `int(body)`, reply to
  `reply_to` with the `correlation_id`);
- an AMQP RPC client (the tutorials' `rpc_client.py` pattern) calls a procedure a WAMP
  callee registered.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
import stomp
import trio
from ab_client import join, leave
from autobahn.wamp.types import PublishOptions
from ws_harness import Gateway, in_asyncio, in_thread, poll, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    async with running_gateway(tmp_path) as gateway:
        yield gateway


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _pika(gw: Gateway) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(gw.amqp_url))


async def test_wamp_publish_reaches_pika_and_stomp_and_back(gw: Gateway) -> None:
    bound = threading.Event()  # the AMQP queue and the STOMP subscription exist
    published = threading.Event()  # the WAMP side published and subscribed
    stomp_got: list[Any] = []

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            stomp_got.append((frame.body, frame.headers.get("content-type")))

    def amqp_and_stomp_side() -> list[Any]:
        sc = stomp.Connection([("127.0.0.1", gw.ports["stomp"])])
        sc.set_listener("l", Listener())
        sc.connect("guest", "guest", wait=True)
        sc.subscribe("/topic/com.example.temp", id="1", ack="auto")
        conn = _pika(gw)
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "com.example.*")
        poll(lambda: len(gw.server.broker.vhost("/").exchanges["amq.topic"].bindings) >= 2)
        bound.set()
        published.wait(10)
        got = []
        for _ in range(500):
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                got.append((method.routing_key, props.content_type, body))
                if len(got) == 2:
                    break
            else:
                conn.sleep(0.01)
        ch.basic_publish("amq.topic", "com.example.back", b'{"t": 3}',
                         pika.BasicProperties(content_type="application/json"))
        ch.basic_publish("amq.topic", "com.example.back", b"plain")
        poll(lambda: len(stomp_got) >= 2)
        sc.disconnect()
        conn.close()
        return got

    async def wamp_side() -> list[Any]:
        s = await join(gw.ws_url)
        events: asyncio.Queue[Any] = asyncio.Queue()
        await s.subscribe(lambda *a, **kw: events.put_nowait((a, kw)), "com.example.back")
        while not bound.is_set():
            await asyncio.sleep(0.01)
        await s.publish("com.example.temp", 21.5, options=PublishOptions(acknowledge=True))
        await s.publish("com.example.temp", "warm", options=PublishOptions(acknowledge=True))
        published.set()
        got = [await asyncio.wait_for(events.get(), 10) for _ in range(2)]
        await leave(s)
        return got

    results: dict[str, Any] = {}

    async def run(name: str, fn: Any, *args: Any) -> None:
        results[name] = await fn(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "amqp", in_thread, amqp_and_stomp_side)
        nursery.start_soon(run, "wamp", in_asyncio, wamp_side)
    assert results["amqp"] == [("com.example.temp", "application/json", b"21.5"),
                               ("com.example.temp", "text/plain; charset=utf-8", b"warm")]
    assert stomp_got == [("21.5", "application/json"), ("warm", "text/plain; charset=utf-8")]
    assert results["wamp"] == [(({"t": 3},), {}), (("plain",), {})]


def _rpc_server(gw: Gateway, stop: threading.Event, started: threading.Event) -> None:
    """An AMQP RPC server as in the RabbitMQ tutorials (rpc_server.py)."""
    conn = _pika(gw)
    ch = conn.channel()
    ch.queue_declare(queue="rpc_queue")

    def on_request(ch: Any, method: Any, props: Any, body: bytes) -> None:
        n = int(body)
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=str(fib(n)))
        ch.basic_ack(delivery_tag=method.delivery_tag)

    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    started.set()
    while not stop.is_set():
        conn.process_data_events(time_limit=0.05)
    conn.close()


async def test_wamp_call_answered_by_the_tutorial_rpc_server(gw: Gateway) -> None:
    stop, started = threading.Event(), threading.Event()
    server = threading.Thread(target=_rpc_server, args=(gw, stop, started))
    server.start()
    try:
        await in_thread(lambda: started.wait(10))

        async def main() -> list[Any]:
            s = await join(gw.ws_url)
            out = [await s.call("rpc_queue", 30), await s.call("rpc_queue", "10")]
            await leave(s)
            return out

        assert await in_asyncio(main) == [832040, 55]
    finally:
        stop.set()
        await in_thread(lambda: server.join(10))


async def test_amqp_rpc_client_calls_a_wamp_callee(gw: Gateway) -> None:
    registered = threading.Event()
    done = threading.Event()

    async def callee() -> None:
        s = await join(gw.ws_url, serializer="msgpack")
        await s.register(lambda n: fib(int(n)), "com.example.fib")
        registered.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await leave(s)

    def client() -> list[int]:
        registered.wait(10)
        conn = _pika(gw)
        ch = conn.channel()
        callback = ch.queue_declare(queue="", exclusive=True).method.queue
        responses: dict[str, bytes] = {}

        def on_response(ch: Any, method: Any, props: Any, body: bytes) -> None:
            responses[props.correlation_id] = body

        ch.basic_consume(queue=callback, on_message_callback=on_response, auto_ack=True)
        results = []
        for n in (30, 7):
            corr = str(uuid.uuid4())
            ch.basic_publish(exchange="", routing_key="com.example.fib",
                             properties=pika.BasicProperties(reply_to=callback,
                                                             correlation_id=corr),
                             body=str(n))
            while corr not in responses:
                conn.process_data_events(time_limit=0.05)
            results.append(int(responses[corr]))
        conn.close()
        done.set()
        return results

    results: list[list[int]] = []

    async def run_client() -> None:
        results.append(await in_thread(client))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_asyncio, callee)
        nursery.start_soon(run_client)
    assert results == [[832040, 13]]
