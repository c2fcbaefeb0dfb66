"""A hostile tenant, tried on every path with the real clients: pika (AMQP), paho-mqtt (3.1.1
and 5), stomp.py, autobahn (WAMP over WebSocket) and httpx (management API).

The users, as RabbitMQ operators set them up (each name gets a random suffix, so the module
shares the session's broker with other tests):
- `admin`: the fixture's guest, an administrator, with every permission on both vhosts;
- `alice`: vhost tenant-a only; may configure names `^alice\\..*` (and her MQTT session
  queues `mqtt-subscription-alice-*`), write and read those and `amq.topic`; topic
  permission `^alice\\.` (write and read) on amq.topic;
- `bob`: every permission on tenant-b, nothing on tenant-a;
- `mon`: tagged monitoring, no permissions at all (the others are tagged management).
MQTT session and shared-subscription attacks run in a third vhost between `carol` and
`dave` (every permission) and `erin` (may only make her own MQTT session queues).

Each attack is asserted refused, in that protocol's own form, AND to have left nothing
behind: no queue, no binding, no message delivered anywhere.
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as MqttProperties
from sec_clients import TIMEOUT, JoinFailed, StompPeer, join, leave, ws_url

PASSWORD = "h0stile-pw"
QUIET = 0.5  # seconds a client is given to show that nothing arrives


@dataclass
class Tenants:
    broker: Any
    api: httpx.Client  # as the administrator
    tag: str
    a: str  # vhost tenant-a
    b: str  # vhost tenant-b
    shared: str  # vhost of carol, dave and erin
    alice: str
    bob: str
    mon: str
    carol: str
    dave: str
    erin: str

    def queues(self, vhost: str) -> set[str]:
        r = self.api.get(f"/queues/{quote(vhost, safe='')}")
        assert r.status_code == 200, r.text
        return {q["name"] for q in r.json()}

    def bindings(self, vhost: str) -> list[dict[str, Any]]:
        r = self.api.get(f"/bindings/{quote(vhost, safe='')}")
        assert r.status_code == 200, r.text
        return list(r.json())

    def as_user(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.broker.ports['http']}/api",
                            auth=(user, PASSWORD), timeout=TIMEOUT)


@pytest.fixture(scope="module")
def t(broker: Any) -> Iterator[Tenants]:
    tag = secrets.token_hex(3)
    api = httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                       auth=(broker.user, broker.password), timeout=TIMEOUT)
    names = {k: f"{k}-{tag}" for k in ("alice", "bob", "mon", "carol", "dave", "erin")}
    ten = Tenants(broker, api, tag, f"tenant-a-{tag}", f"tenant-b-{tag}", f"shared-{tag}",
                  **names)

    def put(path: str, body: dict[str, Any]) -> None:
        r = api.put(path, json=body)
        assert r.status_code in (201, 204), (path, r.status_code, r.text)

    for vhost in (ten.a, ten.b, ten.shared):
        put(f"/vhosts/{vhost}", {})
        put(f"/permissions/{vhost}/{broker.user}",
            {"configure": ".*", "write": ".*", "read": ".*"})
    for name, tags in names.items():
        put(f"/users/{tags}", {"password": PASSWORD,
                               "tags": "monitoring" if name == "mon" else "management"})
    own = r"alice\..*|mqtt-subscription-alice-.*"
    put(f"/permissions/{ten.a}/{ten.alice}", {
        "configure": f"^({own})$", "write": rf"^({own}|amq\.topic)$",
        "read": rf"^({own}|amq\.topic)$"})
    put(f"/topic-permissions/{ten.a}/{ten.alice}", {
        "exchange": "amq.topic", "write": r"^alice\.", "read": r"^alice\."})
    put(f"/permissions/{ten.b}/{ten.bob}", {"configure": ".*", "write": ".*", "read": ".*"})
    for user in (ten.carol, ten.dave):
        put(f"/permissions/{ten.shared}/{user}",
            {"configure": ".*", "write": ".*", "read": ".*"})
    erin_own = r"^(mqtt-subscription-erin-.*|amq\.topic)$"
    put(f"/permissions/{ten.shared}/{ten.erin}",
        {"configure": erin_own, "write": erin_own, "read": erin_own})
    yield ten
    for name in names.values():
        api.delete(f"/users/{name}")
    for vhost in (ten.a, ten.b, ten.shared):
        api.delete(f"/vhosts/{vhost}")
    api.close()


# -- client helpers ------------------------------------------------------------------------


def amqp(t: Tenants, user: str, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=t.broker.ports["amqp"], virtual_host=vhost,
        credentials=pika.PlainCredentials(user, PASSWORD), connection_attempts=1,
        socket_timeout=TIMEOUT))


def admin_amqp(t: Tenants, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=t.broker.ports["amqp"], virtual_host=vhost,
        credentials=pika.PlainCredentials(t.broker.user, t.broker.password)))


class Watcher:
    """The administrator's view of amq.topic in a vhost: a queue bound with `#`."""

    def __init__(self, t: Tenants, vhost: str) -> None:
        self.conn = admin_amqp(t, vhost)
        self.ch = self.conn.channel()
        self.queue = f"watch-{secrets.token_hex(4)}"
        self.ch.queue_declare(self.queue, exclusive=True)
        self.ch.queue_bind(self.queue, "amq.topic", "#")

    def publish(self, routing_key: str, body: bytes) -> None:
        self.ch.basic_publish("amq.topic", routing_key, body,
                              pika.BasicProperties(delivery_mode=2))

    def keys(self) -> list[str]:
        """Routing keys of everything that reached amq.topic so far (drained)."""
        self.conn.sleep(QUIET)
        keys = []
        while True:
            method, _props, _body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return keys
            keys.append(method.routing_key)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def watch_a(t: Tenants) -> Iterator[Watcher]:
    w = Watcher(t, t.a)
    yield w
    w.close()


