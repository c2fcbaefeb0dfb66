"""kill -9 of the RabbitMQ node the upstream client is connected to, in a 3-node cluster,
under publish and consume load on a quorum queue: the client reconnects to another node,
declares again, resubscribes, and every confirmed message is consumed (duplicates allowed,
counted; none lost)."""

from __future__ import annotations

import secrets
from collections import Counter

import trio

from gateway.upstream import connect

from .rabbit import Cluster

TOTAL = 400
KILL_AFTER = 120  # confirmed messages before the kill


async def test_kill_9_of_the_connected_node_loses_no_confirmed_message(
    rabbit_cluster: Cluster,
) -> None:
    cluster = rabbit_cluster
    queue = f"gw.failover.{secrets.token_hex(4)}"
    confirmed: set[int] = set()
    received: Counter[int] = Counter()
    reconnects: list[int] = []
    killed_port = 0

    async with connect(cluster.urls(), heartbeat=5, connect_timeout=3,
                       on_reconnect=reconnects.append) as conn:
        first = conn.url
        assert first is not None
        await conn.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        consumer = await conn.consume(queue, prefetch=20)
        enough, killed = trio.Event(), trio.Event()

        async def publisher() -> None:
            for i in range(TOTAL):
                # at-least-once: a publish cut by the kill is sent again on the next node
                await conn.publish("", queue, str(i).encode(), retry=True)
                confirmed.add(i)
                if len(confirmed) == KILL_AFTER:
                    enough.set()
                    await killed.wait()  # the rest is published across the failover

        async def consume() -> None:
            async for message in consumer:
                received[int(message.body)] += 1
                await message.ack()  # False for one from the dead connection: redelivered
                if confirmed and len(received) == TOTAL:
                    return

        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                nursery.start_soon(consume)
                await enough.wait()
                node = next(n for n in cluster.nodes if n.amqp_port == first.port)
                killed_port = node.amqp_port
                node.kill()
                killed.set()
        assert conn.url is not None and conn.url.port != killed_port
        assert reconnects, "the client did not report a reconnect"
        await conn.delete_queue(queue)

    lost = confirmed - set(received)
    duplicates = sum(count - 1 for count in received.values())
    print(f"failover: {len(confirmed)} confirmed, {len(received)} distinct received, "
          f"{duplicates} duplicates, {len(reconnects)} reconnect(s)")
    assert len(confirmed) == TOTAL
    assert not lost, f"confirmed and never consumed: {sorted(lost)[:20]}"
    # the node comes back and rejoins, so later tests find three nodes again
    node = next(n for n in cluster.nodes if n.amqp_port == killed_port)
    node.start()
    node.wait()
