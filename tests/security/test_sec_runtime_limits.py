"""Runtime limits as RabbitMQ has them, set through `gateway ctl` and the management API and
enforced on every protocol with real clients: a vhost's max-connections (pika, paho-mqtt
over TCP and over WebSocket, stomp.py, autobahn over WebSocket), a user's max-connections
(the same clients), a user's max-channels (pika: connection.close 530 with RabbitMQ's
text), a vhost's max-queues on every path that makes a queue (AMQP, MQTT, STOMP, WAMP, the
HTTP API); and the limits survive a restart and travel with the definitions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import stomp
from sec_clients import TIMEOUT, JoinFailed, join, leave, ws_url

from gateway.cli.main import main

PW = "lim-pw"


def api(broker: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                        auth=("guest", "guest"), timeout=TIMEOUT)


def ctl(broker: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["ctl", "--host", "127.0.0.1", "--port", str(broker.ports["http"]),
                 "--username", "guest", "--password", "guest", *args])
    out, err = capsys.readouterr()
    return code, out + err


def setup_tenant(broker: Any, vhost: str, *users: str) -> None:
    with api(broker) as a:
        assert a.put(f"/vhosts/{quote(vhost, safe='')}", json={}).status_code in (201, 204)
        for user in users:
            assert a.put(f"/users/{user}", json={"password": PW, "tags": ""}
                         ).status_code in (201, 204)
            assert a.put(f"/permissions/{quote(vhost, safe='')}/{user}", json={
                "configure": ".*", "write": ".*", "read": ".*"}).status_code in (201, 204)


# ---------------------------------------------------------------- one login per protocol


def amqp_refusal(broker: Any, user: str, vhost: str) -> str | None:
    """None if the connection opens, else the broker's reply text."""
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], vhost, pika.PlainCredentials(user, PW),
        connection_attempts=1, socket_timeout=TIMEOUT)
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.ProbableAccessDeniedError as exc:
        return str(exc)
    return None


def mqtt_connack(broker: Any, user: str, vhost: str, *, websocket: bool = False) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"lim-{time.monotonic_ns()}", protocol=mqtt.MQTTv5,
                         transport="websockets" if websocket else "tcp")
    if websocket:
        client.ws_set_options(path="/ws")
    client.username_pw_set(f"{vhost}:{user}", PW)
    got: list[int] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        got.append(int(getattr(rc, "value", rc)))
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.ports["http" if websocket else "mqtt"])
    client.loop_start()
    try:
        assert done.wait(TIMEOUT), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def stomp_refusal(broker: Any, user: str, vhost: str) -> str | None:
    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])], vhost=vhost,
                              auto_content_length=False)
    errors: list[str] = []

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_error(self, frame: Any) -> None:
            errors.append(f"{frame.headers.get('message', '')}: {frame.body}")

    conn.set_listener("errors", Listener())
    try:
        conn.connect(user, PW, wait=True)
    except stomp.exception.ConnectFailedException:
        return errors[0] if errors else "refused"
    conn.disconnect()
    return None


def wamp_refusal(broker: Any, user: str, vhost: str) -> str | None:
    async def main() -> str | None:
        try:
            s = await join(ws_url(broker), vhost, authmethods=["ticket"], authid=user,
                           secret=PW)
        except JoinFailed as exc:
            return f"{exc.reason}: {exc}"
        await leave(s)
        return None

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def refusals(broker: Any, user: str, vhost: str) -> dict[str, Any]:
    return {"amqp": amqp_refusal(broker, user, vhost),
            "mqtt": mqtt_connack(broker, user, vhost),
            "mqtt-ws": mqtt_connack(broker, user, vhost, websocket=True),
            "stomp": stomp_refusal(broker, user, vhost),
            "wamp": wamp_refusal(broker, user, vhost)}


@contextmanager
def held_amqp(broker: Any, user: str, vhost: str, count: int = 1
              ) -> Iterator[list[pika.BlockingConnection]]:
    conns = [pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], vhost, pika.PlainCredentials(user, PW)))
        for _ in range(count)]
    try:
        yield conns
    finally:
        for conn in conns:
            if conn.is_open:
                conn.close()


