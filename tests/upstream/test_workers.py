"""`gateway serve --backend rabbitmq --workers 2` in front of the private RabbitMQ node:
both workers accept MQTT connections on the one shared port (each connection found in
exactly one worker's own management API, by the worker's PID), messages cross between
workers through RabbitMQ, a worker killed with SIGKILL is restarted by the parent and its
clients connect again, SIGTERM to the parent stops every worker, a parent killed with
SIGKILL takes its workers with it; `--workers 2` is refused with the embedded backend and
fails as a whole when the workers cannot start."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .gateway_node import REPO_ROOT, GatewayNode
from .rabbit import PASSWORD, USER, Cluster, free_port
from .test_backend_rabbitmq import TIMEOUT, Peer

CLIENTS = 16  # MQTT connections spread over the workers by the kernel
MAX_TRIES = 40  # connections tried to find one that lands on a given worker


@pytest.fixture(scope="module")
def workers(rabbit_node: Cluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayNode]:
    """One gateway with two workers (MQTT, STOMP and HTTP on shared ports)."""
    node = GatewayNode(rabbit_node, tmp_path_factory.mktemp("gw-w"), workers=2,
                       http=True).start()
    yield node
    node.stop()


def worker_api(node: GatewayNode, index: int) -> httpx.Client:
    """Worker `index`'s own management API (its local control socket)."""
    transport = httpx.HTTPTransport(uds=str(node.control_socket(index)))
    return httpx.Client(transport=transport, base_url="http://localhost/api", timeout=TIMEOUT)


def worker_view(node: GatewayNode, index: int) -> tuple[int, set[int]]:
    """The PID of worker `index` and the client ports of its connections."""
    with worker_api(node, index) as api:
        pid = int(api.get("/nodes").json()[0]["os_pid"])
        ports = {int(c["peer_port"]) for c in api.get("/connections").json()}
    return pid, ports


def local_port(peer: Peer) -> int:
    sock = peer.client.socket()
    assert sock is not None
    return int(sock.getsockname()[1])


def peer_on(node: GatewayNode, index: int, client_id: str) -> Peer:
    """An MQTT client connected to the shared port that the kernel gave worker `index`
    (others are closed)."""
    for _ in range(MAX_TRIES):
        peer = Peer(node.ports["mqtt"], client_id)
        if local_port(peer) in worker_view(node, index)[1]:
            return peer
        peer.close()
    raise AssertionError(f"{MAX_TRIES} connections, none on worker {index}")