class Paho:
    """A paho-mqtt client; `events` gets ("connack", (rc, session_present)), ("suback",
    codes), ("puback", rc), ("message", (topic, payload)), ("disconnect", rc)."""

    def __init__(self, t: Any, user: str, vhost: str, client_id: str, *,
                 version: int = mqtt.MQTTv5, clean: bool = True, expiry: int = 0) -> None:
        kwargs: dict[str, Any] = {}
        if version != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=version, **kwargs)
        self.client.username_pw_set(f"{vhost}:{user}", PASSWORD)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        c = self.client
        c.on_connect = lambda _c, _u, flags, rc, _p: self.events.put(
            ("connack", (int(getattr(rc, "value", rc)), bool(flags.session_present))))
        c.on_subscribe = lambda _c, _u, _m, codes, _p: self.events.put(
            ("suback", [int(getattr(x, "value", x)) for x in codes]))
        c.on_publish = lambda _c, _u, _m, rc, _p: self.events.put(
            ("puback", int(getattr(rc, "value", rc))))
        c.on_message = lambda _c, _u, m: self.events.put(("message", (m.topic, m.payload)))
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self.events.put(
            ("disconnect", int(getattr(rc, "value", rc))))
        props = None
        if version == mqtt.MQTTv5:
            props = MqttProperties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
            c.connect("127.0.0.1", t.broker.ports["mqtt"], clean_start=clean,
                      properties=props)
        else:
            c.connect("127.0.0.1", t.broker.ports["mqtt"])
        c.loop_start()
        self.rc, self.session_present = self.next("connack")

    def next(self, kind: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                got, value = self.events.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no {kind} within {timeout} s") from None
            if got == kind:
                return value
            if got == "disconnect" and kind != "disconnect":
                raise AssertionError(f"disconnected ({value}) waiting for {kind}")

    def messages(self) -> list[tuple[str, bytes]]:
        """What arrived within QUIET seconds."""
        time.sleep(QUIET)
        got = []
        while not self.events.empty():
            kind, value = self.events.get()
            if kind == "message":
                got.append(value)
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stomp(t: Tenants, user: str, vhost: str) -> StompPeer:
    peer = StompPeer(t.broker.ports["stomp"], "1.2", vhost=vhost)
    peer.connect(user, PASSWORD)
    return peer


def wamp(t: Tenants, user: str, realm: str) -> Any:
    return join(ws_url(t.broker), realm, authmethods=["ticket"], authid=user,
                secret=PASSWORD)


async def wamp_error(attempt: Any) -> str:
    try:
        await attempt
    except ApplicationError as exc:
        return str(exc.error)
    return "no error"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 2))