def assert_all_refused(got: dict[str, Any], text: str) -> None:
    assert got["amqp"] is not None and f"NOT_ALLOWED - {text}" in got["amqp"], got
    assert got["mqtt"] == 0x97 and got["mqtt-ws"] == 0x97, got  # quota exceeded
    assert got["stomp"] is not None and text in got["stomp"], got
    assert got["wamp"] is not None and got["wamp"].startswith("wamp.error.not_authorized")
    assert text in got["wamp"], got


def assert_none_refused(got: dict[str, Any]) -> None:
    assert got == {"amqp": None, "mqtt": 0, "mqtt-ws": 0, "stomp": None, "wamp": None}


# ---------------------------------------------------------------- connections


def test_vhost_max_connections_from_ctl_hold_on_every_protocol(
        fresh_broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    broker = fresh_broker
    setup_tenant(broker, "tenant-a", "ann")
    setup_tenant(broker, "tenant-b", "bea")
    code, out = ctl(broker, capsys, "-p", "tenant-a", "set_vhost_limits",
                    '{"max-connections": 1}')
    assert code == 0, out
    assert 'Setting vhost limits to "{"max-connections": 1}" for vhost "tenant-a"' in out
    code, out = ctl(broker, capsys, "list_vhost_limits", "-p", "tenant-a")
    assert code == 0 and out.splitlines()[-1] == '{"max-connections":1}', out
    with held_amqp(broker, "ann", "tenant-a"):
        assert_all_refused(refusals(broker, "ann", "tenant-a"),
                           "access to vhost 'tenant-a' refused for user 'ann': connection "
                           "limit (1) is reached")
        assert_none_refused(refusals(broker, "bea", "tenant-b"))  # another vhost: free
    assert_none_refused(refusals(broker, "ann", "tenant-a"))  # the held one went: room
    # 0 allows none; negative is no limit
    assert ctl(broker, capsys, "set_vhost_limits", "-p", "tenant-a",
               '{"max-connections": 0}')[0] == 0
    assert amqp_refusal(broker, "ann", "tenant-a") is not None
    assert ctl(broker, capsys, "set_vhost_limits", "-p", "tenant-a",
               '{"max-connections": -1}')[0] == 0
    with held_amqp(broker, "ann", "tenant-a", 3):
        assert amqp_refusal(broker, "ann", "tenant-a") is None
    assert ctl(broker, capsys, "clear_vhost_limits", "-p", "tenant-a")[0] == 0
    assert ctl(broker, capsys, "list_vhost_limits", "-p", "tenant-a")[1].splitlines()[-1] \
        == "{}"
    code, out = ctl(broker, capsys, "set_vhost_limits", '{"max-bananas": 1}')
    assert code != 0 and "max-bananas" in out


def test_user_max_connections_from_the_api_hold_on_every_protocol(fresh_broker: Any) -> None:
    broker = fresh_broker
    setup_tenant(broker, "/", "carl", "dora")
    with api(broker) as a:
        assert a.put("/user-limits/carl/max-connections", json={"value": 1}
                     ).status_code == 201
        assert a.put("/user-limits/carl/max-connections", json={"value": 1}
                     ).status_code == 204
        assert a.get("/user-limits/carl").json() == [
            {"user": "carl", "value": {"max-connections": 1}}]
        assert a.put("/user-limits/carl/max-connections", json={"value": "ten"}
                     ).status_code == 400
        assert a.put("/user-limits/carl/max-bananas", json={"value": 1}).status_code == 400
        assert a.put("/user-limits/nobody/max-channels", json={"value": 1}
                     ).status_code == 404
    with held_amqp(broker, "carl", "/"):
        assert_all_refused(refusals(broker, "carl", "/"),
                           "connection refused for user 'carl': user connection limit (1) "
                           "is reached")
        assert_none_refused(refusals(broker, "dora", "/"))  # another user: free
    with api(broker) as a:
        assert a.delete("/user-limits/carl/max-connections").status_code == 204
        assert a.get("/user-limits/carl").json() == []
    with held_amqp(broker, "carl", "/", 2):
        assert amqp_refusal(broker, "carl", "/") is None
    # a user reads their own limits, not another's
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                      auth=("dora", PW), timeout=TIMEOUT) as dora:
        api(broker).put("/users/dora", json={"password": PW, "tags": "management"})
        assert dora.get("/user-limits/dora").status_code == 200
        assert dora.get("/user-limits/carl").status_code == 401
        assert dora.put("/user-limits/dora/max-channels", json={"value": 99}
                        ).status_code == 401


