"""stomp.py against the broker over TCP, on STOMP 1.0, 1.1 and 1.2: everything issue 4 asks a
user to be able to do."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stomp
from test_stomp_clientkit import VERSIONS, Peer, open_peers

Peers = Callable[..., Peer]


@pytest.fixture
def peers(broker: Any) -> Iterator[Peers]:
    yield from open_peers(broker)


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_send_and_receive_with_headers_and_binary_body(peers: Peers, version: str,
                                                       unique: Callable[[str], str]) -> None:
    p = peers(version)
    dest = "/queue/" + unique("basic")
    p.subscribe(dest, "1")
    body = b"\x00binary\x00body\xff"
    headers = {"x-custom": "plain", "correlation-id": "c-1", "priority": "4",
               "content-type": "application/octet-stream"}
    if version != "1.0":
        headers["x-escaped"] = "a:b\nc\\d"
    p.conn.send(dest, body, headers={**headers, "receipt": "sent"})
    p.receipt("sent")
    msg = p.message()
    assert msg.body == body
    for key, value in headers.items():
        assert msg.headers[key] == value, key
    assert msg.headers["destination"] == dest and msg.headers["subscription"] == "1"
    assert msg.headers["redelivered"] == "false"


def test_client_individual_ack_and_requeue_on_disconnect(peers: Peers, version: str,
                                                         unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("acks")
    p = peers(version)
    for i in range(3):
        p.conn.send(dest, f"m{i}")
    p.subscribe(dest, "s", ack="client-individual")
    msgs = [p.message() for _ in range(3)]
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    p.ack(msgs[1], receipt="acked")
    p.receipt("acked")
    p.conn.disconnect(receipt="bye")
    p.receipt("bye")
    q = peers(version)
    q.subscribe(dest, "s", ack="auto")
    again = [q.message(), q.message()]
    assert [(m.body, m.headers["redelivered"]) for m in again] == [
        (b"m0", "true"), (b"m2", "true")]
    q.no_message()


def test_client_ack_is_cumulative(peers: Peers, version: str,
                                  unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("cumulative")
    p = peers(version)
    for i in range(3):
        p.conn.send(dest, f"m{i}")
    p.subscribe(dest, "s", ack="client")
    msgs = [p.message() for _ in range(3)]
    p.ack(msgs[1], receipt="acked")
    p.receipt("acked")
    p.conn.disconnect(receipt="bye")
    p.receipt("bye")
    q = peers(version)
    q.subscribe(dest, "s")
    assert q.message().body == b"m2"
    q.no_message()


def test_nack_requeues_with_redelivered(peers: Peers, version: str,
                                        unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("nack")
    p = peers(version)
    p.subscribe(dest, "s", ack="client-individual")
    p.conn.send(dest, "again")
    first = p.message()
    p.nack(first)
    second = p.message()
    assert second.body == b"again" and second.headers["redelivered"] == "true"
    p.conn.send_frame("NACK", _nack_headers(version, second, requeue="false"))
    p.no_message()


def _nack_headers(version: str, msg: Any, **extra: str) -> dict[str, str]:
    if version == "1.2":
        return {"id": msg.headers["ack"], **extra}
    return {"message-id": msg.headers["message-id"], "subscription": "s", **extra}


def test_prefetch_count(peers: Peers, version: str, unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("prefetch")
    p = peers(version)
    for i in range(4):
        p.conn.send(dest, f"m{i}")
    p.subscribe(dest, "s", ack="client-individual", **{"prefetch-count": "1"})
    first = p.message()
    p.no_message()
    p.ack(first)
    assert p.message().body == b"m1"


def test_transactions_commit_abort_and_disconnect(peers: Peers, version: str,
                                                  unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("tx")
    p = peers(version)
    p.subscribe(dest, "s")
    tx = p.conn.begin()
    p.conn.send(dest, "committed", transaction=tx)
    p.no_message()
    p.conn.commit(tx)
    assert p.message().body == b"committed"
    tx2 = p.conn.begin()
    p.conn.send(dest, "aborted", transaction=tx2)
    p.conn.abort(tx2, headers={"receipt": "aborted"})
    p.receipt("aborted")
    p.no_message()
    other = peers(version)
    tx3 = other.conn.begin()
    other.conn.send(dest, "left open", transaction=tx3)
    other.conn.disconnect(receipt="bye")
    other.receipt("bye")
    p.no_message()


def test_persistent_send_receipt(peers: Peers, version: str,
                                 unique: Callable[[str], str]) -> None:
    dest = "/queue/" + unique("persistent")
    p = peers(version)
    p.conn.send(dest, "kept", headers={"persistent": "true", "receipt": "stored"})
    p.receipt("stored")
    p.subscribe(dest, "s")
    msg = p.message()
    assert msg.body == b"kept" and msg.headers["persistent"] == "true"


def test_topic_wildcards_fan_out(peers: Peers, version: str,
                                 unique: Callable[[str], str]) -> None:
    key = unique("news").replace("-", "")
    a, b = peers(version), peers(version)
    a.subscribe(f"/topic/{key}.*", "a")
    b.subscribe(f"/topic/{key}.#", "b")
    a.conn.send(f"/topic/{key}.sport", "goal")
    for peer in (a, b):
        msg = peer.message()
        assert msg.body == b"goal" and msg.headers["destination"] == f"/topic/{key}.sport"


def test_durable_topic_subscription(peers: Peers, version: str,
                                    unique: Callable[[str], str]) -> None:
    dest = "/topic/" + unique("durable")
    sub = {"durable": "true", "auto-delete": "false"}
    p = peers(version)
    p.subscribe(dest, "keep", **sub)
    p.conn.disconnect(receipt="away")
    p.receipt("away")
    sender = peers(version)
    sender.conn.send(dest, "while away", headers={"receipt": "s"})
    sender.receipt("s")
    back = peers(version)
    back.subscribe(dest, "keep", **sub)
    assert back.message().body == b"while away"
    back.conn.unsubscribe(dest if version == "1.0" else "keep",
                          **({"id": "keep"} if version == "1.0" else {}),
                          headers={"durable": "true", "receipt": "gone"})
    back.receipt("gone")


def test_temp_queue_request_reply(peers: Peers, version: str,
                                  unique: Callable[[str], str]) -> None:
    service = "/queue/" + unique("service")
    responder, requester = peers(version), peers(version)
    responder.subscribe(service, "svc")
    requester.conn.send(service, "ping", headers={"reply-to": "/temp-queue/answers"})
    request = responder.message()
    assert request.headers["reply-to"].startswith("/reply-queue/amq.gen-")
    responder.conn.send(request.headers["reply-to"], "pong")
    reply = requester.message()
    assert reply.body == b"pong" and reply.headers["subscription"] == "/temp-queue/answers"


def test_heartbeats_both_ways(peers: Peers) -> None:
    both = [peers(version, heartbeats=(1000, 1000)) for version in ("1.1", "1.2")]
    deadline = time.monotonic() + 6
    while min(p.listener.heartbeats for p in both) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in both:
        assert p.listener.heartbeats >= 2
        assert p.conn.is_connected()


def _raw_connect(port: int, heart_beat: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\nhost:/\n"
                 b"heart-beat:" + heart_beat.encode() + b"\n\n\x00")
    return sock


def test_silent_client_is_cut_off(broker: Any) -> None:
    sock = _raw_connect(broker.ports["stomp"], "1000,0")
    try:
        start = time.monotonic()
        data = b""
        while chunk := sock.recv(4096):  # until the broker closes the socket
            data += chunk
        assert data.startswith(b"CONNECTED\n") and b"heart-beat:0,1000\n" in data
        assert 2.0 <= time.monotonic() - start < 6.0
    finally:
        sock.close()


def test_bad_credentials(peers: Peers, version: str) -> None:
    p = peers(version, connect=False)
    with pytest.raises(stomp.exception.ConnectFailedException):
        p.connect(passcode="wrong")
    err = p.error()
    assert err.headers["message"] == "Bad CONNECT"
    assert err.body == b"Access refused for user 'guest'"


def test_unknown_vhost(peers: Peers, version: str) -> None:
    p = peers(version, connect=False, **({} if version == "1.0" else {"vhost": "nosuch"}))
    with pytest.raises(stomp.exception.ConnectFailedException):
        if version == "1.0":
            p.connect(host="nosuch")
        else:
            p.connect()
    err = p.error()
    assert err.headers["message"] == "Bad CONNECT" and b"nosuch" in err.body


def test_connect_without_login_is_guest_from_loopback(peers: Peers) -> None:
    p = peers("1.0", connect=False)
    p.conn.connect(wait=True)  # no login header at all, as stompserver-style clients do
    p.conn.send("/queue/anything", "x", headers={"receipt": "ok"})
    p.receipt("ok")


def test_stomp_py_default_host_header_finds_the_default_vhost(peers: Peers) -> None:
    p = peers("1.2", vhost=None)  # stomp.py then sends host:127.0.0.1
    p.conn.send("/queue/anything", "x", headers={"receipt": "ok"})
    p.receipt("ok")


@pytest.mark.parametrize(("destination", "message"), [
    ("/unknown/x", "Unknown destination"), ("/amq/queue/surely-not-there", "not_found"),
])
def test_error_then_close(peers: Peers, version: str, destination: str, message: str) -> None:
    p = peers(version)
    p.conn.subscribe(destination=destination, id="1", ack="auto")
    err = p.error()
    assert err.headers["message"] == message and err.body
    p.wait_disconnected()


def test_ack_of_unknown_message_is_an_error(peers: Peers, version: str) -> None:
    p = peers(version)
    if version == "1.2":
        p.conn.ack("no-such-message")
    elif version == "1.1":
        p.conn.ack("no-such-message", "1")
    else:
        p.conn.ack("no-such-message")
    err = p.error()
    assert err.headers["message"] == "Bad ACK" and b"no-such-message" in err.body
    p.wait_disconnected()


@pytest.fixture
def restartable(fresh_broker: Any) -> Iterator[Callable[[], Peer]]:
    """Connects STOMP 1.2 peers to a broker of the test's own (which it may restart)."""
    opened: list[Peer] = []

    def connect() -> Peer:
        peer = Peer(fresh_broker.ports["stomp"], "1.2")
        opened.append(peer)
        peer.connect()
        return peer

    yield connect
    for peer in opened:
        peer.close()