# -- 1. cross-vhost access -----------------------------------------------------------------


def test_cross_vhost_refused_on_every_protocol(t: Tenants) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(t, t.alice, t.b)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(t, t.mon, t.a)

    client = Paho(t, t.alice, t.b, f"alice-{t.tag}-x")
    assert client.rc == 0x87  # not authorized
    client.close()

    peer = StompPeer(t.broker.ports["stomp"], "1.2", vhost=t.b)
    with pytest.raises(Exception):  # noqa: B017 - stomp.py raises on the ERROR frame
        peer.connect(t.alice, PASSWORD)
    assert not peer.conn.is_connected()

    with pytest.raises(JoinFailed):
        run(wamp(t, t.alice, t.b))

    with t.as_user(t.alice) as api:
        assert api.get(f"/queues/{t.b}").status_code == 401
        assert api.put(f"/queues/{t.b}/alice.q", json={}).status_code == 401
        assert api.post(f"/exchanges/{t.b}/amq.topic/publish", json={
            "routing_key": "x", "payload": "x", "payload_encoding": "string",
            "properties": {}}).status_code == 401
    assert "alice.q" not in t.queues(t.b)


# -- 2. names outside the permission patterns ----------------------------------------------


def test_amqp_names_outside_patterns_refused_and_not_created(t: Tenants) -> None:
    conn = amqp(t, t.alice, t.a)
    try:
        for attempt in (lambda ch: ch.queue_declare("bob.q"),
                        lambda ch: ch.exchange_declare("bob.x", "fanout"),
                        lambda ch: ch.queue_declare("alice.dl", arguments={
                            "x-dead-letter-exchange": "amq.fanout"}),
                        lambda ch: ch.exchange_declare("alice.ae", "fanout", arguments={
                            "alternate-exchange": "amq.fanout"})):
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                attempt(ch)
            assert closed.value.reply_code == 403
        ch = conn.channel()
        ch.queue_declare("alice.ok")  # the pattern does allow her own names
        ch.queue_delete("alice.ok")
    finally:
        conn.close()
    queues = t.queues(t.a)
    assert not {"bob.q", "alice.dl"} & queues
    exchanges = {x["name"] for x in t.api.get(f"/exchanges/{t.a}").json()}
    assert not {"bob.x", "alice.ae"} & exchanges


def test_stomp_and_api_names_outside_patterns(t: Tenants) -> None:
    peer = stomp(t, t.alice, t.a)
    peer.conn.subscribe(destination="/queue/bob.q", id="s1")
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    peer = stomp(t, t.alice, t.a)
    peer.conn.send("/queue/bob.q2", b"x")
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    with t.as_user(t.alice) as api:
        assert api.put(f"/queues/{t.a}/bob.q3", json={}).status_code == 403
        assert api.put(f"/exchanges/{t.a}/bob.x3", json={"type": "fanout"}).status_code == 403
    with t.as_user(t.mon) as api:  # monitoring without a permission row: nothing in it
        assert api.get(f"/queues/{t.a}").status_code == 401
        assert api.put(f"/queues/{t.a}/alice.mon", json={}).status_code in (401, 403)
    assert not {"bob.q", "bob.q2", "bob.q3", "alice.mon"} & t.queues(t.a)


def test_wamp_register_outside_patterns(t: Tenants) -> None:
    async def main() -> tuple[str, bool]:
        s = await wamp(t, t.alice, t.a)
        try:
            error = await wamp_error(s.register(lambda: 1, "bob.proc"))
            reg = await s.register(lambda: 1, "alice.proc")  # her own name: allowed
            ok = reg is not None
            await reg.unregister()
        finally:
            await leave(s)
        return error, ok

    error, ok = run(main())
    assert error == "wamp.error.not_authorized" and ok
    assert "bob.proc" not in t.queues(t.a)