# ---------------------------------------------------------------- channels


def test_user_max_channels_closes_the_connection_530_across_connections(
        fresh_broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    broker = fresh_broker
    setup_tenant(broker, "/", "eve")
    code, out = ctl(broker, capsys, "set_user_limits", "eve", '{"max-channels": 2}')
    assert code == 0, out
    code, out = ctl(broker, capsys, "set_user_limits", "eve", '{"max-connections": 5}')
    assert code == 0, out  # added to the channel limit, as RabbitMQ's set_user_limits
    code, out = ctl(broker, capsys, "list_user_limits", "--user", "eve")
    assert json.loads(out.splitlines()[-1]) == {"max-channels": 2, "max-connections": 5}
    code, out = ctl(broker, capsys, "-q", "list_user_limits", "--global")
    assert ["eve", '{"max-channels":2,"max-connections":5}'] in [
        line.split("\t") for line in out.splitlines()]
    with held_amqp(broker, "eve", "/", 2) as (first, second):
        first.channel()
        second.channel()  # two channels over two connections: the limit
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
            second.channel()
        assert refused.value.reply_code == 530
        assert refused.value.reply_text == (
            "NOT_ALLOWED - number of channels opened for user 'eve' has reached the "
            "maximum allowed user limit of 2")
        assert first.is_open
    with held_amqp(broker, "eve", "/") as (conn,):
        conn.channel()
        conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            conn.channel()
    assert ctl(broker, capsys, "clear_user_limits", "eve", "max-channels")[0] == 0
    with held_amqp(broker, "eve", "/") as (conn,):
        for _ in range(4):
            conn.channel()
    assert ctl(broker, capsys, "clear_user_limits", "eve", "all")[0] == 0
    assert ctl(broker, capsys, "list_user_limits", "--user", "eve")[1].splitlines()[-1] \
        == "{}"


# ---------------------------------------------------------------- queues


def _stomp_subscribe_error(broker: Any, destination: str) -> str:
    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])],
                              auto_content_length=False)
    errors: list[str] = []
    got = threading.Event()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_error(self, frame: Any) -> None:
            errors.append(f"{frame.headers.get('message', '')}: {frame.body}")
            got.set()

    conn.set_listener("errors", Listener())
    conn.connect("guest", "guest", wait=True)
    conn.subscribe(destination, id="1", ack="auto", headers={"receipt": "r1"})
    got.wait(TIMEOUT)
    if conn.is_connected():
        conn.disconnect()
    return errors[0] if errors else ""


