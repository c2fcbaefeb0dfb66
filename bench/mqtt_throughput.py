"""MQTT throughput, 1 publisher -> 1 subscriber, QoS 0 and QoS 1, this broker beside
Mosquitto in the same run.

    .venv/bin/python bench/mqtt_throughput.py [--messages N] [--size BYTES]
        [--gateway-port P] [--mosquitto-port P] [--mosquitto PATH]

Without ports the script starts both brokers itself on free ports of 127.0.0.1 (the
gateway with a fresh data directory, Mosquitto with a config file in a temporary
directory, persistence off) and stops them by PID at the end. The clients are plain
sockets speaking MQTT 3.1.1 with a minimal framer (only the fixed header and the packet id
are read), so the clients cost little beside the broker. The publisher keeps at most
`--window` QoS 1 PUBLISHes unacknowledged (Mosquitto's default receive maximum is 20).
A figure is messages delivered to the subscriber per second, from the first PUBLISH
written to the last one received; each case runs `--rounds` times and the best is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import _mstr as _str  # noqa: E402  (the load generator's MQTT encoding)
from loadgen import mqtt_packet as _packet  # noqa: E402

DEADLINE = 120.0  # seconds one case may take before it is reported as failed


def connect_packet(client_id: str) -> bytes:
    return _packet(0x10, _str("MQTT") + b"\x04\x02\x00\x00" + _str(client_id))


def publish_packet(topic: str, payload: bytes, qos: int, pid: int) -> bytes:
    body = _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return _packet(0x30 | (qos << 1), body)


class Framer:
    """Splits a byte stream into (first byte, body) pairs."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        buf = self.buf
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            length, shift, i = 0, 0, pos + 1
            while i < len(buf):
                b = buf[i]
                length |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            else:
                break
            if i + length > len(buf):
                break
            out.append((buf[pos], bytes(buf[i:i + length])))
            pos = i + length
        del buf[:pos]
        return out


def _open(port: int, client_id: str) -> tuple[socket.socket, Framer]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id))
    framer = Framer()
    while True:
        packets = framer.feed(sock.recv(65536))
        if packets:
            first, body = packets[0]
            assert first >> 4 == 2 and body[1] == 0, f"CONNACK refused: {body!r}"
            return sock, framer


def run_case(port: int, qos: int, messages: int, size: int, window: int) -> float:
    topic = f"bench/{os.getpid()}/{qos}/{time.monotonic_ns()}"
    sub, sub_framer = _open(port, f"bench-sub-{time.monotonic_ns()}")
    sub.sendall(_packet(0x82, struct.pack(">H", 1) + _str(topic) + bytes([qos])))
    while not any(first >> 4 == 9 for first, _ in sub_framer.feed(sub.recv(65536))):
        pass
    pub, pub_framer = _open(port, f"bench-pub-{time.monotonic_ns()}")
    payload = os.urandom(size)
    received = 0
    done = threading.Event()
    finished_at = [0.0]

    def subscriber() -> None:
        nonlocal received
        while received < messages:
            data = sub.recv(1 << 20)
            if not data:
                break
            acks = bytearray()
            for first, body in sub_framer.feed(data):
                if first >> 4 == 3:
                    received += 1
                    if qos:
                        tlen = struct.unpack_from(">H", body)[0]
                        acks += b"\x40\x02" + body[2 + tlen:4 + tlen]
            if acks:
                sub.sendall(acks)
        finished_at[0] = time.perf_counter()
        done.set()

    reader = threading.Thread(target=subscriber, daemon=True)
    reader.start()
    start = time.perf_counter()
    if qos == 0:
        batch = publish_packet(topic, payload, 0, 0) * 500
        sent = 0
        while sent < messages:
            n = min(500, messages - sent)
            pub.sendall(batch if n == 500 else publish_packet(topic, payload, 0, 0) * n)
            sent += n
    else:
        outstanding = 0
        sent = 0
        while sent < messages:
            chunk = bytearray()
            while outstanding < window and sent < messages:
                sent += 1
                outstanding += 1
                chunk += publish_packet(topic, payload, 1, (sent - 1) % 65535 + 1)
            pub.sendall(chunk)
            for first, _ in pub_framer.feed(pub.recv(65536)):
                if first >> 4 == 4:
                    outstanding -= 1
    ok = done.wait(DEADLINE)
    for s in (sub, pub):
        try:
            s.sendall(b"\xe0\x00")
        except OSError:
            pass
        s.close()
    if not ok:
        raise RuntimeError(f"subscriber got {received} of {messages} within {DEADLINE} s")
    return messages / (finished_at[0] - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker pid {proc.pid} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # bounded polling for the listener, with a deadline
    raise RuntimeError(f"nothing listens on {port} after 20 s")


def start_brokers(tmp: Path, mosquitto: str) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    gw_port, mq_port = _free_port(), _free_port()
    data = tmp / "gateway-data"
    data.mkdir()
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--amqp-port", "0",
         "--mqtt-port", str(gw_port), "--stomp-port", "off", "--http-port", "off",
         "--data-dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {mq_port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nlog_dest none\n")
    mq = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    procs = [gw, mq]
    try:
        _wait_port(gw_port, gw)
        _wait_port(mq_port, mq)
    except BaseException:
        stop(procs)
        raise
    return procs, gw_port, mq_port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gateway-port", type=int)
    ap.add_argument("--mosquitto-port", type=int)
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    args = ap.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.gateway_port and args.mosquitto_port:
            ports = {"gateway": args.gateway_port, "mosquitto": args.mosquitto_port}
        else:
            procs, gw, mq = start_brokers(Path(tmp), args.mosquitto)
            ports = {"gateway": gw, "mosquitto": mq}
        try:
            print(f"{args.messages} messages of {args.size} bytes, 1 publisher -> "
                  f"1 subscriber, best of {args.rounds}")
            for qos in (0, 1):
                rates = {name: max(run_case(port, qos, args.messages, args.size,
                                            args.window) for _ in range(args.rounds))
                         for name, port in ports.items()}
                print(f"QoS {qos}: gateway {rates['gateway']:10.0f} msg/s   mosquitto "
                      f"{rates['mosquitto']:10.0f} msg/s   ratio "
                      f"{rates['gateway'] / rates['mosquitto']:.2f}")
        finally:
            stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