# -- 3. topic read through a binding (`#` on amq.topic) ------------------------------------


def test_amqp_bind_with_hash_checks_topic_read(t: Tenants, watch_a: Watcher) -> None:
    conn = amqp(t, t.alice, t.a)
    try:
        ch = conn.channel()
        ch.queue_declare("alice.inbox", exclusive=True)
        ch.queue_bind("alice.inbox", "amq.topic", "alice.#")  # within her topic permission
        for key in ("#", "payroll.*", "*.#"):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                ch.queue_bind("alice.inbox", "amq.topic", key)
            assert closed.value.reply_code == 403
            assert "access to topic" in closed.value.reply_text
            ch = conn.channel()
        ch.exchange_declare("alice.fan", "fanout", auto_delete=False)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            ch.exchange_bind("alice.fan", "amq.topic", "#")  # exchange-to-exchange
        assert closed.value.reply_code == 403
        ch = conn.channel()
        watch_a.publish("payroll.march", b"salaries")
        watch_a.publish("alice.note", b"hers")
        conn.sleep(QUIET)
        got = []
        while True:
            method, _p, body = ch.basic_get("alice.inbox", auto_ack=True)
            if method is None:
                break
            got.append(body)
        assert got == [b"hers"]
        ch.exchange_delete("alice.fan")
    finally:
        conn.close()
    sources = {(b["source"], b["destination"], b["routing_key"]) for b in t.bindings(t.a)}
    assert not {("amq.topic", "alice.inbox", "#"), ("amq.topic", "alice.fan", "#")} & sources


def test_api_binding_checks_topic_read(t: Tenants) -> None:
    t.api.put(f"/queues/{t.a}/alice.api", json={"durable": False})
    with t.as_user(t.alice) as api:
        r = api.post(f"/bindings/{t.a}/e/amq.topic/q/alice.api", json={"routing_key": "#"})
        assert r.status_code == 403, r.text
        api.put(f"/exchanges/{t.a}/alice.fan2", json={"type": "fanout"})
        r = api.post(f"/bindings/{t.a}/e/amq.topic/e/alice.fan2", json={"routing_key": "#"})
        assert r.status_code == 403, r.text
        ok = api.post(f"/bindings/{t.a}/e/amq.topic/q/alice.api",
                      json={"routing_key": "alice.x"})
        assert ok.status_code == 201
        api.delete(f"/exchanges/{t.a}/alice.fan2")
    keys = {(b["destination"], b["routing_key"]) for b in t.bindings(t.a)
            if b["source"] == "amq.topic"}
    assert ("alice.api", "alice.x") in keys
    assert ("alice.api", "#") not in keys and ("alice.fan2", "#") not in keys
    t.api.delete(f"/queues/{t.a}/alice.api")


def test_mqtt_stomp_wamp_subscribe_hash_refused(t: Tenants) -> None:
    client = Paho(t, t.alice, t.a, f"alice-{t.tag}-sub")
    client.client.subscribe([("#", 1), ("payroll/+", 1), ("alice/#", 1)])
    assert client.next("suback") == [0x87, 0x87, 1]
    client.close()

    peer = stomp(t, t.alice, t.a)
    peer.conn.subscribe(destination="/topic/#", id="s1",
                        headers={"x-queue-name": "alice.stomp-all"})
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    assert "alice.stomp-all" not in t.queues(t.a)

    async def main() -> list[str]:
        s = await wamp(t, t.alice, t.a)
        try:
            return [await wamp_error(s.subscribe(lambda *a: None, "payroll",
                                                 options=SubscribeOptions(match="prefix"))),
                    await wamp_error(s.subscribe(lambda *a: None, "payroll..x",
                                                 options=SubscribeOptions(match="wildcard")))]
        finally:
            await leave(s)

    assert run(main()) == ["wamp.error.not_authorized"] * 2


