"""amqtt (an asyncio MQTT 3.1.1 client) against the running broker. The suite runs in trio
mode, so each test drives its own asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from amqtt.client import MQTTClient
from mqtt_clientkit import TIMEOUT


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 4 * TIMEOUT))


async def _client(port: int, client_id: str, clean: bool = True) -> MQTTClient:
    client = MQTTClient(client_id=client_id, config={"auto_reconnect": False})
    await client.connect(f"mqtt://127.0.0.1:{port}/", cleansession=clean)
    return client


async def _message(client: MQTTClient) -> Any:
    msg = await client.deliver_message(timeout_duration=TIMEOUT)
    assert msg is not None, f"no message within {TIMEOUT} s"
    return msg


def test_amqtt_qos_0_1_2_and_retained(broker: Any, unique: Callable[[str], str]) -> None:
    port = broker.ports["mqtt"]
    topic = unique("amqtt") + "/dev/1"

    async def scenario() -> None:
        pub = await _client(port, unique("pub"))
        await pub.publish(topic + "/state", b"online", qos=1, retain=True)
        sub = await _client(port, unique("sub"))
        granted = await sub.subscribe([(topic.rsplit("/", 1)[0] + "/#", 2)])
        assert granted == [2]
        retained = await _message(sub)
        assert (retained.topic, retained.data, retained.retain) == (
            topic + "/state", b"online", True)
        for qos in (0, 1, 2):
            await pub.publish(topic, f"q{qos}".encode(), qos=qos)
        got = [await _message(sub) for _ in range(3)]
        assert [(m.data, m.qos) for m in got] == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
        await pub.publish(topic + "/state", b"", qos=1, retain=True)  # clear
        await _message(sub)
        await sub.disconnect()
        await pub.disconnect()

    run(scenario())


def test_amqtt_persistent_session(broker: Any, unique: Callable[[str], str]) -> None:
    port = broker.ports["mqtt"]
    topic, cid = unique("amqtt-offline"), unique("amqtt-persistent")

    async def scenario() -> None:
        sub = await _client(port, cid, clean=False)
        await sub.subscribe([(topic, 1)])
        await sub.disconnect()
        pub = await _client(port, unique("pub"))
        await pub.publish(topic, b"queued", qos=1)
        await pub.disconnect()
        back = await _client(port, cid, clean=False)
        msg = await _message(back)
        assert (msg.topic, msg.data) == (topic, b"queued")
        await back.disconnect()

    run(scenario())
