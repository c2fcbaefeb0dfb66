"""Every TLS listener with a real client: pika (PLAIN and EXTERNAL), paho-mqtt (password and
certificate login, over mqtts and over wss), stomp.py (login and certificate login), the
`websockets` library speaking STOMP over wss on the https port, and httpx on the HTTPS
management API. One broker (verify = "peer": a client certificate is asked for, checked when
given, not required) serves the whole module."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.credentials
import pytest
import stomp
import websockets
from tls_kit import (
    CERT_USER,
    HOST,
    TIMEOUT,
    Broker,
    Certs,
    client_context,
    make_certs,
    start_broker,
    user_cert,
)

from gateway.cli.main import main


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Broker]:
    broker = start_broker(tmp_path_factory.mktemp("tls-broker"), certs, verify="peer")
    yield broker
    broker.stop()


def amqps(broker: Broker, certs: Certs, *, external: bool = False) -> pika.BlockingConnection:
    context = client_context(certs, user_cert(certs) if external else None)
    credentials: Any = (pika.credentials.ExternalCredentials() if external
                        else pika.PlainCredentials("guest", "guest"))
    return pika.BlockingConnection(pika.ConnectionParameters(
        HOST, broker.ports["amqps"], credentials=credentials,
        ssl_options=pika.SSLOptions(context, HOST)))


def api(broker: Broker, certs: Certs, path: str) -> Any:
    response = httpx.get(f"https://{HOST}:{broker.ports['https']}/api{path}",
                         auth=("guest", "guest"), verify=client_context(certs), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def tls_users(broker: Broker, certs: Certs, protocol: str) -> set[str]:
    """Who the open TLS connections of `protocol` are logged in as (the management API's
    view; a connection closed by an earlier test may linger up to a second, so wait for
    them to go)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        users = [c["user"] for c in api(broker, certs, "/connections")
                 if c["ssl"] and c["protocol"].startswith(protocol) and c["state"] != "closed"]
        if len(users) <= 1 or time.monotonic() > deadline:
            return set(users)
        time.sleep(0.05)


