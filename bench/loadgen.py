"""The suite's load generator: one process, one thread, every connection of a run in one
non-blocking selector loop (publishers, consumers, and the 10,000 idle connections).

    python bench/loadgen.py '<JSON spec>'       # prints one JSON result line

It does each protocol's real handshake and declarations (AMQP frames marshalled and read back
with pamqp; MQTT and STOMP packets are short enough to build with struct), then stops
decoding: a publisher writes one message's frames encoded once, repeated into batches of
about 256 KiB per send; a consumer counts deliveries by walking frame boundaries only (AMQP:
the 7-byte frame header, counting body frames; MQTT: the fixed header's remaining length;
STOMP: the NUL that ends each frame, the bodies holding none) and acknowledges in bulk (one
AMQP `multiple` ack per read, delivery tags being the channel's running count). So the
generator spends a fraction of a microsecond per message and the broker sets the pace; the
suite shows the generator's own ceiling against bench/sink.py, a server that only discards
publishes or streams pre-encoded deliveries.

Hand-written rather than a client library because no client library sends pre-encoded
batches or counts without decoding; pamqp still encodes every AMQP frame we send.

Every loop is bounded: a run ends when the expected deliveries have arrived, when nothing
arrived for `idle_end` seconds after the publishers finished (a broker that drops QoS 0
messages), or at `deadline` seconds, whichever is first; the result says which.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
from typing import Any

from pamqp import commands
from pamqp import frame as amqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader

BATCH_BYTES = 256 * 1024
READ = 1 << 20
_AMQP_HDR = struct.Struct(">BHI")
_U64 = struct.Struct(">Q")
clock = time.perf_counter


class GenError(Exception):
    pass


# ------------------------------------------------------------------ encoders (also for sink)


def amqp_publish_frames(exchange: str, key: str, body: bytes, persistent: bool) -> bytes:
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
    return (
        amqp_frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=key), 1)
        + amqp_frame.marshal(ContentHeader(0, len(body), props), 1)
        + amqp_frame.marshal(ContentBody(body), 1)
    )


def amqp_deliver_frames(body: bytes, tag: int = 1) -> bytes:
    return (
        amqp_frame.marshal(commands.Basic.Deliver("ctag", tag, False, "", "q"), 1)
        + amqp_frame.marshal(ContentHeader(0, len(body), commands.Basic.Properties()), 1)
        + amqp_frame.marshal(ContentBody(body), 1)
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _mstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def mqtt_connect(client_id: str, keepalive: int = 60,
                 login: tuple[str, str] | None = None) -> bytes:
    """CONNECT, clean session; anonymous unless `login` (user name, password) is given."""
    flags, tail = 0x02, _mstr(client_id)
    if login:
        flags |= 0xC0
        tail += _mstr(login[0]) + _mstr(login[1])
    return mqtt_packet(0x10, _mstr("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive)
                       + tail)


def mqtt_publish(topic: str, payload: bytes, qos: int, pid: int = 0) -> bytes:
    return mqtt_packet(0x30 | (qos << 1),
                       _mstr(topic) + (struct.pack(">H", pid) if qos else b"") + payload)


def stomp_send(dest: str, body: bytes) -> bytes:
    return (f"SEND\ndestination:{dest}\ncontent-length:{len(body)}\n\n".encode() + body
            + b"\x00")


def stomp_message(dest: str, body: bytes) -> bytes:
    return (f"MESSAGE\ndestination:{dest}\nmessage-id:m-1\nsubscription:0\n"
            f"content-length:{len(body)}\n\n".encode() + body + b"\x00")


def payload(size: int) -> bytes:
    """A body with no NUL (STOMP consumers count NULs) and no frame-end octet."""
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


# ------------------------------------------------------------------ blocking handshakes


class Blocking:
    """A socket used synchronously during set-up, then handed to the loop."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def recv_more(self) -> None:
        data = self.sock.recv(READ)
        if not data:
            raise GenError("connection closed by the broker during set-up")
        self.buf += data


