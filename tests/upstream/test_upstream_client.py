"""The upstream client (gateway.upstream) against a private RabbitMQ node: handshake,
topology RPCs, publisher confirms, consumers with prefetch, nack/return, pika interop and
connection.blocked (see rabbit.py for the node)."""

from __future__ import annotations

import secrets

import pika
import pytest
import trio
from pamqp import commands

from gateway.upstream import (
    ChannelError,
    PublishNacked,
    PublishReturned,
    UpstreamConnection,
    UpstreamError,
    connect,
)

from .rabbit import Cluster


def name(prefix: str) -> str:
    return f"gw.{prefix}.{secrets.token_hex(4)}"


async def test_handshake_negotiates_and_declares(rabbit_node: Cluster) -> None:
    async with connect(rabbit_node.urls(), heartbeat=10, frame_max=8192) as conn:
        assert conn.server_properties["product"] == b"RabbitMQ" or \
            conn.server_properties["product"] == "RabbitMQ"
        link = conn._link
        assert link is not None
        assert link.client.heartbeat == 10 and link.client.frame_max == 8192
        exchange, queue = name("x"), name("q")
        await conn.declare_exchange(exchange, "topic", durable=False)
        declared, messages, consumers = await conn.declare_queue(
            queue, durable=True, arguments={"x-queue-type": "quorum"})
        assert (declared, messages, consumers) == (queue, 0, 0)
        await conn.bind_queue(queue, exchange, "a.*")
        await conn.publish(exchange, "a.b", b"routed")
        await conn.publish(exchange, "z.b", b"not routed")  # confirmed although unroutable
        _, messages, _ = await conn.declare_queue(queue, passive=True)
        assert messages == 1
        await conn.unbind_queue(queue, exchange, "a.*")
        await conn.publish(exchange, "a.b", b"after unbind")
        assert (await conn.declare_queue(queue, passive=True))[1] == 1
        # a redeclare with other arguments: 406 with RabbitMQ's code, then the next RPC works
        with pytest.raises(ChannelError) as refused:
            await conn.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
        assert refused.value.reply_code == 406
        with pytest.raises(ChannelError) as missing:
            await conn.declare_queue(name("absent"), passive=True)
        assert missing.value.reply_code == 404
        assert await conn.delete_queue(queue) == 1
        await conn.delete_exchange(exchange)
        # a body larger than frame_max is split into body frames and comes back whole
        big = name("big")
        await conn.declare_queue(big, durable=False, auto_delete=False)
        payload = bytes(range(256)) * 100
        await conn.publish("", big, payload, commands.Basic.Properties(
            content_type="application/octet-stream", headers={"k": "v", "n": 7}))
        consumer = await conn.consume(big, prefetch=1)
        message = await consumer.__anext__()
        assert message.body == payload and message.properties.headers == {"k": "v", "n": 7}
        assert await message.ack()
        await consumer.cancel()
        await conn.delete_queue(big)


async def test_bad_credentials_and_no_node(rabbit_node: Cluster) -> None:
    node = rabbit_node.nodes[0]
    with pytest.raises(ChannelError) as refused:
        async with connect([node.url(password="wrong")]):
            pass
    assert refused.value.reply_code == 403
    # two dead ports, then the live node: the client moves along the list
    dead = [f"amqp://u:p@127.0.0.1:{port}/" for port in (1, 2)]
    async with connect([*dead, node.url()], connect_timeout=2) as conn:
        assert conn.url is not None and conn.url.port == node.amqp_port
    with pytest.raises(UpstreamError):
        async with connect(dead, connect_timeout=2):
            pass


async def test_confirms_then_consume_and_ack_counts_match(rabbit_node: Cluster) -> None:
    queue = name("confirm")
    total = 500
    async with connect(rabbit_node.urls()) as conn:
        await conn.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})

        async def publisher(start: int) -> None:
            for i in range(start, total, 5):
                await conn.publish("", queue, str(i).encode())

        async with trio.open_nursery() as nursery:  # concurrent publishers share a channel
            for start in range(5):
                nursery.start_soon(publisher, start)
        link = conn._link
        assert link is not None and not link.publishes
        assert (await conn.declare_queue(queue, passive=True))[1] == total
        seen: list[int] = []
        consumer = await conn.consume(queue, prefetch=50)
        async for message in consumer:
            seen.append(int(message.body))
            assert await message.ack()
            if len(seen) == total:
                break
        assert sorted(seen) == list(range(total))
        await consumer.cancel()
        assert (await conn.declare_queue(queue, passive=True))[1] == 0
        with trio.fail_after(10):  # a quorum queue counts the cancel a moment later
            while (await conn.declare_queue(queue, passive=True))[2]:
                await trio.sleep(0.1)
        await conn.delete_queue(queue)


