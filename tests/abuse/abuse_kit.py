"""What every abuse test shares: the broker's small limits, a well-behaved pika stream
running alongside the attack, raw-socket helpers for clients that misbehave, and the
broker's memory as /proc reports it.

`SteadyStream` is the yardstick: one pika connection publishes a numbered, timestamped
message every `interval` seconds to a queue of its own while another consumes it (each in
a thread of its own). At the end it reports how many were published, how many arrived,
and the delivery latencies, so each attack can assert that the well-behaved consumer lost
nothing and stayed fast.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
from pamqp import commands, frame
from pamqp import heartbeat as pamqp_heartbeat

# Small limits, so that an attack reaches them in a fraction of a second. Tests add to it.
SMALL_LIMITS = """
[listeners]
web_stomp = 0
web_mqtt = 0

[store]
fsync = false

[amqp]
frame_max = 16384

[mqtt]
max_packet_size = 65536

[stomp]
max_frame_size = 65536

[limits]
max_message_size = 65536
websocket_max_message_size = 65536
connection_buffer = 65536
memory_high_watermark = 4000000
handshake_timeout = 1000
handshake_max_bytes = 16384
send_timeout = 1000
"""

LATENCY_BOUND = 1.0  # seconds: p99 of the well-behaved consumer, on a loaded 2-core machine
OUTPUT_LINES = 2000  # all the fixture keeps
PORTS = ("amqp", "mqtt", "stomp", "http", "web_stomp", "web_mqtt")


def config(extra: str = "", **limits: int) -> str:
    """SMALL_LIMITS with some keys changed (in whichever section has them), plus whole
    extra sections."""
    text = SMALL_LIMITS
    for key, value in limits.items():
        start = text.index(f"\n{key} = ") + 1
        end = text.index("\n", start)
        text = text[:start] + f"{key} = {value}" + text[end:]
    return text + extra


# ----------------------------------------------------------------- the well-behaved pair


@dataclass
class StreamResult:
    published: int
    received: int
    duplicates: int
    latencies: list[float] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.published - self.received

    @property
    def p99(self) -> float:
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class SteadyStream:
    """A pika publisher and a pika consumer on one queue, in two threads."""

    def __init__(self, url: str, queue: str, interval: float = 0.005) -> None:
        self.url = url
        self.queue = queue
        self.interval = interval
        self._stop = threading.Event()
        self._published = 0
        self._seen: set[int] = set()
        self._duplicates = 0
        self._latencies: list[float] = []
        self._errors: list[BaseException] = []
        self._consuming = threading.Event()
        setup = pika.BlockingConnection(pika.URLParameters(url))
        setup.channel().queue_declare(queue)
        setup.close()
        self._threads = [threading.Thread(target=self._guard(self._consume), daemon=True),
                         threading.Thread(target=self._guard(self._publish), daemon=True)]

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by result()
                self._errors.append(exc)
                self._stop.set()
        return run

    def __enter__(self) -> SteadyStream:
        self._threads[0].start()
        assert self._consuming.wait(10), "the well-behaved consumer did not start"
        self._threads[1].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _publish(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        next_at = time.monotonic()
        while not self._stop.is_set():
            body = struct.pack(">Qd", self._published, time.time())
            ch.basic_publish("", self.queue, body)
            self._published += 1
            next_at += self.interval
            conn.process_data_events(time_limit=max(0.0, next_at - time.monotonic()))
        conn.close()

    def _consume(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()

        def on_message(channel: Any, method: Any, _props: Any, body: bytes) -> None:
            seq, sent = struct.unpack(">Qd", body)
            self._latencies.append(time.time() - sent)
            if seq in self._seen:
                self._duplicates += 1
            self._seen.add(seq)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(self.queue, on_message)
        self._consuming.set()
        drain_until: float | None = None
        while True:
            conn.process_data_events(time_limit=0.05)
            if self._stop.is_set():
                # after the publisher stops: wait (bounded) for what it sent
                drain_until = drain_until or time.monotonic() + 15
                if len(self._seen) >= self._published or time.monotonic() > drain_until:
                    break
        conn.close()

    def result(self, at_least: int = 200) -> StreamResult:
        """Stop (once at least `at_least` messages were published, bounded) and report."""
        deadline = time.monotonic() + 20
        while self._published < at_least and time.monotonic() < deadline \
                and not self._stop.is_set():
            time.sleep(0.01)  # the stream runs on in its threads meanwhile
        self.__exit__()
        if self._errors:
            raise AssertionError(f"the well-behaved pair failed: {self._errors[0]!r}") \
                from self._errors[0]
        return StreamResult(self._published, len(self._seen), self._duplicates,
                            list(self._latencies))


def check_stream(result: StreamResult, figures: Callable[..., None], attack: str) -> None:
    """Record the pair's figures and assert that nothing was lost and latency held."""
    figures(attack, published=result.published, lost=result.lost,
            p99_ms=round(result.p99 * 1000, 1),
            max_ms=round(max(result.latencies, default=0) * 1000, 1))
    assert result.published >= 200, f"the well-behaved publisher sent only {result.published}"
    assert result.lost == 0, f"the well-behaved consumer lost {result.lost} messages"
    assert result.duplicates == 0
    assert result.p99 < LATENCY_BOUND, f"p99 latency {result.p99:.3f} s"