class AmqpSetup(Blocking):
    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout)
        self.sock.sendall(amqp_frame.marshal(ProtocolHeader(), 0))
        self.expect(commands.Connection.Start)
        self.send(commands.Connection.StartOk(
            client_properties={"product": "gateway-bench"}, mechanism="PLAIN",
            response="\0guest\0guest", locale="en_US"), 0)
        tune = self.expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or 131072
        self.send(commands.Connection.TuneOk(channel_max=tune.channel_max or 2047,
                                             frame_max=self.frame_max, heartbeat=0), 0)
        self.send(commands.Connection.Open(virtual_host="/"), 0)
        self.expect(commands.Connection.OpenOk)
        self.send(commands.Channel.Open(), 1)
        self.expect(commands.Channel.OpenOk)

    def send(self, method: Any, channel: int = 1) -> None:
        self.sock.sendall(amqp_frame.marshal(method, channel))

    def expect(self, cls: type) -> Any:
        while True:
            while len(self.buf) < 7 or len(self.buf) < 8 + _AMQP_HDR.unpack_from(self.buf)[2]:
                self.recv_more()
            used, _ch, value = amqp_frame.unmarshal(bytes(self.buf))
            del self.buf[:used]
            if isinstance(value, cls):
                return value
            if isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                raise GenError(f"broker closed: {value.reply_code} {value.reply_text}")


class MqttSetup(Blocking):
    def __init__(self, host: str, port: int, timeout: float, client_id: str,
                 login: tuple[str, str] | None = None) -> None:
        super().__init__(host, port, timeout)
        self.sock.sendall(mqtt_connect(client_id, login=login))
        first, body = self.packet()
        if first >> 4 != 2 or body[1] != 0:
            raise GenError(f"CONNACK refused: {bytes(body)!r}")

    def packet(self) -> tuple[int, bytes]:
        while True:
            buf = self.buf
            if len(buf) >= 2:
                length, shift, i = 0, 0, 1
                while i < len(buf):
                    b = buf[i]
                    length |= (b & 0x7F) << shift
                    i += 1
                    if not b & 0x80:
                        break
                    shift += 7
                else:
                    self.recv_more()
                    continue
                if i + length <= len(buf):
                    first, body = buf[0], bytes(buf[i:i + length])
                    del buf[:i + length]
                    return first, body
            self.recv_more()

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.sock.sendall(mqtt_packet(0x82, b"\x00\x01" + _mstr(topic_filter) + bytes([qos])))
        while True:
            first, body = self.packet()
            if first >> 4 == 9:
                if body[2] & 0x80:
                    raise GenError(f"SUBSCRIBE refused for {topic_filter}")
                return


class StompSetup(Blocking):
    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout)
        self.sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\n"
                          b"passcode:guest\nheart-beat:0,0\n\n\x00")
        frame = self.frame()
        if not frame.startswith(b"CONNECTED"):
            raise GenError(f"STOMP CONNECT refused: {frame[:200]!r}")

    def frame(self) -> bytes:
        while True:
            buf = self.buf.lstrip(b"\r\n")
            end = buf.find(b"\x00")
            if end >= 0:
                self.buf = bytearray(buf[end + 1:])
                if buf.startswith(b"ERROR"):
                    raise GenError(f"STOMP ERROR: {bytes(buf[:300])!r}")
                return bytes(buf[:end])
            self.buf = bytearray(buf)
            self.recv_more()


# ------------------------------------------------------------------ the loop


