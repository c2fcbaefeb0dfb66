"""Benchmark client processes: one publisher or one consumer per OS process.

bench/run.py starts these as subprocesses so that publisher and consumer each have their own
Python interpreter (and their own core, when there is one free) instead of sharing one GIL.

    python bench/clients.py consume --port P --queue Q --messages N --client pika|raw ...
    python bench/clients.py publish --port P --queue Q --messages N --client pika|raw ...

The consumer prints the line ``ready`` once its consumer is registered (consume-ok), then one
JSON line with its results. The publisher prints one JSON line. Timestamps are
``time.monotonic()``, which on Linux is CLOCK_MONOTONIC, one clock for every process on the
machine, so the runner can subtract the publisher's first-publish time from the consumer's
last-message time.

Two clients:

* ``pika``: pika's BlockingConnection, the API most Python users run. One ``basic_publish``
  per message (pika flushes the socket on each), ``basic_consume`` with a callback, one
  ``basic_ack`` per message in manual-ack mode. BlockingConnection can only wait for each
  publisher confirm before the next publish, so confirms in batches (the default) use pika's
  asynchronous SelectConnection; ``--confirm-batch 1`` uses BlockingConnection.
* ``raw``: a plain socket client. The handshake is encoded and decoded with pamqp; after
  that the publisher sends pre-encoded frames (the three frames of one message are encoded
  once and repeated), and the consumer walks frame headers with ``struct`` instead of
  decoding every frame, acknowledging with one ``multiple=True`` ack per socket read. It
  costs a few microseconds of Python per message, so it can push a broker much harder than
  pika can. With confirms it publishes a batch, then waits for the batch to be confirmed.

Every loop is bounded by a message count and by a wall-clock deadline (``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
BASIC_DELIVER = (60, 60)
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
BASIC_RETURN = (60, 50)
CONNECTION_CLOSE = (10, 50)
CONNECTION_BLOCKED = (10, 60)
CHANNEL_CLOSE = (20, 40)

_HDR = struct.Struct(">BHI")
_CM = struct.Struct(">HH")
_U64 = struct.Struct(">Q")


class BenchError(Exception):
    pass


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- pika client


def _pika_connect(args):
    import pika

    params = pika.ConnectionParameters(
        host=args.host,
        port=args.port,
        virtual_host="/",
        credentials=pika.PlainCredentials(args.user, args.password),
        blocked_connection_timeout=args.timeout,
        socket_timeout=10,
        stack_timeout=30,
    )
    return pika.BlockingConnection(params)


def pika_consume(args) -> dict:
    conn = _pika_connect(args)
    ch = conn.channel()
    manual = args.ack == "manual"
    if manual:
        ch.basic_qos(prefetch_count=args.prefetch)
    target = args.messages
    st = {"n": 0, "first": None, "last": None}
    clock = time.monotonic

    def on_message(channel, method, properties, body):
        now = clock()
        if st["first"] is None:
            st["first"] = now
        st["n"] += 1
        st["last"] = now
        if manual:
            channel.basic_ack(method.delivery_tag)
        if st["n"] >= target:
            channel.stop_consuming()

    ch.basic_consume(args.queue, on_message, auto_ack=not manual)
    print("ready", flush=True)
    cpu0 = time.process_time()
    deadline = clock() + args.timeout
    while st["n"] < target and clock() < deadline:
        conn.process_data_events(time_limit=0.2)
    cpu = time.process_time() - cpu0
    try:
        conn.close()
    except Exception:
        pass
    return {
        "role": "consume",
        "client": "pika",
        "received": st["n"],
        "first": st["first"],
        "last": st["last"],
        "cpu": cpu,
    }


def _pika_properties(args):
    """delivery_mode 2 with --persistent, else none (pika's default properties)."""
    if not getattr(args, "persistent", False):
        return None
    import pika

    return pika.BasicProperties(delivery_mode=2)


def pika_publish(args) -> dict:
    if args.confirm and args.confirm_batch > 1:
        return pika_publish_confirm_batches(args)
    conn = _pika_connect(args)
    ch = conn.channel()
    if args.confirm:
        ch.confirm_delivery()  # each basic_publish now waits for its own confirm
    body = b"x" * args.size
    publish = ch.basic_publish
    queue = args.queue
    n = args.messages
    clock = time.monotonic
    deadline = clock() + args.timeout
    sent = 0
    props = _pika_properties(args)
    cpu0 = time.process_time()
    t0 = clock()
    while sent < n:
        publish("", queue, body, properties=props)
        sent += 1
        if not sent & 255 and clock() > deadline:
            break
    t1 = clock()
    cpu = time.process_time() - cpu0
    conn.close()
    return {
        "role": "publish",
        "client": "pika",
        "api": "BlockingConnection",
        "sent": sent,
        "confirmed": sent if args.confirm else None,
        "first": t0,
        "last": t1,
        "cpu": cpu,
        "confirm_batch": 1 if args.confirm else None,
    }


def pika_publish_confirm_batches(args) -> dict:
    """Publish a batch, wait until the broker has confirmed all of it, repeat.

    BlockingConnection can only wait for each confirm in turn, so batches use pika's
    asynchronous SelectConnection (its public callback API).
    """
    import pika

    n = args.messages
    batch = args.confirm_batch
    body = b"x" * args.size
    props = _pika_properties(args)
    queue = args.queue
    clock = time.monotonic
    deadline = clock() + args.timeout
    st = {"sent": 0, "confirmed": 0, "t0": None, "t1": None, "cpu": 0.0, "error": None}
    params = pika.ConnectionParameters(
        host=args.host,
        port=args.port,
        virtual_host="/",
        credentials=pika.PlainCredentials(args.user, args.password),
        socket_timeout=10,
        stack_timeout=30,
    )

    def finish(conn):
        if st["t1"] is None:
            st["t1"] = clock()
            st["cpu"] = time.process_time() - st["cpu0"] if st["t0"] is not None else 0.0
        if conn.is_open:
            conn.close()
        elif conn.is_closed:
            conn.ioloop.stop()

    def publish_batch(conn, ch):
        if clock() > deadline:
            finish(conn)
            return
        k = min(batch, n - st["sent"])
        for _ in range(k):
            ch.basic_publish("", queue, body, properties=props)
        st["sent"] += k

    def on_confirm(conn, ch, frame):
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            st["error"] = f"broker nacked delivery tag {m.delivery_tag}"
            finish(conn)
            return
        st["confirmed"] = m.delivery_tag if m.multiple else max(st["confirmed"], m.delivery_tag)
        if st["confirmed"] >= st["sent"]:
            if st["sent"] >= n:
                finish(conn)
            else:
                publish_batch(conn, ch)

    def on_confirm_mode(conn, ch):
        st["t0"] = clock()
        st["cpu0"] = time.process_time()
        publish_batch(conn, ch)

    def on_channel(conn, ch):
        ch.confirm_delivery(
            ack_nack_callback=lambda frame: on_confirm(conn, ch, frame),
            callback=lambda _frame: on_confirm_mode(conn, ch),
        )

    def on_open(conn):
        conn.channel(on_open_callback=lambda ch: on_channel(conn, ch))

    def on_open_error(conn, exc):
        st["error"] = f"connection failed: {exc!r}"
        conn.ioloop.stop()

    def on_closed(conn, reason):
        if st["t1"] is None and st["error"] is None:
            st["error"] = f"connection closed: {reason!r}"
        conn.ioloop.stop()

    conn = pika.SelectConnection(
        params,
        on_open_callback=on_open,
        on_open_error_callback=on_open_error,
        on_close_callback=on_closed,
    )
    conn.ioloop.call_later(args.timeout + 5, lambda: finish(conn))
    conn.ioloop.start()
    if st["error"]:
        raise BenchError(st["error"])
    return {
        "role": "publish",
        "client": "pika",
        "api": "SelectConnection",
        "sent": st["sent"],
        "confirmed": st["confirmed"],
        "first": st["t0"],
        "last": st["t1"],
        "cpu": st["cpu"],
        "confirm_batch": batch,
    }


# --------------------------------------------------------------------------- raw client


class RawConnection:
    """A minimal AMQP 0-9-1 client on a plain socket: handshake through pamqp, one channel."""

    def __init__(self, host: str, port: int, user: str, password: str, timeout: float):
        from pamqp import commands, frame, header

        self._commands = commands
        self._frame = frame
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(header.ProtocolHeader().marshal())
        self.expect(commands.Connection.Start)
        self.send(
            commands.Connection.StartOk(
                client_properties={"product": "gateway-bench", "capabilities": {}},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
                locale="en_US",
            ),
            0,
        )
        tune = self.expect(commands.Connection.Tune)
        frame_max = min(tune.frame_max or 131072, 131072)
        channel_max = min(tune.channel_max or 2047, 2047)
        self.send(
            commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max, heartbeat=0),
            0,
        )
        self.send(commands.Connection.Open(virtual_host="/"), 0)
        self.expect(commands.Connection.OpenOk)
        self.send(commands.Channel.Open(), 1)
        self.expect(commands.Channel.OpenOk)
        self.sock.settimeout(0.5)

    def send(self, value, channel: int) -> None:
        self.sock.sendall(self._frame.marshal(value, channel))

    def _recv_more(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise BenchError("connection closed by broker")
        self.buf += data

    def read_frame(self):
        while True:
            if len(self.buf) >= 7:
                _, _, size = _HDR.unpack_from(self.buf, 0)
                end = 7 + size + 1
                if len(self.buf) >= end:
                    raw = bytes(self.buf[:end])
                    del self.buf[:end]
                    _, channel, value = self._frame.unmarshal(raw)
                    return channel, value
            self._recv_more()

    def expect(self, cls):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, value = self.read_frame()
            if isinstance(value, cls):
                return value
            name = getattr(value, "name", type(value).__name__)
            if name in ("Connection.Close", "Channel.Close"):
                raise BenchError(f"{name} {value.reply_code} {value.reply_text}")
        raise BenchError(f"timed out waiting for {cls.__name__}")

    def close(self) -> str | None:
        """Close the connection politely (Close, wait for CloseOk); an error text or None."""
        error = None
        try:
            self.sock.settimeout(5)
            self.send(
                self._commands.Connection.Close(
                    reply_code=200, reply_text="bye", class_id=0, method_id=0
                ),
                0,
            )
            deadline = time.monotonic() + 10
            while True:
                if time.monotonic() > deadline:
                    error = "no Connection.CloseOk in time"
                    break
                _, value = self.read_frame()
                if getattr(value, "name", "") == "Connection.CloseOk":
                    break
        except Exception as exc:
            error = f"close: {type(exc).__name__}: {exc}"
        finally:
            self.sock.close()
        return error


def _check_method(buf, pos: int) -> tuple[int, int]:
    cm = _CM.unpack_from(buf, pos + 7)
    if cm == CONNECTION_CLOSE or cm == CHANNEL_CLOSE:
        code = struct.unpack_from(">H", buf, pos + 11)[0]
        tlen = buf[pos + 13]
        text = bytes(buf[pos + 14 : pos + 14 + tlen]).decode("utf-8", "replace")
        raise BenchError(f"broker closed: {code} {text}")
    return cm


def raw_consume(args) -> dict:
    from pamqp import commands

    c = RawConnection(args.host, args.port, args.user, args.password, args.timeout)
    manual = args.ack == "manual"
    if manual:
        c.send(commands.Basic.Qos(prefetch_count=args.prefetch), 1)
        c.expect(commands.Basic.QosOk)
    c.send(commands.Basic.Consume(queue=args.queue, consumer_tag="bench", no_ack=not manual), 1)
    c.expect(commands.Basic.ConsumeOk)
    print("ready", flush=True)

    target = args.messages
    clock = time.monotonic
    deadline = clock() + args.timeout
    sock = c.sock
    buf = c.buf
    n = 0
    first = last = None
    remaining = -1  # body bytes still expected for the current message, -1 = none
    last_tag = acked_tag = 0
    ack_head = _HDR.pack(FRAME_METHOD, 1, 13) + _CM.pack(*BASIC_ACK)
    ack_tail = b"\x01\xce"  # multiple=True, frame end
    cpu0 = time.process_time()
    while n < target:
        if clock() > deadline:
            break
        try:
            data = sock.recv(262144)
        except TimeoutError:
            continue
        if not data:
            raise BenchError("connection closed by broker")
        buf += data
        pos = 0
        blen = len(buf)
        done_before = n
        while blen - pos >= 7:
            ftype, _, size = _HDR.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > blen:
                break
            if ftype == FRAME_BODY:
                remaining -= size
                if remaining == 0:
                    n += 1
                    remaining = -1
            elif ftype == FRAME_HEADER:
                remaining = _U64.unpack_from(buf, pos + 11)[0]
                if remaining == 0:
                    n += 1
                    remaining = -1
            elif ftype == FRAME_METHOD:
                cm = _check_method(buf, pos)
                if cm == BASIC_DELIVER and manual:
                    clen = buf[pos + 11]
                    last_tag = _U64.unpack_from(buf, pos + 12 + clen)[0]
            pos = end
        del buf[:pos]
        if n != done_before:
            now = clock()
            if first is None:
                first = now
            last = now
        if manual and last_tag > acked_tag:
            sock.sendall(ack_head + _U64.pack(last_tag) + ack_tail)
            acked_tag = last_tag
    cpu = time.process_time() - cpu0
    close_error = c.close()
    return {
        "role": "consume",
        "client": "raw",
        "close_error": close_error,
        "received": n,
        "first": first,
        "last": last,
        "cpu": cpu,
    }


def raw_publish(args) -> dict:
    from pamqp import body, commands, header

    c = RawConnection(args.host, args.port, args.user, args.password, args.timeout)
    payload = b"x" * args.size
    one = (
        c._frame.marshal(commands.Basic.Publish(exchange="", routing_key=args.queue), 1)
        + c._frame.marshal(header.ContentHeader(0, len(payload), commands.Basic.Properties(
            delivery_mode=2 if args.persistent else None)), 1)
        + (c._frame.marshal(body.ContentBody(payload), 1) if payload else b"")
    )
    n = args.messages
    clock = time.monotonic
    deadline = clock() + args.timeout
    sock = c.sock
    sent = 0
    confirmed = 0
    if args.confirm:
        c.send(commands.Confirm.Select(), 1)
        c.expect(commands.Confirm.SelectOk)
        batch_n = max(1, args.confirm_batch)
        batch = one * batch_n
        buf = c.buf
        sock.settimeout(0.5)
        cpu0 = time.process_time()
        t0 = clock()
        while sent < n and clock() < deadline:
            k = min(batch_n, n - sent)
            sock.settimeout(max(1.0, deadline - clock()))
            sock.sendall(batch if k == batch_n else one * k)
            sock.settimeout(0.5)
            sent += k
            while confirmed < sent and clock() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    raise BenchError("connection closed by broker")
                buf += data
                pos = 0
                blen = len(buf)
                while blen - pos >= 7:
                    ftype, _, size = _HDR.unpack_from(buf, pos)
                    end = pos + 8 + size
                    if end > blen:
                        break
                    if ftype == FRAME_METHOD:
                        cm = _check_method(buf, pos)
                        if cm == BASIC_ACK or cm == BASIC_NACK:
                            tag = _U64.unpack_from(buf, pos + 11)[0]
                            multiple = buf[pos + 19] & 1
                            if cm == BASIC_NACK:
                                raise BenchError(f"broker nacked delivery tag {tag}")
                            confirmed = tag if multiple else max(confirmed, tag)
                    pos = end
                del buf[:pos]
        t1 = clock()
    else:
        chunk_n = 64
        chunk = one * chunk_n
        # a broker applying flow control stops reading: sendall then waits, up to the deadline
        sock.settimeout(max(1.0, args.timeout))
        cpu0 = time.process_time()
        t0 = clock()
        while sent < n:
            k = min(chunk_n, n - sent)
            sock.sendall(chunk if k == chunk_n else one * k)
            sent += k
            if not sent & 8191 and clock() > deadline:
                break
        t1 = clock()
    cpu = time.process_time() - cpu0
    close_error = c.close()
    return {
        "role": "publish",
        "client": "raw",
        "close_error": close_error,
        "sent": sent,
        "confirmed": confirmed if args.confirm else None,
        "first": t0,
        "last": t1,
        "cpu": cpu,
        "confirm_batch": args.confirm_batch if args.confirm else None,
    }


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", choices=["publish", "consume"])
    p.add_argument("--client", choices=["pika", "raw"], default="pika")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="guest")
    p.add_argument("--password", default="guest")
    p.add_argument("--queue", required=True)
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--ack", choices=["auto", "manual"], default="auto")
    p.add_argument("--prefetch", type=int, default=100)
    p.add_argument("--confirm", action="store_true")
    p.add_argument("--confirm-batch", type=int, default=100)
    p.add_argument("--persistent", action="store_true", help="publish with delivery_mode 2")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    fn = {
        ("pika", "consume"): pika_consume,
        ("pika", "publish"): pika_publish,
        ("raw", "consume"): raw_consume,
        ("raw", "publish"): raw_publish,
    }[(args.client, args.role)]
    try:
        result = fn(args)
    except Exception as exc:  # reported to the runner, which marks the run failed
        emit({"role": args.role, "client": args.client, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
