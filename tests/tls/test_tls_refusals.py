"""What a TLS listener refuses, and how: plain text and silence on a TLS port (closed, the
broker keeps serving others), certificates from an unknown CA or none when one is required,
and certificates whose common name is not a broker user (each protocol's own error)."""

from __future__ import annotations

import queue
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pika.credentials
import pika.exceptions
import pytest
import stomp
import stomp.exception
from tls_kit import (
    HOST,
    STRANGER,
    TIMEOUT,
    Broker,
    Certs,
    client_context,
    closed_by_peer,
    foreign_cert,
    make_certs,
    start_broker,
    user_cert,
)

HANDSHAKE_TIMEOUT = 5  # the brokers' [tls] handshake_timeout, seconds (given in ms)

# what a plain-text client of each protocol sends first
PLAIN_TEXT = {
    "amqps": b"AMQP\x00\x00\x09\x01",
    "mqtts": bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]),
    "stomps": b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00",
    "https": b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "web_stomp_tls": b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "web_mqtt_tls": b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def peer_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Broker]:
    """verify = "peer": a certificate is checked when given, clients without one are let in."""
    broker = start_broker(tmp_path_factory.mktemp("peer"), certs, verify="peer",
                          handshake_timeout=HANDSHAKE_TIMEOUT * 1000)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def require_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Broker]:
    """verify = "require": a client without a certificate signed by the CA is refused."""
    broker = start_broker(tmp_path_factory.mktemp("require"), certs, verify="require",
                          handshake_timeout=HANDSHAKE_TIMEOUT * 1000)
    yield broker
    broker.stop()


def amqps_params(broker: Broker, certs: Certs, cert: tuple[Path, Path] | None,
                 external: bool = False) -> pika.ConnectionParameters:
    credentials: Any = (pika.credentials.ExternalCredentials() if external
                        else pika.PlainCredentials("guest", "guest"))
    return pika.ConnectionParameters(
        HOST, broker.ports["amqps"], credentials=credentials, connection_attempts=1,
        socket_timeout=TIMEOUT, blocked_connection_timeout=TIMEOUT,
        ssl_options=pika.SSLOptions(client_context(certs, cert), HOST))


def round_trip(broker: Broker, certs: Certs, cert: tuple[Path, Path] | None = None) -> None:
    """A well-behaved TLS client publishes and gets its message back."""
    conn = pika.BlockingConnection(amqps_params(broker, certs, cert))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"still served")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            method, _, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                assert body == b"still served"
                return
            conn.process_data_events(time_limit=0.05)
        raise AssertionError("the message did not come back")
    finally:
        conn.close()


def test_plain_text_and_silence_on_tls_ports_are_closed(peer_broker: Broker,
                                                        certs: Certs) -> None:
    # silent clients on every TLS port, opened first: they hold no listener up
    silent = {name: socket.create_connection((HOST, peer_broker.ports[name]), TIMEOUT)
              for name in PLAIN_TEXT}
    try:
        for name, first_bytes in PLAIN_TEXT.items():
            with socket.create_connection((HOST, peer_broker.ports[name]), TIMEOUT) as sock:
                sock.sendall(first_bytes)
                # refused at the first record, long before the handshake timeout
                assert closed_by_peer(sock, HANDSHAKE_TIMEOUT - 1) < HANDSHAKE_TIMEOUT - 1
        round_trip(peer_broker, certs)  # while the silent ones still wait
        for sock in silent.values():
            # closed by the handshake timeout (raises TimeoutError if it is kept open)
            closed_by_peer(sock, HANDSHAKE_TIMEOUT + TIMEOUT)
    finally:
        for sock in silent.values():
            sock.close()
    round_trip(peer_broker, certs)
    output = peer_broker.output()
    assert "WRONG_VERSION_NUMBER" in output or "wrong version number" in output.lower()
    assert output.count(f"no handshake within {HANDSHAKE_TIMEOUT} s") == len(PLAIN_TEXT)
    assert "Traceback" not in output