def consume_one(ch: Any, queue_name: str) -> bytes:
    """The next message on `queue_name`, polled with basic.get for at most TIMEOUT s."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        method, _, body = ch.basic_get(queue_name, auto_ack=True)
        if method is not None:
            return bytes(body)
        ch.connection.process_data_events(time_limit=0.05)
    raise AssertionError(f"nothing arrived on {queue_name} within {TIMEOUT:g} s")


def test_pika_over_tls_publishes_and_consumes(tls_broker: Broker, certs: Certs,
                                              unique: Callable[[str], str]) -> None:
    conn = amqps(tls_broker, certs)
    try:
        ch = conn.channel()
        q = unique("tls-q")
        ch.queue_declare(q, exclusive=True)
        ch.confirm_delivery()
        ch.basic_publish("", q, b"over amqps")
        got: list[bytes] = []
        ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
        deadline = time.monotonic() + TIMEOUT
        while not got and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got == [b"over amqps"]
        # the management API (over HTTPS) sees a TLS connection of guest
        mine = [c for c in api(tls_broker, certs, "/connections")
                if c["user"] == "guest" and c["port"] == tls_broker.ports["amqps"]]
        assert mine and mine[0]["ssl"] is True
        assert mine[0]["ssl_protocol"] in ("TLSv1.2", "TLSv1.3")
        assert mine[0]["auth_mechanism"] == "PLAIN"
    finally:
        conn.close()


def test_pika_external_logs_in_by_certificate(tls_broker: Broker, certs: Certs,
                                              unique: Callable[[str], str]) -> None:
    conn = amqps(tls_broker, certs, external=True)
    try:
        ch = conn.channel()
        q = unique("external-q")
        ch.queue_declare(q, exclusive=True)
        ch.basic_publish("", q, b"as " + CERT_USER.encode())
        assert consume_one(ch, q) == b"as " + CERT_USER.encode()
        mine = [c for c in api(tls_broker, certs, "/connections") if c["user"] == CERT_USER]
        assert len(mine) == 1
        assert mine[0]["auth_mechanism"] == "EXTERNAL"
        assert mine[0]["peer_cert_subject"] == f"CN={CERT_USER},O=gateway"
    finally:
        conn.close()


def test_https_management_api(tls_broker: Broker, certs: Certs) -> None:
    overview = api(tls_broker, certs, "/overview")
    labels = {(item["protocol"], item["port"]) for item in overview["listeners"]}
    assert ("amqp/ssl", tls_broker.ports["amqps"]) in labels
    assert ("https", tls_broker.ports["https"]) in labels
    assert api(tls_broker, certs, "/whoami")["name"] == "guest"


class MQTTClient:
    """paho-mqtt with tls_set_context; `connack` is the CONNACK's reason code."""

    def __init__(self, certs: Certs, cert: tuple[Path, Path] | None = None, *,
                 transport: str = "tcp") -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="",
                             transport=transport)  # type: ignore[arg-type]
        client.tls_set_context(client_context(certs, cert))
        if transport == "websockets":
            client.ws_set_options(path="/ws")
        self.client = client
        self.connacks: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[bytes] = queue.Queue()
        client.on_connect = lambda c, u, flags, rc, props: self.connacks.put(rc)
        client.on_message = lambda c, u, msg: self.messages.put(msg.payload)

    def connect(self, port: int) -> Any:
        self.client.connect(HOST, port)
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def round_trip(self, topic: str) -> bytes:
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + TIMEOUT
        payload = topic.encode()
        # the SUBACK may trail the PUBLISH's routing, so publish until one comes back
        while time.monotonic() < deadline:
            self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
            try:
                return self.messages.get(timeout=0.5)
            except queue.Empty:
                continue
        raise AssertionError(f"nothing came back on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("how", ["password", "certificate"])
def test_paho_over_mqtts(tls_broker: Broker, certs: Certs, how: str,
                         unique: Callable[[str], str]) -> None:
    client = MQTTClient(certs, user_cert(certs) if how == "certificate" else None)
    if how == "password":
        client.client.username_pw_set("guest", "guest")
    try:
        assert not client.connect(tls_broker.ports["mqtts"]).is_failure
        topic = f"tls/{unique(how)}"
        assert client.round_trip(topic) == topic.encode()
        assert tls_users(tls_broker, certs, "MQTT") == {
            CERT_USER if how == "certificate" else "guest"}
    finally:
        client.close()


def test_paho_over_wss_with_certificate_login_on_the_web_mqtt_tls_port(
        tls_broker: Broker, certs: Certs, unique: Callable[[str], str]) -> None:
    client = MQTTClient(certs, user_cert(certs), transport="websockets")
    try:
        assert not client.connect(tls_broker.ports["web_mqtt_tls"]).is_failure
        topic = f"wss/{unique('mqtt')}"
        assert client.round_trip(topic) == topic.encode()
        assert tls_users(tls_broker, certs, "MQTT") == {CERT_USER}  # by its certificate
    finally:
        client.close()


class StompCollector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)


def stomp_client(broker: Broker, certs: Certs,
                 cert: tuple[Path, Path] | None) -> tuple[Any, StompCollector]:
    conn = stomp.Connection12([(HOST, broker.ports["stomps"])], vhost="/", auto_decode=False)
    conn.set_ssl(for_hosts=[(HOST, broker.ports["stomps"])],
                 cert_file=str(cert[0]) if cert else None,
                 key_file=str(cert[1]) if cert else None,
                 ca_certs=str(certs.files.ca_certificate))
    listener = StompCollector()
    conn.set_listener("collector", listener)
    return conn, listener


