"""The publisher and caller identity WAMP peers see comes from the broker alone: headers
named like the broker's own (`x-wamp-publisher*`, `x-wamp-caller*`, `x-wamp-session`) set by
an AMQP (pika), STOMP (stomp.py) or MQTT 5 (paho) publisher are never shown to an autobahn
subscriber or callee as publisher or caller details, while a WAMP session's disclosed
identity still is. The broker discloses every WAMP publisher and caller here
(`wamp_disclose`), so a forged header would show if it were believed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from ab_client import join, leave
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from ws_harness import Gateway, in_asyncio, in_thread, poll, running_gateway

from gateway.server.websocket import WebSocketOptions

FORGED = {"x-wamp-publisher": 4242, "x-wamp-publisher-authid": "admin",
          "x-wamp-publisher-authrole": "administrator", "x-wamp-session": 4242,
          "x-wamp-caller": 4242, "x-wamp-caller-authid": "admin",
          "x-wamp-caller-authrole": "administrator"}
TOPIC = "com.identity.news"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path, WebSocketOptions(wamp_disclose=True)) as g:
        yield g


def _details(d: Any) -> dict[str, Any]:
    return {"publisher": d.publisher, "publisher_authid": d.publisher_authid,
            "publisher_authrole": d.publisher_authrole}


def _forge_over_amqp(gw: Gateway) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(gw.amqp_url))
    try:
        conn.channel().basic_publish("amq.topic", TOPIC, b"from pika", pika.BasicProperties(
            content_type="text/plain", headers=FORGED))
    finally:
        conn.close()


def _forge_over_stomp(gw: Gateway) -> None:
    conn = stomp.Connection([("127.0.0.1", gw.ports["stomp"])])
    conn.connect("guest", "guest", wait=True)
    try:
        conn.send(f"/topic/{TOPIC}", "from stomp", content_type="text/plain",
                  headers={k: str(v) for k, v in FORGED.items()}, receipt="r")
    finally:
        conn.disconnect()


def _forge_over_mqtt(gw: Gateway) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set("guest", "guest")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", gw.ports["mqtt"])
    client.loop_start()
    try:
        assert connected.wait(10)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [(k, str(v)) for k, v in FORGED.items()]
        props.ContentType = "text/plain"
        client.publish(TOPIC.replace(".", "/"), b"from mqtt", qos=1,
                       properties=props).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("forge", [_forge_over_amqp, _forge_over_stomp, _forge_over_mqtt])
async def test_forged_publisher_headers_are_not_shown_to_subscribers(gw: Gateway,
                                                                    forge: Any) -> None:
    subscribed = threading.Event()
    done = threading.Event()
    result: list[Any] = []

    async def subscriber() -> None:
        s = await join(gw.ws_url)
        got: list[tuple[Any, dict[str, Any]]] = []
        await s.subscribe(lambda x, details: got.append((x, _details(details))), TOPIC,
                          options=SubscribeOptions(details_arg="details"))
        subscribed.set()
        for _ in range(1000):  # the forged message, then a WAMP publisher's
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        result.extend(got)
        await leave(s)
        done.set()

    async def wamp_publisher() -> int:
        p = await join(gw.ws_url, authmethods=["ticket"], authid="guest", secret="guest")
        await p.publish(TOPIC, "from wamp", options=PublishOptions(acknowledge=True))
        sid = int(p._session_id)
        await leave(p)
        return sid

    async def main() -> int:
        task = asyncio.ensure_future(subscriber())
        while not subscribed.is_set():
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, forge, gw)
        sid = await wamp_publisher()
        await task
        return sid

    sid = await in_asyncio(main, timeout=30)
    forged, honest = result
    assert forged[1] == {"publisher": None, "publisher_authid": None,
                         "publisher_authrole": None}
    assert forged[0].startswith("from ")
    assert honest == ("from wamp", {"publisher": sid, "publisher_authid": "guest",
                                    "publisher_authrole": "administrator"})


async def test_forged_caller_headers_are_not_shown_to_callees(gw: Gateway) -> None:
    """An AMQP RPC request to a WAMP callee, carrying the caller headers of an admin."""
    registered = threading.Event()
    stop = threading.Event()
    proc = "com.identity.whoami"

    async def callee_and_caller() -> tuple[Any, int]:
        callee = await join(gw.ws_url)

        def whoami(details: Any) -> list[Any]:
            return [details.caller, details.caller_authid, details.caller_authrole]

        await callee.register(whoami, proc, options=RegisterOptions(details_arg="details"))
        registered.set()
        caller = await join(gw.ws_url, authmethods=["ticket"], authid="guest", secret="guest")
        honest = await caller.call(proc)
        sid = int(caller._session_id)
        await leave(caller)
        while not stop.is_set():
            await asyncio.sleep(0.01)
        await leave(callee)
        return honest, sid

    def amqp_rpc() -> Any:
        poll(registered.is_set)
        conn = pika.BlockingConnection(pika.URLParameters(gw.amqp_url))
        try:
            ch = conn.channel()
            reply_to = ch.queue_declare("", exclusive=True).method.queue
            ch.basic_publish("", proc, b"", pika.BasicProperties(
                reply_to=reply_to, correlation_id="c1", headers=FORGED))
            body = None
            for _ in range(1000):
                method, props, body = ch.basic_get(reply_to, auto_ack=True)
                if method is not None:
                    assert props.correlation_id == "c1"
                    break
                conn.sleep(0.01)
            return json.loads(body) if body is not None else None
        finally:
            conn.close()
            stop.set()

    async def both() -> tuple[Any, Any]:
        import trio

        honest: list[Any] = []
        async with trio.open_nursery() as nursery:
            async def wamp_side() -> None:
                honest.append(await in_asyncio(callee_and_caller, timeout=30))

            nursery.start_soon(wamp_side)
            forged = await in_thread(amqp_rpc, timeout=30)
        return forged, honest[0]

    forged, (honest, sid) = await both()
    assert forged == [None, None, None]
    assert honest == [sid, "guest", "administrator"]