def test_persistent_sends_to_a_queue_survive_kill_9_and_transient_ones_do_not(
        fresh_broker: Any, restartable: Callable[[], Peer]) -> None:
    """SEND with persistent:true to a /queue/ destination: each RECEIPT means the message
    is on disk, so a SIGKILL right after the last one loses none of them; a SEND without it
    is transient and gone after the restart, as in RabbitMQ."""
    sender = restartable()
    for i, persistent in enumerate((True, False, True, True)):
        headers = {"receipt": f"r{i}"}
        if persistent:
            headers["persistent"] = "true"
        sender.conn.send("/queue/orders", f"m{i}", headers=headers)
        sender.receipt(f"r{i}")
    fresh_broker.restart(kill=True)
    back = restartable()
    back.conn.send("/queue/orders", "after", headers={"persistent": "true",
                                                      "receipt": "after"})
    back.receipt("after")
    back.subscribe("/queue/orders", "s")
    got = [back.message() for _ in range(4)]
    assert [m.body for m in got] == [b"m0", b"m2", b"m3", b"after"]
    assert all(m.headers["persistent"] == "true" for m in got)


def test_durable_subscription_and_persistent_messages_survive_a_restart(
        fresh_broker: Any, restartable: Callable[[], Peer]) -> None:
    p = restartable()
    p.subscribe("/topic/restart.news", "keep", durable="true", **{"auto-delete": "false"})
    p.conn.disconnect(receipt="away")
    p.receipt("away")
    sender = restartable()
    sender.conn.send("/topic/restart.news", "kept",
                     headers={"persistent": "true", "receipt": "stored"})
    sender.receipt("stored")  # the receipt means it is on disk
    fresh_broker.restart(kill=True)
    back = restartable()
    back.subscribe("/topic/restart.news", "keep", durable="true",
                   **{"auto-delete": "false"})
    msg = back.message()
    assert msg.body == b"kept" and msg.headers["persistent"] == "true"
    # never delivered before the restart, so not redelivered (RabbitMQ keeps the mark)
    assert msg.headers["redelivered"] == "false"