# -- 4. topic write through publish --------------------------------------------------------


def test_publish_outside_topic_permission_refused_everywhere(t: Tenants,
                                                             watch_a: Watcher) -> None:
    conn = amqp(t, t.alice, t.a)
    ch = conn.channel()
    ch.confirm_delivery()  # so the publish waits for the broker's answer
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.basic_publish("amq.topic", "payroll.march", b"amqp")
    assert closed.value.reply_code == 403
    conn.close()

    with t.as_user(t.alice) as api:
        r = api.post(f"/exchanges/{t.a}/amq.topic/publish", json={
            "routing_key": "payroll.march", "payload": "api", "payload_encoding": "string",
            "properties": {}})
        assert r.status_code == 403, r.text
        ok = api.post(f"/exchanges/{t.a}/amq.topic/publish", json={
            "routing_key": "alice.ok", "payload": "api", "payload_encoding": "string",
            "properties": {}})
        assert ok.status_code == 200, ok.text

    client = Paho(t, t.alice, t.a, f"alice-{t.tag}-pub")
    client.client.publish("payroll/march", b"mqtt", qos=1)
    assert client.next("puback") == 0x87
    client.close()

    peer = stomp(t, t.alice, t.a)
    peer.conn.send("/topic/payroll.march", b"stomp")
    assert peer.error().headers["message"] == "access_refused"
    peer.close()

    async def main() -> str:
        s = await wamp(t, t.alice, t.a)
        try:
            return await wamp_error(s.publish("payroll.march", 1,
                                              options=PublishOptions(acknowledge=True)))
        finally:
            await leave(s)

    assert run(main()) == "wamp.error.not_authorized"
    assert watch_a.keys() == ["alice.ok"]


# -- 5. server-named and protocol-made queues: checked before they exist --------------------


def test_refused_server_named_queue_leaves_nothing(t: Tenants) -> None:
    before = t.queues(t.a)
    conn = amqp(t, t.alice, t.a)
    try:
        for durable in (True, False):
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                ch.queue_declare("", durable=durable)
            assert closed.value.reply_code == 403
            assert "amq.gen-" in closed.value.reply_text
    finally:
        conn.close()
    peer = stomp(t, t.alice, t.a)
    peer.conn.send("/temp-queue/replies", b"x")
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    peer = stomp(t, t.alice, t.a)
    peer.conn.send("/queue/alice.rpc", b"x", headers={"reply-to": "/temp-queue/r"})
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    after = t.queues(t.a)
    assert after == before


def test_stomp_subscription_refused_after_declare_check_leaves_no_queue(t: Tenants) -> None:
    """The subscription's queue name is hers, but the exchange it binds from is not: the
    whole subscription is refused before its queue is declared."""
    t.api.put(f"/exchanges/{t.a}/payroll.x", json={"type": "fanout"})
    peer = stomp(t, t.alice, t.a)
    peer.conn.subscribe(destination="/exchange/payroll.x/k", id="s1",
                        headers={"x-queue-name": "alice.sub", "durable": "true"})
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    assert "alice.sub" not in t.queues(t.a)
    t.api.delete(f"/exchanges/{t.a}/payroll.x")


# -- 6. MQTT: resuming another user's session ----------------------------------------------


def _carol_session(t: Tenants, cid: str, version: int) -> None:
    carol = Paho(t, t.carol, t.shared, cid, version=version, clean=False, expiry=3600)
    carol.client.subscribe("inbox/#", qos=1)
    carol.next("suback")
    carol.close()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_mqtt_other_user_never_resumes_a_session(t: Tenants, version: int) -> None:
    cid = f"device-{secrets.token_hex(3)}"
    _carol_session(t, cid, version)
    admin = admin_amqp(t, t.shared)
    admin.channel().basic_publish("amq.topic", "inbox.secret", b"for carol only",
                                  pika.BasicProperties(delivery_mode=2))
    dave = Paho(t, t.dave, t.shared, cid, version=version, clean=False, expiry=3600)
    assert dave.rc == 0 and dave.session_present is False
    admin.channel().basic_publish("amq.topic", "inbox.later", b"also carol's",
                                  pika.BasicProperties(delivery_mode=2))
    assert dave.messages() == []
    dave.close()
    admin.close()
    # carol's session was discarded (as by a clean start), not handed over
    carol = Paho(t, t.carol, t.shared, cid, version=version, clean=False, expiry=3600)
    assert carol.session_present is False
    assert carol.messages() == []
    carol.close()


