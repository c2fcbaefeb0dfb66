"""MQTT over WebSocket with paho-mqtt's `transport="websockets"` (subprotocol `mqtt`,
binary messages), MQTT 3.1.1 and 5.0, meeting a WAMP subscriber and pika on the core."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trio
from ab_client import join, leave
from autobahn.wamp.types import PublishOptions
from ws_harness import Gateway, in_asyncio, in_thread, poll, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path) as g:
        yield g


def paho_client(gw: Gateway, version: mqtt.MQTTProtocolVersion) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ws-{version.name}",
                    protocol=version, transport="websockets")
    c.ws_set_options(path="/ws")
    c.username_pw_set("guest", "guest")
    return c


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5])
async def test_paho_over_websocket_publish_subscribe(gw: Gateway,
                                                     version: mqtt.MQTTProtocolVersion
                                                     ) -> None:
    def run() -> list[Any]:
        c = paho_client(gw, version)
        got: list[Any] = []
        subscribed = threading.Event()
        c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload, msg.qos))
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", gw.ports["ws"])
        c.loop_start()
        try:
            c.subscribe("ws/+/temp", qos=1)
            subscribed.wait(5)
            c.publish("ws/room1/temp", b"21.5", qos=1).wait_for_publish(5)
            poll(lambda: got)
        finally:
            c.disconnect()
            c.loop_stop()
        return got

    assert await in_thread(run) == [("ws/room1/temp", b"21.5", 1)]


async def test_mqtt_over_websocket_meets_wamp_both_ways(gw: Gateway) -> None:
    subscribed = threading.Event()
    published = threading.Event()

    def mqtt_side() -> list[Any]:
        c = paho_client(gw, mqtt.MQTTv311)
        got: list[Any] = []
        c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload))
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", gw.ports["ws"])
        c.loop_start()
        try:
            c.subscribe("com/example/temp", qos=0)
            published.wait(10)
            c.publish("com/example/back", b"from mqtt", qos=1).wait_for_publish(5)
            poll(lambda: got)
        finally:
            c.disconnect()
            c.loop_stop()
        return got

    async def wamp_side() -> Any:
        s = await join(gw.ws_url)
        events: asyncio.Queue[Any] = asyncio.Queue()
        await s.subscribe(lambda *a: events.put_nowait(a), "com.example.back")
        while not subscribed.is_set():
            await asyncio.sleep(0.01)
        await s.publish("com.example.temp", "hot", options=PublishOptions(acknowledge=True))
        published.set()
        got = await asyncio.wait_for(events.get(), 10)
        await leave(s)
        return got

    results: dict[str, Any] = {}

    async def run(name: str, fn: Any, *args: Any) -> None:
        results[name] = await fn(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "mqtt", in_thread, mqtt_side)
        nursery.start_soon(run, "wamp", in_asyncio, wamp_side)
    assert results["mqtt"] == [("com/example/temp", b"hot")]
    assert results["wamp"] == ("from mqtt",)


async def test_web_mqtt_endpoint(tmp_path: Path) -> None:
    from gateway.server.websocket import WEB_MQTT

    async with running_gateway(tmp_path, WEB_MQTT) as gw:
        def run() -> list[Any]:
            c = paho_client(gw, mqtt.MQTTv311)
            got: list[Any] = []
            subscribed = threading.Event()
            c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload))
            c.on_subscribe = lambda *a: subscribed.set()
            c.connect("127.0.0.1", gw.ports["ws"])
            c.loop_start()
            try:
                c.subscribe("web/mqtt", qos=0)
                subscribed.wait(5)
                c.publish("web/mqtt", b"ok", qos=0)
                poll(lambda: got)
            finally:
                c.disconnect()
                c.loop_stop()
            return got

        assert await in_thread(run) == [("web/mqtt", b"ok")]