@pytest.mark.parametrize("how", ["login", "certificate"])
def test_stomp_py_over_tls(tls_broker: Broker, certs: Certs, how: str,
                           unique: Callable[[str], str]) -> None:
    conn, listener = stomp_client(tls_broker, certs,
                                  user_cert(certs) if how == "certificate" else None)
    if how == "login":
        conn.connect("guest", "guest", wait=True)
    else:
        conn.connect(wait=True)  # no login header: the certificate's CN is the user
    try:
        q = f"/queue/{unique('stomps')}"
        conn.subscribe(q, id="1", ack="auto")
        conn.send(q, b"over stomps")
        frame = listener.messages.get(timeout=TIMEOUT)
        assert frame.body == b"over stomps"
        assert tls_users(tls_broker, certs, "STOMP") == {
            CERT_USER if how == "certificate" else "guest"}
    finally:
        conn.disconnect()


def test_ctl_and_info_over_https(tls_broker: Broker, certs: Certs,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--host", HOST, "--port", str(tls_broker.ports["https"]), "--https"]
    trusted = [*where, "--cacert", str(certs.files.ca_certificate)]
    assert main(["ctl", *trusted, "-q", "list_users"]) == 0
    assert CERT_USER in capsys.readouterr().out
    assert main(["info", *trusted, "--once"]) == 0
    assert capsys.readouterr().out.startswith("gateway ")
    # a CA that did not sign the broker's certificate: no broker reachable (69)
    foreign = [*where, "--cacert", str(certs.foreign.ca_certificate)]
    assert main(["ctl", *foreign, "list_users"]) == 69
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


def run_async(session: Callable[[], Any]) -> Any:
    """Run an asyncio client session on a thread of its own, bounded in time."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(session())))
    thread.start()
    thread.join(TIMEOUT * 2)
    assert result, "the session did not finish"
    return result[0]


def test_wamp_over_wss_on_the_https_port(tls_broker: Broker, certs: Certs) -> None:
    async def session() -> list[Any]:
        url = f"wss://{HOST}:{tls_broker.ports['https']}/ws"
        async with websockets.connect(url, subprotocols=["wamp.2.json"],  # type: ignore[list-item]
                                      ssl=client_context(certs),
                                      open_timeout=TIMEOUT) as ws:
            await ws.send(json.dumps([1, "/", {"roles": {"publisher": {}, "subscriber": {}},
                                               "authmethods": ["ticket"],
                                               "authid": "guest"}]))
            challenge = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            await ws.send(json.dumps([5, "guest", {}]))  # AUTHENTICATE with the password
            welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            return [challenge, welcome]

    challenge, welcome = run_async(session)
    assert challenge[:2] == [4, "ticket"]
    assert welcome[0] == 2 and welcome[2]["authid"] == "guest"


def test_stomp_over_wss_on_the_https_port(tls_broker: Broker, certs: Certs,
                                          unique: Callable[[str], str]) -> None:
    """STOMP frames over `websockets` to /ws of the https listener (as a browser over wss)."""
    destination = f"/queue/{unique('wss')}"

    async def session() -> list[str]:
        url = f"wss://{HOST}:{tls_broker.ports['https']}/ws"
        async with websockets.connect(url, subprotocols=["v12.stomp"],  # type: ignore[list-item]
                                      ssl=client_context(certs),
                                      open_timeout=TIMEOUT) as ws:
            frames = [
                "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0",
                f"SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:sub\n\n\0",
                f"SEND\ndestination:{destination}\ncontent-type:text/plain\n\nover wss\0",
            ]
            got = []
            for frame in frames:
                await ws.send(frame)
                got.append(str(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            return got

    connected, receipt, message = run_async(session)
    assert connected.startswith("CONNECTED\n") and "version:1.2" in connected
    assert receipt.startswith("RECEIPT\n") and "receipt-id:sub" in receipt
    assert message.startswith("MESSAGE\n") and message.endswith("over wss\0")