async def test_nack_and_return(rabbit_node: Cluster) -> None:
    queue = name("full")
    async with connect(rabbit_node.urls()) as conn:
        # a queue that refuses publishes past one message nacks the second
        await conn.declare_queue(queue, durable=False, arguments={
            "x-max-length": 1, "x-overflow": "reject-publish"})
        await conn.publish("", queue, b"first")
        with pytest.raises(PublishNacked):
            await conn.publish("", queue, b"second")
        # mandatory and unroutable: basic.return then the confirm
        with pytest.raises(PublishReturned) as returned:
            await conn.publish("", name("nowhere"), b"x", mandatory=True)
        assert returned.value.reply_code == 312
        await conn.publish("", name("nowhere"), b"x")  # not mandatory: just confirmed
        # a publish to a missing exchange closes the publish channel with 404; the next
        # publish opens another
        with pytest.raises(ChannelError) as missing:
            await conn.publish(name("no-exchange"), "k", b"x")
        assert missing.value.reply_code == 404
        await conn.purge_queue(queue)
        await conn.publish("", queue, b"after")
        consumer = await conn.consume(queue, prefetch=0)
        message = await consumer.__anext__()
        assert message.body == b"after"
        # reject with requeue, then nack without: the queue ends empty
        assert await message.reject(requeue=True)
        again = await consumer.__anext__()
        assert again.redelivered and again.body == b"after"
        assert await again.nack(requeue=False)
        await consumer.cancel()
        assert (await conn.declare_queue(queue, passive=True))[1] == 0
        await conn.delete_queue(queue)


async def test_prefetch_is_honoured(rabbit_node: Cluster) -> None:
    queue = name("prefetch")
    async with connect(rabbit_node.urls()) as conn:
        await conn.declare_queue(queue, durable=False)
        for i in range(20):
            await conn.publish("", queue, b"%d" % i)
        received = []
        consumer = await conn.consume(queue, prefetch=3, callback=received.append)
        with trio.move_on_after(1.0):  # the server sends 3, then waits for acks
            while True:
                await trio.sleep(0.05)
        assert len(received) == 3
        assert await received[0].ack()
        with trio.fail_after(10):
            while len(received) < 4:
                await trio.sleep(0.02)
        with trio.move_on_after(0.5):
            while True:
                await trio.sleep(0.05)
        assert len(received) == 4
        await consumer.cancel()
        await conn.delete_queue(queue)


async def test_server_cancel_ends_the_consumer(rabbit_node: Cluster) -> None:
    queue = name("cancelled")
    async with connect(rabbit_node.urls()) as conn:
        await conn.declare_queue(queue, durable=False)
        consumer = await conn.consume(queue)
        await conn.delete_queue(queue)  # RabbitMQ sends basic.cancel to the consumer
        with trio.fail_after(10):
            async for _ in consumer:
                raise AssertionError("no message was published")
        assert consumer.cancelled and consumer.cancelled_by_server


def _pika(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


async def test_pika_interop_both_ways(rabbit_node: Cluster) -> None:
    url = rabbit_node.nodes[0].url()
    to_pika, from_pika = name("to-pika"), name("from-pika")
    count = 50
    async with connect(rabbit_node.urls()) as conn:
        await conn.declare_queue(to_pika, durable=False)
        await conn.declare_queue(from_pika, durable=False)
        for i in range(count):
            await conn.publish("", to_pika, b"m%d" % i, commands.Basic.Properties(
                message_id=str(i), headers={"i": i}, delivery_mode=2))

        def pika_side() -> list[tuple[bytes, str, dict[str, object]]]:
            connection = _pika(url)
            try:
                channel = connection.channel()
                got = []
                for method, properties, body in channel.consume(to_pika, inactivity_timeout=10):
                    assert method is not None, "pika received nothing for 10 s"
                    got.append((body, properties.message_id, properties.headers))
                    channel.basic_ack(method.delivery_tag)
                    if len(got) == count:
                        break
                channel.cancel()
                channel.confirm_delivery()
                for i in range(count):
                    channel.basic_publish("", from_pika, b"p%d" % i,
                                          pika.BasicProperties(correlation_id=str(i)))
                return got
            finally:
                connection.close()

        got = await trio.to_thread.run_sync(pika_side)
        assert got == [(b"m%d" % i, str(i), {"i": i}) for i in range(count)]
        consumer = await conn.consume(from_pika, prefetch=10)
        bodies = []
        async for message in consumer:
            bodies.append((message.body, message.properties.correlation_id))
            await message.ack()
            if len(bodies) == count:
                break
        assert bodies == [(b"p%d" % i, str(i)) for i in range(count)]
        await consumer.cancel()
        await conn.delete_queue(to_pika)
        await conn.delete_queue(from_pika)


async def test_blocked_pauses_publishers(rabbit_node: Cluster) -> None:
    node = rabbit_node.nodes[0]
    queue = name("blocked")
    async with connect(rabbit_node.urls()) as conn:
        await conn.declare_queue(queue, durable=False)
        await conn.publish("", queue, b"before")
        node.ctl("set_vm_memory_high_watermark", "0.0000001")
        done = trio.Event()
        try:
            with trio.fail_after(30):
                while not conn.blocked:
                    # RabbitMQ sends connection.blocked when it next reads a publish
                    await trio.sleep(0.2)
                    async with trio.open_nursery() as probe:
                        probe.start_soon(_publish_then_set, conn, queue, done)
                        await trio.sleep(0.3)
                        probe.cancel_scope.cancel()
                    if done.is_set():
                        done = trio.Event()
            assert conn.blocked
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_publish_then_set, conn, queue, done)
                await trio.sleep(1.0)
                assert not done.is_set(), "a publish went through while blocked"
                node.ctl("set_vm_memory_high_watermark", "0.4")
                with trio.fail_after(30):
                    await done.wait()
            assert not conn.blocked
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
        await conn.delete_queue(queue)


async def _publish_then_set(conn: UpstreamConnection, queue: str, done: trio.Event) -> None:
    await conn.publish("", queue, b"while blocked")
    done.set()