def gone(pid: int) -> bool:
    """True when no process `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in pids), f"still running: {pids}"


def test_both_workers_accept_connections_on_the_shared_port(workers: GatewayNode) -> None:
    assert sorted(workers.workers) == [0, 1]
    pids = {i: worker_view(workers, i)[0] for i in (0, 1)}
    assert pids == workers.workers  # each control socket is its worker's own
    assert workers.process is not None and workers.process.pid not in pids.values()
    tag = secrets.token_hex(4)
    peers = [Peer(workers.ports["mqtt"], f"spread-{tag}-{i}") for i in range(CLIENTS)]
    try:
        ports = [local_port(p) for p in peers]
        seen = {i: worker_view(workers, i)[1] for i in (0, 1)}
        for port in ports:  # every connection is served by exactly one worker
            assert (port in seen[0]) != (port in seen[1]), port
        counts = [sum(port in seen[i] for port in ports) for i in (0, 1)]
        assert min(counts) >= 1, f"every connection went to one worker: {counts}"
    finally:
        for peer in peers:
            peer.close()


def test_the_shared_http_port_is_answered_by_each_worker(workers: GatewayNode) -> None:
    """The management API (and /metrics) on the shared HTTP port: each request's answer is
    the view of the worker that accepted its connection."""
    answered: set[int] = set()
    for _ in range(MAX_TRIES):
        with httpx.Client(auth=(USER, PASSWORD), timeout=TIMEOUT) as api:  # a new connection
            reply = api.get(f"http://127.0.0.1:{workers.ports['http']}/api/nodes")
            assert reply.status_code == 200, reply.text
            answered.add(int(reply.json()[0]["os_pid"]))
        if len(answered) == 2:
            break
    assert answered == set(workers.workers.values())


def test_messages_cross_between_workers(workers: GatewayNode) -> None:
    tag = secrets.token_hex(4)
    sub = peer_on(workers, 0, f"sub-{tag}")
    pub = peer_on(workers, 1, f"pub-{tag}")
    try:
        sub.subscribe(f"w/{tag}/+", 1)
        for qos in (0, 1):
            pub.publish(f"w/{tag}/{qos}", f"across {qos}".encode(), qos)
            got = sub.message()
            assert (got.topic, got.payload) == (f"w/{tag}/{qos}", f"across {qos}".encode())
    finally:
        sub.close()
        pub.close()


def mqtt_connect(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, keepalive 60) as the test user."""
    def text(value: str) -> bytes:
        raw = value.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = (text("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + text(client_id)
            + text(USER) + text(PASSWORD))
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def socket_on(node: GatewayNode, index: int) -> socket.socket:
    """A TCP connection to the shared MQTT port that the kernel gave worker `index`, before
    any MQTT packet (a connection is listed by its worker's API from its accept on)."""
    for _ in range(MAX_TRIES):
        sock = socket.create_connection(("127.0.0.1", node.ports["mqtt"]), timeout=TIMEOUT)
        port = sock.getsockname()[1]
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            seen = [worker_view(node, i)[1] for i in (0, 1)]
            if port in seen[0] or port in seen[1]:
                break
            time.sleep(0.05)
        if port in seen[index]:
            return sock
        sock.close()
    raise AssertionError(f"{MAX_TRIES} connections, none on worker {index}")


def test_a_client_id_connecting_on_another_worker_takes_the_session_over(
        workers: GatewayNode) -> None:
    client_id = f"moving-{secrets.token_hex(4)}"
    old = peer_on(workers, 0, client_id)
    old.client.reconnect_delay_set(60, 120)  # paho would take it back at once otherwise
    dropped = threading.Event()
    old.client.on_disconnect = lambda *_: dropped.set()
    new = socket_on(workers, 1)
    try:
        new.sendall(mqtt_connect(client_id))
        assert new.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted, on worker 1
        assert dropped.wait(TIMEOUT), "worker 0 kept the connection of the same client id"
        new.sendall(b"\xc0\x00")  # PINGREQ: the new connection is the one that stays
        assert new.recv(2) == b"\xd0\x00"
    finally:
        new.close()
        old.close()


def test_a_killed_worker_is_restarted_and_sigterm_stops_all(
        rabbit_node: Cluster, tmp_path: Path) -> None:
    node = GatewayNode(rabbit_node, tmp_path / "gw", workers=2).start()
    try:
        tag = secrets.token_hex(4)
        old = node.workers[1]
        victim = peer_on(node, 1, f"victim-{tag}")
        dropped = threading.Event()
        victim.client.on_disconnect = lambda *_: dropped.set()
        victim.connected.clear()
        os.kill(old, signal.SIGKILL)
        assert dropped.wait(TIMEOUT), "the killed worker's client was not disconnected"
        restarted = node.wait_for_line(r"worker 1 ready again \(pid (\d+)\)")
        new = int(restarted[1])
        assert new != old and gone(old)
        assert f"worker 1 (pid {old}) exited (killed by SIGKILL)" in node.output()
        assert worker_view(node, 1)[0] == new
        # the client connects again by itself (paho's reconnect, to whichever worker the
        # kernel picks), and messages flow between the restarted worker and the other one
        assert victim.connected.wait(TIMEOUT), "the client did not connect again"
        sub = peer_on(node, 1, f"sub-{tag}")
        pub = peer_on(node, 0, f"pub-{tag}")
        try:
            sub.subscribe(f"k/{tag}", 1)
            pub.publish(f"k/{tag}", b"after the restart", 1)
            assert sub.message().payload == b"after the restart"
        finally:
            for peer in (sub, pub, victim):
                peer.close()
        pids = list(node.workers.values())
        assert node.stop() == 0
        wait_gone(pids)
        assert "stopping 2 workers" in node.output()
        assert not node.control_socket(0).exists() and not node.control_socket(1).exists()
    finally:
        node.stop()


def test_a_worker_that_keeps_dying_makes_the_parent_give_up(
        rabbit_node: Cluster, tmp_path: Path) -> None:
    node = GatewayNode(rabbit_node, tmp_path / "gw", workers=2).start()
    try:
        for death in range(1, 6):  # MAX_QUICK_DEATHS, each soon after the worker's start
            if death > 1:
                node.wait_for_line(r"worker 1 ready again", count=death - 1)
            os.kill(node.workers[1], signal.SIGKILL)
        assert node.process is not None
        assert node.process.wait(60) == 1
        assert "worker 1 exited 5 times in a row" in node.output()
        wait_gone(list(node.workers.values()))
    finally:
        node.stop()


def test_workers_stop_when_the_parent_is_killed(rabbit_node: Cluster,
                                                tmp_path: Path) -> None:
    node = GatewayNode(rabbit_node, tmp_path / "gw", workers=2).start()
    try:
        assert node.process is not None
        node.process.kill()
        node.process.wait(TIMEOUT)
        wait_gone(list(node.workers.values()))
    finally:
        node.stop()


def serve(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "serve", "--data-dir",
                           str(tmp_path), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


def test_two_workers_with_the_embedded_backend_are_refused(tmp_path: Path) -> None:
    done = serve("--workers", "2", "--mqtt-port", "0", tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "more than one worker needs backend \"rabbitmq\"" in done.stderr
    assert "embedded nodes each keep their own store" in done.stderr


def test_workers_that_cannot_start_fail_the_start(tmp_path: Path) -> None:
    port = free_port()
    done = serve("--backend", "rabbitmq", "--upstream", f"amqp://u:p@127.0.0.1:{port}/%2F",
                 "--upstream-management", f"http://u:p@127.0.0.1:{port}", "--workers", "2",
                 "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "off",
                 tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "backend rabbitmq: no upstream node answered" in done.stderr
    assert "did not start (exit status 1): stopping the other workers" in done.stderr
    assert not (tmp_path / "ctl.sock").exists()


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = serve("--backend", "rabbitmq", "--upstream", "amqp://u:p@127.0.0.1:1/%2F",
                     "--upstream-management", "http://u:p@127.0.0.1:1", "--workers", "2",
                     "--host", "127.0.0.1", "--mqtt-port", str(port), "--stomp-port", "0",
                     "--http-port", "off", tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"MQTT listener: 127.0.0.1:{port} is in use" in done.stderr
    assert "worker 0 started" not in done.stderr
