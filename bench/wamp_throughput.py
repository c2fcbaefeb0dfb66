"""WAMP publish -> subscribe throughput: gateway against crossbar, side by side.

Each router runs as a child process on a free loopback port. The same autobahn-python
(asyncio) client runs against each: one session subscribes, another publishes N events in
windows of W (the publisher waits until the subscriber has the whole window, so no router
has to buffer or drop events and every event is counted), and the rate is N divided by the
time from the first publish to the last event received. A warm-up window goes first. The
report gives the median of R runs per router and the ratio gateway / crossbar.

    .venv/bin/python bench/wamp_throughput.py                    # both routers
    .venv/bin/python bench/wamp_throughput.py --only gateway     # no crossbar needed
    .venv/bin/python bench/wamp_throughput.py --crossbar /path/to/venv/bin/crossbar

crossbar comes from PyPI (`pip install crossbar` into a virtualenv of its own: its
dependencies do not mix with the project's); `--crossbar` names its executable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"router exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {deadline} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def gateway_router() -> Iterator[tuple[str, str]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        # both routers let the clients in anonymously, as crossbar's config below does
        config = Path(tmp) / "gateway.toml"
        config.write_text("[wamp]\nallow_anonymous = true\n")
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
               "--amqp-port", "off", "--mqtt-port", "off", "--stomp-port", "off",
               "--http-port", str(port), "--data-dir", str(Path(tmp) / "data"),
               "--config", str(config)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc, START_TIMEOUT)
            yield f"ws://127.0.0.1:{port}/ws", "/"
        finally:
            stop(proc)


def crossbar_config(port: int) -> dict[str, Any]:
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
            {"uri": "", "match": "prefix", "allow": allow,
             "disclose": {"caller": False, "publisher": False}, "cache": True}]}]}],
        "transports": [{"type": "websocket",
                        "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                        "serializers": ["json", "msgpack"]}],
    }]}


@contextmanager
def crossbar_router(executable: str) -> Iterator[tuple[str, str]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cbdir = Path(tmp) / ".crossbar"
        cbdir.mkdir()
        (cbdir / "config.json").write_text(json.dumps(crossbar_config(port)))
        proc = subprocess.Popen([executable, "start", "--cbdir", str(cbdir)], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc, START_TIMEOUT)
            yield f"ws://127.0.0.1:{port}/ws", "realm1"
        finally:
            stop(proc)


async def join(url: str, realm: str, serializer: str) -> Any:
    from autobahn.asyncio.wamp import ApplicationSession
    from autobahn.asyncio.websocket import WampWebSocketClientFactory
    from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
    from autobahn.wamp.types import ComponentConfig

    loop = asyncio.get_running_loop()
    joined: asyncio.Future[Any] = loop.create_future()

    class Session(ApplicationSession):  # type: ignore[misc]
        def onJoin(self, details: Any) -> None:
            joined.set_result(self)

    ser = {"json": JsonSerializer, "msgpack": MsgPackSerializer}[serializer]()
    factory = WampWebSocketClientFactory(lambda: Session(ComponentConfig(realm)), url=url,
                                         serializers=[ser])
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    await loop.create_connection(factory, "127.0.0.1", port)
    return await asyncio.wait_for(joined, 10)


async def one_run(url: str, realm: str, messages: int, window: int, size: int,
                  serializer: str, timeout: float) -> float:
    sub = await join(url, realm, serializer)
    pub = await join(url, realm, serializer)
    payload = "x" * size
    received = 0
    target = 0
    reached = asyncio.Event()

    def on_event(_: str) -> None:
        nonlocal received
        received += 1
        if received >= target:
            reached.set()

    topic = "bench.wamp.throughput"
    await sub.subscribe(on_event, topic)

    async def send(n: int) -> None:
        nonlocal target
        sent = 0
        while sent < n:
            batch = min(window, n - sent)
            target = received + batch
            reached.clear()
            for _ in range(batch):
                pub.publish(topic, payload)
            await asyncio.wait_for(reached.wait(), timeout)
            sent += batch

    await send(min(window, messages))  # warm-up
    start = time.perf_counter()
    await send(messages)
    elapsed = time.perf_counter() - start
    for s in (pub, sub):
        s.leave()
    await asyncio.sleep(0.1)
    return messages / elapsed


# -- the raw client: pre-encoded JSON frames over plain sockets, to load the router and not
# the client (autobahn-python spends more per message than either router)

def _frame(payload: bytes) -> bytes:
    """A masked client text frame with a zero mask key (XOR with zero leaves the payload)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class RawWamp:
    def __init__(self, url: str, realm: str) -> None:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send([1, realm, {"roles": {"publisher": {}, "subscriber": {}}}])
        assert self.recv()[0] == 2

    def send(self, msg: list[Any]) -> None:
        self.sock.sendall(_frame(json.dumps(msg).encode()))

    def _frames(self) -> Iterator[bytes]:
        while True:
            buf = self.buf
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                off = 2
                if n == 126:
                    n, off = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    n, off = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) >= off + n:
                    self.buf = buf[off + n:]
                    yield buf[off:off + n]
                    continue
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data

    def recv(self) -> Any:
        return json.loads(next(self._frames()))

    def count(self, n: int) -> None:
        """Read until `n` more frames came (events, the only thing sent to a subscriber)."""
        frames = self._frames()
        for _ in range(n):
            next(frames)