def still_serving(broker: Any, queue: str) -> None:
    """A new pika client can still declare, publish and get a message back, and the
    broker logged no traceback (a connection's failure is logged with one)."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=False)
    ch.basic_publish("", queue, b"still here")
    deadline = time.monotonic() + 10
    body = None
    while body is None and time.monotonic() < deadline:
        _, _, body = ch.basic_get(queue, auto_ack=True)
        if body is None:
            conn.process_data_events(time_limit=0.05)
    conn.close()
    assert body == b"still here"
    output = broker.output(OUTPUT_LINES)
    assert "Traceback" not in output, output


# ----------------------------------------------------------------- raw sockets


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, seconds: float = 10.0) -> tuple[bytes, bool]:
    """Everything the broker sends until it closes the socket (or `seconds` pass);
    returns (bytes, closed)."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def amqp_frames(data: bytes) -> list[tuple[int, Any]]:
    """Decode whole AMQP frames (channel, pamqp frame)."""
    frames = []
    while len(data) >= 8:
        size = struct.unpack(">I", data[3:7])[0] + 8
        if len(data) < size:
            break
        _, channel, value = frame.unmarshal(data[:size])
        frames.append((channel, value))
        data = data[size:]
    return frames


def amqp_login(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A raw AMQP connection, logged in as guest with channel 1 open."""
    sock = connect(port, rcvbuf)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    _expect(sock, commands.Connection.Start)
    sock.sendall(frame.marshal(commands.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest",
        locale="en_US"), 0))
    tune = _expect(sock, commands.Connection.Tune)
    sock.sendall(frame.marshal(commands.Connection.TuneOk(
        channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0))
    sock.sendall(frame.marshal(commands.Connection.Open("/"), 0))
    _expect(sock, commands.Connection.OpenOk)
    sock.sendall(frame.marshal(commands.Channel.Open(), 1))
    _expect(sock, commands.Channel.OpenOk)
    return sock


def _expect(sock: socket.socket, kind: type) -> Any:
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data += sock.recv(65536)
        for _, value in amqp_frames(data):
            if isinstance(value, pamqp_heartbeat.Heartbeat):
                continue
            assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
            return value
    raise AssertionError(f"no {kind.__name__} within 10 s")


def mqtt_connect_packet(version: int = 4, client_id: str = "abuser") -> bytes:
    """A CONNECT for MQTT 3.1.1 (4) or 5, clean session, no credentials."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT" + bytes([version, 0x02]) + b"\x00\x3c"
    if version == 5:
        body += b"\x00"  # no properties
    body += struct.pack(">H", len(cid)) + cid
    return bytes([0x10]) + remaining_length(len(body)) + body


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def websocket_upgrade(path: str = "/ws", subprotocol: str = "v12.stomp") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
            ).encode()


def websocket_open(port: int, subprotocol: str = "v12.stomp",
                   rcvbuf: int | None = None) -> socket.socket:
    """A raw WebSocket past its handshake (101 read)."""
    sock = connect(port, rcvbuf)
    sock.sendall(websocket_upgrade(subprotocol=subprotocol))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the WebSocket handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return sock


def websocket_frame_header(length: int, opcode: int = 2) -> bytes:
    """A masked client frame header announcing `length` payload bytes (mask key zero)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack(">H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack(">Q", length)
    return bytes([0x80 | opcode]) + size + b"\x00\x00\x00\x00"


def websocket_close_code(data: bytes) -> int | None:
    """The status code of the first close frame the server sent (unmasked), if any."""
    pos = 0
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length = struct.unpack(">H", data[pos:pos + 2])[0]
            pos += 2
        elif length == 127:
            length = struct.unpack(">Q", data[pos:pos + 8])[0]
            pos += 8
        if opcode == 8:
            return int(struct.unpack(">H", data[pos:pos + 2])[0]) if length >= 2 else None
        pos += length
    return None


# ----------------------------------------------------------------- the broker process


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc/PID/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def broker_pid(broker: Any) -> int:
    process = broker._process
    assert process is not None
    return int(process.pid)


@contextmanager
def bounded(seconds: float) -> Iterator[Callable[[], bool]]:
    """`with bounded(10) as more: while more(): ...` - a loop that stops in time."""
    deadline = time.monotonic() + seconds
    yield lambda: time.monotonic() < deadline