def test_unknown_ca_and_missing_certificate_are_refused_when_required(
        require_broker: Broker, certs: Certs) -> None:
    for cert in (foreign_cert(certs), None):
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(amqps_params(require_broker, certs, cert))
    # MQTT too: dropped at (TLS 1.2) or right after (TLS 1.3) the handshake, no CONNACK
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    client.tls_set_context(client_context(certs, foreign_cert(certs)))
    events: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda *args: events.put("connack")
    client.on_disconnect = lambda *args: events.put("dropped")
    try:
        client.connect(HOST, require_broker.ports["mqtts"])
    except OSError:
        events.put("dropped")  # the handshake itself failed
    client.loop_start()
    try:
        assert events.get(timeout=TIMEOUT) == "dropped"
    finally:
        client.loop_stop()
    round_trip(require_broker, certs, user_cert(certs))
    output = require_broker.output()
    assert output.count("TLS handshake with") >= 3, output
    assert "CERTIFICATE_VERIFY_FAILED" in output


def test_external_is_offered_only_with_a_certificate(peer_broker: Broker,
                                                     certs: Certs) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(amqps_params(peer_broker, certs, None, external=True))


def stranger(certs: Certs) -> tuple[Path, Path]:
    return certs.stranger


def test_certificate_of_no_user_gets_each_protocols_refusal(peer_broker: Broker,
                                                            certs: Certs) -> None:
    # AMQP: connection.close 403 ACCESS_REFUSED
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(amqps_params(peer_broker, certs, stranger(certs),
                                             external=True))
    assert "403" in str(refused.value) and "EXTERNAL" in str(refused.value)
    # MQTT 3.1.1: CONNACK 5, not authorized
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    client.tls_set_context(client_context(certs, stranger(certs)))
    connacks: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: connacks.put(rc)
    client.connect(HOST, peer_broker.ports["mqtts"])
    client.loop_start()
    try:
        rc = connacks.get(timeout=TIMEOUT)
        assert rc.is_failure and rc.getName() == "Not authorized"
    finally:
        client.loop_stop()
    # STOMP: an ERROR frame, then the close
    conn = stomp.Connection12([(HOST, peer_broker.ports["stomps"])], vhost="/")
    conn.set_ssl(for_hosts=[(HOST, peer_broker.ports["stomps"])],
                 cert_file=str(stranger(certs)[0]), key_file=str(stranger(certs)[1]),
                 ca_certs=str(certs.files.ca_certificate))
    errors: queue.Queue[Any] = queue.Queue()

    class Errors(stomp.ConnectionListener):
        def on_error(self, frame: Any) -> None:
            errors.put(frame)

    conn.set_listener("errors", Errors())
    with pytest.raises(stomp.exception.ConnectFailedException):
        conn.connect(wait=True)
    error = errors.get(timeout=TIMEOUT)
    assert error.headers["message"] == "Bad CONNECT"
    assert error.body == f"Access refused for user '{STRANGER}'"
    output = peer_broker.output()
    assert f"user '{STRANGER}' (from a client certificate) does not exist" in output
    round_trip(peer_broker, certs, user_cert(certs))


def test_handshakes_under_way_count_against_max_connections(
        tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> None:
    broker = start_broker(tmp_path_factory.mktemp("limited"), certs, verify="peer",
                          handshake_timeout=60_000, extra="[limits]\nmax_connections = 2\n")
    try:
        silent = [socket.create_connection((HOST, broker.ports["amqps"]), TIMEOUT)
                  for _ in range(3)]
        try:
            deadline = time.monotonic() + TIMEOUT
            refused = "TLS connection refused: max_connections (2) reached"
            while refused not in broker.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert refused in broker.output()
            # two handshakes still wait (for a minute): a real client is refused too (the
            # broker closes the socket at accept; pika may report that as an SSL EOF)
            with pytest.raises((pika.exceptions.AMQPConnectionError, ConnectionError,
                                ssl.SSLError)):
                pika.BlockingConnection(amqps_params(broker, certs, None))
        finally:
            for sock in silent:
                sock.close()
        # the silent clients gone, their places are free again
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                round_trip(broker, certs)
                break
            except (pika.exceptions.AMQPConnectionError, ConnectionError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        broker.stop()
