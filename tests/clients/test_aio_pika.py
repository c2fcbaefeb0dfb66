"""aio-pika (asyncio, over aiormq/pamqp) against the broker.

The suite runs pytest-trio in trio mode, which only takes over `async def` tests; these are
plain functions that run their asyncio code with `asyncio.run`, each under an overall timeout.
"""

from __future__ import annotations

import asyncio

import aio_pika

TIMEOUT = 30.0


def run(coroutine) -> None:
    asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def test_round_trip_publish_consume_ack(broker, unique):
    async def scenario() -> None:
        connection = await aio_pika.connect_robust(broker.url, timeout=10)
        async with connection:
            channel = await connection.channel()  # publisher confirms are on by default
            queue = await channel.declare_queue(unique("aio"), durable=True)
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        b"hello from asyncio",
                        content_type="text/plain",
                        correlation_id="corr-1",
                        headers={"attempt": 1},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue.name,
                )
                async with queue.iterator() as messages:
                    async for message in messages:
                        async with message.process():  # acks on leaving the block
                            assert message.body == b"hello from asyncio"
                            assert message.content_type == "text/plain"
                            assert message.correlation_id == "corr-1"
                            assert message.headers == {"attempt": 1}
                            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                            assert message.redelivered is False
                        break
                declared = await channel.declare_queue(queue.name, passive=True)
                assert declared.declaration_result.message_count == 0
            finally:
                await queue.delete(if_unused=False, if_empty=False)

    run(scenario())


def test_topic_exchange_and_basic_get(broker, unique):
    async def scenario() -> None:
        connection = await aio_pika.connect(broker.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                unique("aio-topic"), aio_pika.ExchangeType.TOPIC
            )
            queue = await channel.declare_queue(exclusive=True)  # server-named
            assert queue.name.startswith("amq.gen-")
            await queue.bind(exchange, routing_key="sensor.*.temperature")
            try:
                for key in ("sensor.kitchen.temperature", "sensor.kitchen.humidity"):
                    await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
                message = await queue.get(timeout=10)
                await message.ack()
                assert message.body == b"sensor.kitchen.temperature"
                assert message.routing_key == "sensor.kitchen.temperature"
                assert await queue.get(fail=False, timeout=10) is None
            finally:
                await exchange.delete()

    run(scenario())