class Peer:
    """One connection in the loop. Subclasses count and acknowledge what they read."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        sock.setblocking(False)
        self.out = bytearray()
        self.leftover = bytearray(leftover)
        self.closed = False

    def on_data(self, data: bytes) -> None:
        pass

    def refill(self) -> None:
        pass


class Publisher(Peer):
    def __init__(self, sock: socket.socket, unit: bytes, total: int, window: int = 0,
                 units: list[bytes] | None = None, leftover: bytes = b"") -> None:
        super().__init__(sock, leftover)
        self.unit = unit
        self.per_batch = max(1, BATCH_BYTES // max(1, len(unit)))
        self.batch = unit * self.per_batch
        self.total = total
        self.sent = 0
        self.acked = 0
        self.window = window  # 0 = no window (no confirms)
        self.units = units  # per-message frames (MQTT QoS 1 packet ids), cycled
        self.first_send = 0.0

    def refill(self) -> None:
        if self.out or self.sent >= self.total:
            return
        n = min(self.per_batch, self.total - self.sent)
        if self.window:
            n = min(n, self.window - (self.sent - self.acked))
            if n <= 0:
                return
        if self.units is not None:
            k = len(self.units)
            start = self.sent % k
            chunk = self.units[start:start + n]
            if len(chunk) < n:
                chunk += self.units[: n - len(chunk)]
            self.out += b"".join(chunk)
        elif n == self.per_batch:
            self.out += self.batch
        else:
            self.out += self.unit * n
        self.sent += n


class AmqpConfirmPublisher(Publisher):
    """Reads basic.ack frames: `acked` = highest delivery tag confirmed (in order)."""

    def on_data(self, data: bytes) -> None:
        buf = self.leftover
        buf += data
        pos, n = 0, len(buf)
        while pos + 7 <= n:
            ftype, _ch, size = _AMQP_HDR.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > n:
                break
            if ftype == 1 and buf[pos + 7:pos + 11] == b"\x00\x3c\x00\x50":
                tag = _U64.unpack_from(buf, pos + 11)[0]
                if tag > self.acked:
                    self.acked = tag
            elif ftype == 1 and buf[pos + 7:pos + 11] == b"\x00\x3c\x00\x78":
                raise GenError("broker nacked a publish")
            elif ftype == 1 and buf[pos + 7:pos + 9] in (b"\x00\x0a", b"\x00\x14"):
                raise GenError(f"broker closed the channel/connection: {bytes(buf[pos:end])!r}")
            pos = end
        del buf[:pos]


class MqttAckPublisher(Publisher):
    """Its socket carries only PUBACKs (4 bytes each)."""

    def on_data(self, data: bytes) -> None:
        self.leftover += data
        k = len(self.leftover) // 4
        self.acked += k
        del self.leftover[: 4 * k]


class Consumer(Peer):
    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        super().__init__(sock, leftover)
        self.received = 0
        self.last = 0.0
        self.latencies: list[int] | None = None


class AmqpConsumer(Consumer):
    def __init__(self, sock: socket.socket, manual: bool, leftover: bytes = b"") -> None:
        super().__init__(sock, leftover)
        self.manual = manual

    def on_data(self, data: bytes) -> None:
        buf = self.leftover
        buf += data
        pos, n, got = 0, len(buf), 0
        lat = self.latencies
        while pos + 7 <= n:
            ftype, _ch, size = _AMQP_HDR.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > n:
                break
            if ftype == 3:
                got += 1
                if lat is not None:
                    lat.append(time.perf_counter_ns() - _U64.unpack_from(buf, pos + 7)[0])
            elif ftype == 1 and buf[pos + 7:pos + 9] in (b"\x00\x0a", b"\x00\x14"):
                raise GenError(f"broker closed the channel/connection: {bytes(buf[pos:end])!r}")
            pos = end
        del buf[:pos]
        if got:
            self.received += got
            self.last = clock()
            if self.manual:
                self.out += amqp_frame.marshal(
                    commands.Basic.Ack(delivery_tag=self.received, multiple=True), 1)


class MqttConsumer(Consumer):
    def __init__(self, sock: socket.socket, qos: int, leftover: bytes = b"") -> None:
        super().__init__(sock, leftover)
        self.qos = qos

    def on_data(self, data: bytes) -> None:
        buf = self.leftover
        buf += data
        pos, n, got = 0, len(buf), 0
        qos, lat = self.qos, self.latencies
        acks = self.out
        while pos + 2 <= n:
            first = buf[pos]
            b = buf[pos + 1]
            if b < 0x80:
                length, i = b, pos + 2
            else:
                length, shift, i = 0, 0, pos + 1
                while i < n:
                    b = buf[i]
                    length |= (b & 0x7F) << shift
                    i += 1
                    if not b & 0x80:
                        break
                    shift += 7
                else:
                    break
            end = i + length
            if end > n:
                break
            if first >> 4 == 3:
                got += 1
                if qos or lat is not None:
                    tlen = (buf[i] << 8) | buf[i + 1]
                    p = i + 2 + tlen
                    if first & 0x06:
                        acks += b"\x40\x02"
                        acks += buf[p:p + 2]
                        p += 2
                    if lat is not None:
                        lat.append(time.perf_counter_ns() - _U64.unpack_from(buf, p)[0])
            pos = end
        del buf[:pos]
        if got:
            self.received += got
            self.last = clock()


class StompConsumer(Consumer):
    def on_data(self, data: bytes) -> None:
        got = data.count(b"\x00")
        if got:
            self.received += got
            self.last = clock()


class Idle(Peer):
    def on_data(self, data: bytes) -> None:
        pass


def run_loop(peers: list[Peer], publishers: list[Publisher], consumers: list[Consumer],
             expected: int, deadline: float, idle_end: float) -> str:
    """Drive all peers until `expected` deliveries, quiet after publishing, or deadline."""
    sel = selectors.DefaultSelector()
    by_fd: dict[int, Peer] = {}
    writing: set[int] = set()
    for p in peers:
        fd = p.sock.fileno()
        by_fd[fd] = p
        sel.register(fd, selectors.EVENT_READ)
    recv = {fd: p.sock.recv for fd, p in by_fd.items()}
    end_at = clock() + deadline
    for p in publishers:
        p.first_send = clock()
    status = "deadline"
    pubs_done_at = 0.0
    total = 0
    while True:
        now = clock()
        if now >= end_at:
            break
        # writes: try directly; register for EVENT_WRITE only when the socket is full
        for p in peers:
            p.refill()
            if p.out:
                fd = p.sock.fileno()
                if fd in writing:
                    continue
                try:
                    k = p.sock.send(p.out)
                except BlockingIOError:
                    k = 0
                except OSError as exc:
                    raise GenError(f"send failed: {exc}") from None
                del p.out[:k]
                if p.out:
                    writing.add(fd)
                    sel.modify(fd, selectors.EVENT_READ | selectors.EVENT_WRITE)
        total = sum(c.received for c in consumers)
        if total >= expected:
            status = "complete"
            break
        if not pubs_done_at and all(p.sent >= p.total and not p.out and
                                    (not p.window or p.acked >= p.total) for p in publishers):
            pubs_done_at = now
        if pubs_done_at:
            last = max([c.last for c in consumers] + [pubs_done_at])
            if now - last > idle_end:
                status = "quiet"
                break
        for key, ev in sel.select(timeout=0.05):
            fd = key.fd
            p = by_fd[fd]
            if ev & selectors.EVENT_READ:
                try:
                    data = recv[fd](READ)
                except BlockingIOError:
                    data = None
                except OSError as exc:
                    raise GenError(f"recv failed: {exc}") from None
                if data == b"":
                    raise GenError("the broker closed a connection during the run")
                if data:
                    p.on_data(data)
            if ev & selectors.EVENT_WRITE and fd in writing:
                try:
                    k = p.sock.send(p.out)
                except BlockingIOError:
                    k = 0
                del p.out[:k]
                if not p.out:
                    writing.discard(fd)
                    sel.modify(fd, selectors.EVENT_READ)
    sel.close()
    return status


# ------------------------------------------------------------------ scenarios


def percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[k] / 1000.0  # ns -> us


def amqp_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, tmo = spec["host"], spec["port"], spec["deadline"]
    size, n = spec["size"], spec["messages"]
    tag = spec["tag"]
    manual = spec.get("ack") == "manual"
    confirm = spec.get("confirm", False)
    persistent = spec.get("persistent", False)
    fanout = spec.get("fanout", 0)
    latency = spec.get("mode") == "latency"
    ctl = AmqpSetup(host, port, tmo)
    queues = [f"bench-{tag}-{i}" for i in range(max(1, fanout))]
    exchange = ""
    if fanout:
        exchange = f"bench-fan-{tag}"
        ctl.send(commands.Exchange.Declare(exchange=exchange, exchange_type="fanout",
                                           auto_delete=True))
        ctl.expect(commands.Exchange.DeclareOk)
    for q in queues:
        ctl.send(commands.Queue.Declare(queue=q, durable=persistent, auto_delete=True))
        ctl.expect(commands.Queue.DeclareOk)
        if fanout:
            ctl.send(commands.Queue.Bind(queue=q, exchange=exchange, routing_key=""))
            ctl.expect(commands.Queue.BindOk)
    consumers: list[Consumer] = []
    for q in queues:
        c = AmqpSetup(host, port, tmo)
        if manual:
            c.send(commands.Basic.Qos(prefetch_count=spec.get("prefetch", 100)))
            c.expect(commands.Basic.QosOk)
        c.send(commands.Basic.Consume(queue=q, consumer_tag="c", no_ack=not manual))
        c.expect(commands.Basic.ConsumeOk)
        consumers.append(AmqpConsumer(c.sock, manual, bytes(c.buf)))
    pubset = AmqpSetup(host, port, tmo)
    if confirm:
        pubset.send(commands.Confirm.Select())
        pubset.expect(commands.Confirm.SelectOk)
    key = "" if fanout else queues[0]
    body = payload(size)
    unit = amqp_publish_frames(exchange, key, body, persistent)
    expected = n * len(queues)
    if latency:
        return paced(spec, consumers, pubset.sock,
                     lambda ts: amqp_publish_frames(exchange, key,
                                                    _U64.pack(ts) + body[8:], persistent),
                     ctl.sock)
    pcls = AmqpConfirmPublisher if confirm else Publisher
    pub = pcls(pubset.sock, unit, n, window=spec.get("window", 1000) if confirm else 0,
               leftover=bytes(pubset.buf))
    result = measure(spec, [pub], consumers, expected)
    ctl.sock.close()
    return result


def mqtt_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, tmo = spec["host"], spec["port"], spec["deadline"]
    size, n, qos, tag = spec["size"], spec["messages"], spec.get("qos", 0), spec["tag"]
    nsub, npub = spec.get("subscribers", 1), spec.get("publishers", 1)
    topic = f"bench/{tag}/t"
    filt = f"bench/{tag}/+" if spec.get("wildcard") else topic
    login = (spec["login"][0], spec["login"][1]) if spec.get("login") else None
    consumers: list[Consumer] = []
    for i in range(nsub):
        s = MqttSetup(host, port, tmo, f"bs-{tag}-{i}", login)
        s.subscribe(filt, qos)
        consumers.append(MqttConsumer(s.sock, qos, bytes(s.buf)))
    body = payload(size)
    setups = [MqttSetup(host, port, tmo, f"bp-{tag}-{i}", login) for i in range(npub)]
    if spec.get("mode") == "latency":
        return paced(spec, consumers, setups[0].sock,
                     lambda ts: mqtt_publish(topic, _U64.pack(ts) + body[8:], qos, 1))
    per = [n // npub + (1 if i < n % npub else 0) for i in range(npub)]
    pubs: list[Publisher] = []
    for s, count in zip(setups, per, strict=True):
        if qos:
            units = [mqtt_publish(topic, body, qos, pid) for pid in range(1, 65536)]
            pubs.append(MqttAckPublisher(s.sock, units[0], count, window=spec.get("window", 100),
                                         units=units, leftover=bytes(s.buf)))
        else:
            pubs.append(Publisher(s.sock, mqtt_publish(topic, body, 0), count,
                                  leftover=bytes(s.buf)))
    return measure(spec, pubs, consumers, n * nsub)


def stomp_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, tmo = spec["host"], spec["port"], spec["deadline"]
    size, n, tag = spec["size"], spec["messages"], spec["tag"]
    dest = f"/queue/bench-{tag}"
    sub = StompSetup(host, port, tmo)
    sub.sock.sendall(f"SUBSCRIBE\ndestination:{dest}\nid:0\nack:auto\nreceipt:r\n\n\x00"
                     .encode())
    if not sub.frame().startswith(b"RECEIPT"):
        raise GenError("SUBSCRIBE not confirmed")
    pub = StompSetup(host, port, tmo)
    consumer = StompConsumer(sub.sock, bytes(sub.buf))
    publisher = Publisher(pub.sock, stomp_send(dest, payload(size)), n, leftover=bytes(pub.buf))
    return measure(spec, [publisher], [consumer], n)


def sink_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    """Against bench/sink.py: publishers to its discard port, consumers to its stream port
    (it writes the protocol's pre-encoded deliveries, `messages` of them per connection)."""
    host, tmo = spec["host"], spec["deadline"]
    proto, size, n = spec["sink_proto"], spec["size"], spec["messages"]
    nsub, npub = spec.get("subscribers", 1), spec.get("publishers", 1)
    body = payload(size)
    unit = {"amqp": lambda: amqp_publish_frames("", "q", body, False),
            "mqtt": lambda: mqtt_publish("bench/t", body, 0),
            "stomp": lambda: stomp_send("/queue/x", body)}[proto]()
    per = [n // npub + (1 if i < n % npub else 0) for i in range(npub)]
    pubs = [Publisher(socket.create_connection((host, spec["discard_port"]), timeout=tmo),
                      unit, count) for count in per]
    consumers: list[Consumer] = []
    for _ in range(nsub):
        s = socket.create_connection((host, spec["stream_port"]), timeout=tmo)
        s.sendall(json.dumps({"proto": proto, "size": size, "messages": n}).encode() + b"\n")
        consumers.append({"amqp": lambda s=s: AmqpConsumer(s, False),
                          "mqtt": lambda s=s: MqttConsumer(s, 0),
                          "stomp": lambda s=s: StompConsumer(s)}[proto]())
    return measure(spec, pubs, consumers, n * nsub)


def measure(spec: dict[str, Any], pubs: list[Publisher], consumers: list[Consumer],
            expected: int) -> dict[str, Any]:
    peers: list[Peer] = [*pubs, *consumers]
    cpu0 = time.process_time()
    t0 = clock()
    status = run_loop(peers, pubs, consumers, expected, spec["deadline"],
                      spec.get("idle_end", 2.0))
    cpu = time.process_time() - cpu0
    received = sum(c.received for c in consumers)
    last = max(c.last for c in consumers) if received else clock()
    elapsed = max(1e-9, last - t0)
    for p in peers:
        p.sock.close()
    return {"ok": received > 0 and status != "deadline" or received >= expected,
            "status": status, "expected": expected, "received": received,
            "sent": sum(p.sent for p in pubs), "seconds": elapsed,
            "rate": received / elapsed, "gen_cpu": cpu / max(1e-9, clock() - t0)}


def paced(spec: dict[str, Any], consumers: list[Consumer], pub_sock: socket.socket,
          encode: Any, *extra: socket.socket) -> dict[str, Any]:
    """Send `messages` at `rate` a second, each stamped with perf_counter_ns; consumers
    record now - stamp per delivery."""
    rate, n = spec["rate"], spec["messages"]
    pub_sock.setblocking(False)
    for c in consumers:
        c.latencies = []
    sel = selectors.DefaultSelector()
    by_fd = {c.sock.fileno(): c for c in consumers}
    for fd in by_fd:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(pub_sock.fileno(), selectors.EVENT_READ)
    t0 = clock()
    end_at = t0 + spec["deadline"]
    sent = 0
    interval = 1.0 / rate
    quiet_from = 0.0
    while True:
        now = clock()
        if now >= end_at:
            break
        while sent < n and now >= t0 + sent * interval:
            frame = encode(time.perf_counter_ns())
            pub_sock.setblocking(True)
            pub_sock.sendall(frame)
            pub_sock.setblocking(False)
            sent += 1
            now = clock()
        got = sum(c.received for c in consumers)
        if got >= n * len(consumers):
            break
        if sent >= n:
            quiet_from = quiet_from or now
            if now - max([quiet_from] + [c.last for c in consumers]) > spec.get("idle_end", 2):
                break
        timeout = max(0.0, t0 + sent * interval - clock()) if sent < n else 0.05
        for key, _ev in sel.select(timeout=timeout):
            if key.fd == pub_sock.fileno():
                try:
                    pub_sock.recv(READ)  # acks / confirms: not counted here
                except BlockingIOError:
                    pass
                continue
            c = by_fd[key.fd]
            try:
                data = c.sock.recv(READ)
            except BlockingIOError:
                continue
            if not data:
                raise GenError("the broker closed a connection during the run")
            c.on_data(data)
    sel.close()
    lat = sorted(x for c in consumers for x in (c.latencies or []))
    elapsed = clock() - t0
    for s in [pub_sock, *(c.sock for c in consumers), *extra]:
        s.close()
    received = sum(c.received for c in consumers)
    return {"ok": received >= n * len(consumers), "status": "paced", "expected": n,
            "received": received, "sent": sent, "seconds": elapsed, "rate": received / elapsed,
            "p50_us": percentile(lat, 0.50), "p99_us": percentile(lat, 0.99),
            "max_us": lat[-1] / 1000.0 if lat else None}


def idle_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    """Open `connections` MQTT connections (CONNECT/CONNACK each), print a `ready` line,
    hold them until a line on stdin (or `hold` seconds), then close them."""
    host, port, total = spec["host"], spec["port"], spec["connections"]
    tag = spec["tag"]
    sel = selectors.DefaultSelector()
    pending: dict[int, tuple[socket.socket, bytearray]] = {}
    open_socks: list[socket.socket] = []
    t0 = clock()
    end_at = t0 + spec["deadline"]
    started = 0
    while len(open_socks) < total:
        if clock() > end_at:
            raise GenError(f"only {len(open_socks)} of {total} connections within the deadline")
        while started < total and len(pending) < 256:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, port))
            pending[s.fileno()] = (s, bytearray())
            sel.register(s.fileno(), selectors.EVENT_WRITE)
            started += 1
        for key, ev in sel.select(timeout=0.5):
            s, buf = pending[key.fd]
            if ev & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise GenError(f"connect failed: {os.strerror(err)}")
                s.send(mqtt_connect(f"idle-{tag}-{started}-{key.fd}", keepalive=0))
                sel.modify(key.fd, selectors.EVENT_READ)
                continue
            data = s.recv(64)
            if not data:
                raise GenError(f"broker closed connection {len(open_socks) + 1}")
            buf += data
            if len(buf) >= 4:
                if buf[0] >> 4 != 2 or buf[3] != 0:
                    raise GenError(f"CONNACK refused: {bytes(buf)!r}")
                sel.unregister(key.fd)
                del pending[key.fd]
                open_socks.append(s)
    took = clock() - t0
    sel.close()
    print(json.dumps({"ready": len(open_socks), "connect_seconds": took}), flush=True)
    import select as _select

    _select.select([sys.stdin], [], [], spec.get("hold", 60))
    for s in open_socks:
        s.close()
    return {"ok": True, "status": "idle", "connections": len(open_socks),
            "connect_seconds": took}


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return
        except (ValueError, OSError):
            continue


def main() -> int:
    spec = json.loads(sys.argv[1])
    raise_nofile()
    if spec.get("cpu") is not None:
        try:
            os.sched_setaffinity(0, {spec["cpu"]})
        except OSError:
            pass
    try:
        if spec["mode"] == "idle":
            result = idle_scenario(spec)
        elif spec["proto"] == "sink":
            result = sink_scenario(spec)
        else:
            result = {"amqp": amqp_scenario, "mqtt": mqtt_scenario,
                      "stomp": stomp_scenario}[spec["proto"]](spec)
    except (GenError, OSError) as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