def test_mqtt_session_not_discarded_without_configure_on_its_queue(t: Tenants) -> None:
    cid = f"device-{secrets.token_hex(3)}"
    _carol_session(t, cid, mqtt.MQTTv5)
    admin = admin_amqp(t, t.shared)
    admin.channel().basic_publish("amq.topic", "inbox.kept", b"kept",
                                  pika.BasicProperties(delivery_mode=2))
    admin.close()
    erin = Paho(t, t.erin, t.shared, cid, clean=False, expiry=3600)
    assert erin.rc == 0x87
    erin.close()
    erin = Paho(t, t.erin, t.shared, cid, clean=True)  # a clean start is no way round
    assert erin.rc == 0x87
    erin.close()
    carol = Paho(t, t.carol, t.shared, cid, clean=False, expiry=3600)
    assert carol.session_present is True
    topic, payload = carol.next("message")
    assert (topic, payload) == ("inbox/kept", b"kept")
    carol.close()
    Paho(t, t.carol, t.shared, cid, clean=True).close()  # end it


# -- 7. MQTT shared-subscription queue names ------------------------------------------------


def test_mqtt_shared_subscription_names_do_not_collide(t: Tenants) -> None:
    first = Paho(t, t.carol, t.shared, f"s1-{t.tag}")
    second = Paho(t, t.dave, t.shared, f"s2-{t.tag}")
    first.client.subscribe("$share/grp-carol/payroll", qos=1)
    assert first.next("suback") == [1]
    second.client.subscribe("$share/grp/carol-payroll", qos=1)
    assert second.next("suback") == [1]
    shared = {q for q in t.queues(t.shared) if q.startswith("mqtt-shared-")}
    assert {"mqtt-shared-grp-carol/payroll", "mqtt-shared-grp/carol-payroll"} <= shared
    admin = admin_amqp(t, t.shared)
    admin.channel().basic_publish("amq.topic", "payroll", b"to grp-carol")
    admin.channel().basic_publish("amq.topic", "carol-payroll", b"to grp")
    admin.close()
    assert first.messages() == [("payroll", b"to grp-carol")]
    assert second.messages() == [("carol-payroll", b"to grp")]
    first.close()
    second.close()


# -- 8. MQTT 5 Response Topic: no session queue outside the configure permission -----------


def _request(t: Tenants, cid: str) -> int:
    client = Paho(t, t.alice, t.a, cid)
    props = MqttProperties(PacketTypes.PUBLISH)
    props.ResponseTopic = "alice/replies"
    props.CorrelationData = b"1"
    client.client.publish("alice/requests", b"q", qos=1, properties=props)
    code = int(client.next("puback"))
    client.close()
    return code


def test_mqtt_response_topic_needs_configure_on_the_session_queue(
        t: Tenants, watch_a: Watcher) -> None:
    stranger = f"x-{t.tag}"  # her session queue would be mqtt-subscription-x-...: not hers
    assert _request(t, stranger) == 0x87
    assert f"mqtt-subscription-{stranger}qos1" not in t.queues(t.a)
    assert watch_a.keys() == []
    own = f"alice-{t.tag}-rpc"
    assert _request(t, own) in (0, 0x10)
    assert watch_a.keys() == ["alice.requests"]