def raw_run(url: str, realm: str, messages: int, window: int, size: int) -> float:
    import threading

    sub, pub = RawWamp(url, realm), RawWamp(url, realm)
    topic = "bench.wamp.throughput"
    sub.send([32, 1, {}, topic])
    assert sub.recv()[0] == 33
    payload = "x" * size
    total = messages + window  # the first window warms up
    frames = [_frame(json.dumps([16, i + 1, {}, topic, [payload]]).encode())
              for i in range(total)]
    done = threading.Semaphore(0)

    def subscriber() -> None:
        sent = 0
        while sent < total:
            batch = min(window, total - sent)
            sub.count(batch)
            sent += batch
            done.release()

    t = threading.Thread(target=subscriber, daemon=True)
    t.start()
    start = 0.0
    for i, first in enumerate(range(0, total, window)):
        if i == 1:
            start = time.perf_counter()
        pub.sock.sendall(b"".join(frames[first:first + window]))
        if not done.acquire(timeout=60):
            raise TimeoutError("events did not arrive")
    elapsed = time.perf_counter() - start
    t.join(5)
    for c in (sub, pub):
        c.sock.close()
    return messages / elapsed


def measure(name: str, router: Any, args: argparse.Namespace) -> list[float]:
    rates = []
    with router as (url, realm):
        for i in range(args.runs):
            if args.client == "raw":
                rate = raw_run(url, realm, args.messages, args.window, args.size)
            else:
                rate = asyncio.run(one_run(url, realm, args.messages, args.window, args.size,
                                           args.serializer, args.timeout))
            rates.append(rate)
            print(f"  {name} run {i + 1}: {rate:,.0f} msg/s", file=sys.stderr)
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serializer", choices=["json", "msgpack"], default="json")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per window")
    ap.add_argument("--only", choices=["gateway", "crossbar"])
    ap.add_argument("--client", choices=["raw", "autobahn"], default="raw",
                    help="raw: pre-encoded JSON frames on plain sockets; autobahn: "
                         "autobahn-python (asyncio), which limits both routers itself")
    ap.add_argument("--crossbar", default=shutil.which("crossbar") or os.environ.get(
        "CROSSBAR", ""), help="crossbar executable")
    args = ap.parse_args()
    results: dict[str, float] = {}
    if args.only != "crossbar":
        results["gateway"] = statistics.median(measure("gateway", gateway_router(), args))
    if args.only != "gateway":
        if not args.crossbar:
            print("crossbar not found: pass --crossbar or use --only gateway", file=sys.stderr)
            return 1
        results["crossbar"] = statistics.median(
            measure("crossbar", crossbar_router(args.crossbar), args))
    serializer = "json" if args.client == "raw" else args.serializer
    print(f"WAMP publish -> subscribe, {args.client} client, {args.messages} x {args.size} B, "
          f"{serializer}, window {args.window}, median of {args.runs}:")
    for name, rate in results.items():
        print(f"  {name:9} {rate:>10,.0f} msg/s")
    if len(results) == 2:
        print(f"  gateway / crossbar = {results['gateway'] / results['crossbar']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