def _mqtt_suback(broker: Any, topic: str) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lim-sub",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set("guest", "guest")
    connected, subscribed = threading.Event(), threading.Event()
    codes: list[int] = []
    client.on_connect = lambda *_: connected.set()

    def on_subscribe(_c: Any, _u: Any, _mid: Any, rcs: Any, _p: Any) -> None:
        codes.extend(int(getattr(rc, "value", rc)) for rc in rcs)
        subscribed.set()

    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", broker.ports["mqtt"])
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT)
        client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT), "no SUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def _wamp_register_error(broker: Any, procedure: str) -> str:
    async def main() -> str:
        s = await join(ws_url(broker), "/", authmethods=["ticket"], authid="guest",
                       secret="guest")
        try:
            await s.register(lambda: None, procedure)
        except Exception as exc:  # noqa: BLE001 - autobahn's ApplicationError
            return str(getattr(exc, "error", exc))
        finally:
            await leave(s)
        return ""

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_vhost_max_queues_holds_on_every_path_that_makes_a_queue(
        fresh_broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    broker = fresh_broker
    with api(broker) as a:
        assert a.put("/vhost-limits/%2F/max-queues", json={"value": 1}).status_code == 201
        assert a.get("/vhost-limits").json() == [{"vhost": "/", "value": {"max-queues": 1}}]
        assert a.get("/vhost-limits/%2F").json() == [
            {"vhost": "/", "value": {"max-queues": 1}}]
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("only-one")
    ch.queue_declare("only-one")  # redeclaring is no new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.queue_declare("two")
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == ("PRECONDITION_FAILED - cannot declare queue 'two': "
                                        "queue limit in vhost '/' (1) is reached")
    conn.close()
    with api(broker) as a:
        put = a.put("/queues/%2F/by-api", json={"durable": True})
        assert put.status_code == 400 and "queue limit in vhost '/' (1)" in put.text, put.text
    assert _mqtt_suback(broker, "lim/#") >= 0x80  # its session queue is refused
    assert "queue limit" in _stomp_subscribe_error(broker, "/queue/by-stomp")
    assert _wamp_register_error(broker, "com.lim.proc") != ""
    with api(broker) as a:
        names = {q["name"] for q in a.get("/queues/%2F").json()}
        assert names == {"only-one"}, names
        assert a.delete("/vhost-limits/%2F/max-queues").status_code == 204
        assert a.get("/vhost-limits").json() == []
        assert a.put("/queues/%2F/by-api", json={"durable": True}).status_code == 201


# ---------------------------------------------------------------- persistence, definitions


def test_limits_survive_a_restart_and_travel_with_the_definitions(
        fresh_broker: Any, capsys: pytest.CaptureFixture[str],
        configured_broker: Callable[[str], Any]) -> None:
    broker = fresh_broker
    setup_tenant(broker, "tenant-r", "rita")
    assert ctl(broker, capsys, "-p", "tenant-r", "set_vhost_limits",
               '{"max-connections": 1, "max-queues": 7}')[0] == 0
    assert ctl(broker, capsys, "set_user_limits", "rita", '{"max-channels": 3}')[0] == 0
    broker.restart(kill=False)
    with api(broker) as a:
        assert a.get("/vhost-limits/tenant-r").json() == [
            {"vhost": "tenant-r", "value": {"max-connections": 1, "max-queues": 7}}]
        assert a.get("/user-limits").json() == [{"user": "rita",
                                                "value": {"max-channels": 3}}]
        exported = a.get("/definitions").json()
    with held_amqp(broker, "rita", "tenant-r"):  # and still enforced
        assert amqp_refusal(broker, "rita", "tenant-r") is not None
    vhosts = {v["name"]: v for v in exported["vhosts"]}
    assert vhosts["tenant-r"]["limits"] == {"max-connections": 1, "max-queues": 7}
    users = {u["name"]: u for u in exported["users"]}
    assert users["rita"]["limits"] == {"max-channels": 3}

    other = configured_broker("")
    with api(other) as a:
        assert a.post("/definitions", json=exported).status_code in (200, 201, 204)
        assert a.get("/vhost-limits/tenant-r").json()[0]["value"] == {
            "max-connections": 1, "max-queues": 7}
        # RabbitMQ's older form: vhost limits as a runtime parameter
        older = {"vhosts": [{"name": "old"}], "parameters": [
            {"vhost": "old", "component": "vhost-limits", "name": "limits",
             "value": {"max-queues": 2}}]}
        assert a.post("/definitions", json=older).status_code in (200, 201, 204)
        assert a.get("/vhost-limits/old").json() == [{"vhost": "old",
                                                     "value": {"max-queues": 2}}]
        # a vhost deleted takes its limits with it
        assert a.delete("/vhosts/old").status_code == 204
        assert all(r["vhost"] != "old" for r in a.get("/vhost-limits").json())