def test_mqtt_session_owner_survives_a_restart(fresh_broker: Any) -> None:
    """The owner is kept in the store: after a restart another user still gets a fresh
    session, and the owner still resumes hers."""
    from types import SimpleNamespace

    b = fresh_broker
    api = httpx.Client(base_url=f"http://127.0.0.1:{b.ports['http']}/api",
                       auth=(b.user, b.password), timeout=TIMEOUT)
    for user in ("carol", "dave"):
        assert api.put(f"/users/{user}", json={"password": PASSWORD, "tags": ""}
                       ).status_code == 201
        assert api.put(f"/permissions/%2F/{user}", json={
            "configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    api.close()
    t = SimpleNamespace(broker=b)
    for cid in ("stolen", "kept"):
        carol = Paho(t, "carol", "/", cid, clean=False, expiry=3600)
        carol.client.subscribe("inbox/#", qos=1)
        carol.next("suback")
        carol.close()
    admin = pika.BlockingConnection(pika.URLParameters(b.url))
    admin.channel().basic_publish("amq.topic", "inbox.secret", b"for carol",
                                  pika.BasicProperties(delivery_mode=2))
    admin.close()
    b.restart(kill=False)
    dave = Paho(t, "dave", "/", "stolen", clean=False, expiry=3600)
    assert dave.rc == 0 and dave.session_present is False
    assert dave.messages() == []
    dave.close()
    carol = Paho(t, "carol", "/", "kept", clean=False, expiry=3600)
    assert carol.session_present is True
    assert carol.next("message") == ("inbox/secret", b"for carol")
    carol.close()


# -- reading, purging, deleting what is not hers; calling; a will ---------------------------


def test_reading_or_removing_another_queue_refused_everywhere(t: Tenants) -> None:
    admin = admin_amqp(t, t.a)
    ach = admin.channel()
    ach.queue_declare("payroll.q", durable=True)
    ach.basic_publish("", "payroll.q", b"salary", pika.BasicProperties(delivery_mode=2))
    conn = amqp(t, t.alice, t.a)
    try:
        for attempt in (lambda ch: ch.basic_get("payroll.q"),
                        lambda ch: ch.basic_consume("payroll.q", lambda *a: None),
                        lambda ch: ch.queue_purge("payroll.q"),
                        lambda ch: ch.queue_delete("payroll.q"),
                        lambda ch: ch.queue_bind("payroll.q", "amq.topic", "alice.x")):
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                attempt(ch)
            assert closed.value.reply_code == 403
    finally:
        conn.close()
    peer = stomp(t, t.alice, t.a)
    peer.conn.subscribe(destination="/amq/queue/payroll.q", id="s1")
    assert peer.error().headers["message"] == "access_refused"
    peer.close()
    with t.as_user(t.alice) as api:
        base = f"/queues/{t.a}/payroll.q"
        assert api.post(f"{base}/get", json={"count": 1, "ackmode": "ack_requeue_false",
                                             "encoding": "auto"}).status_code == 403
        assert api.get(f"{base}/browse").status_code == 403
        assert api.delete(f"{base}/contents").status_code == 403
        assert api.delete(base).status_code == 403

    async def main() -> str:
        callee = await join(ws_url(t.broker), t.a, authmethods=["ticket"],
                            authid=t.broker.user, secret=t.broker.password)
        reg = await callee.register(lambda: "secret", "payroll.proc")
        s = await wamp(t, t.alice, t.a)
        try:
            return await wamp_error(s.call("payroll.proc"))
        finally:
            await leave(s)
            await reg.unregister()
            await leave(callee)

    assert run(main()) == "wamp.error.not_authorized"
    method, _p, body = ach.basic_get("payroll.q", auto_ack=True)
    assert method is not None and body == b"salary"  # still there, untouched
    ach.queue_delete("payroll.q")
    admin.close()


def test_mqtt_will_outside_topic_permission_refused(t: Tenants, watch_a: Watcher) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"alice-{t.tag}-will",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(f"{t.a}:{t.alice}", PASSWORD)
    client.will_set("payroll/leak", b"will", qos=1)
    codes: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.put(int(getattr(rc, "value", rc)))
    client.connect("127.0.0.1", t.broker.ports["mqtt"])
    client.loop_start()
    try:
        assert codes.get(timeout=TIMEOUT) == 0x87
    finally:
        client.loop_stop()
    assert watch_a.keys() == []
