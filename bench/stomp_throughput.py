"""STOMP throughput, gateway against RabbitMQ's STOMP plugin, side by side in one run.

One publisher SENDs N messages to `/queue/<name>`; one subscriber on the same destination
receives them (`ack:auto`, or `ack:client` with `prefetch-count` and a cumulative ACK every
half prefetch). Publisher and subscriber are separate processes speaking raw STOMP 1.2 over
sockets, so the client side costs the same for both brokers. The figure is messages per
second from the first SEND to the last MESSAGE; runs alternate between the brokers, and the
report gives the median of the runs, the ratio gateway / RabbitMQ, and each broker's CPU
time per message (less sensitive than msg/s to whatever else the machine is doing).

Run:  .venv/bin/python bench/stomp_throughput.py [--messages 50000] [--runs 3] [--size 100]
      [--ack auto,client] [--only gateway|rabbitmq] [--json]

RabbitMQ is a private node started by `bench/brokers.py` (its own node name, ports and
directories, stopped at the end), with the `rabbitmq_stomp` plugin enabled through the
environment and its STOMP listener on a free port of 127.0.0.1. gateway is
`python -m gateway serve` with its STOMP listener on a free port.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from brokers import LISTENER_RE, BrokerStartError, Gateway, RabbitMQ, any_free_port  # noqa: E402

from protocols.stomp.codec import StompCodec  # noqa: E402
from protocols.stomp.frames import NEED_DATA, Command, Frame  # noqa: E402

READ = 1 << 16
BATCH = 200  # SEND frames written per sendall
DEADLINE = 300.0  # seconds one run may take


class StompGateway(Gateway):
    """The gateway broker with its STOMP listener on a free port."""

    def command(self, data_dir: str) -> list[str]:
        cmd = super().command(data_dir)
        cmd[cmd.index("--stomp-port") + 1] = "0"
        return cmd

    @property
    def stomp_port(self) -> int:
        deadline = time.monotonic() + 10
        while "stomp" not in self._listeners and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._listeners["stomp"][1]


class StompRabbitMQ(RabbitMQ):
    """A private RabbitMQ node with the STOMP plugin listening on a free port."""

    def start(self) -> StompRabbitMQ:
        self.stomp_port = any_free_port()
        saved = {k: os.environ.get(k) for k in ("RABBITMQ_ENABLED_PLUGINS",
                                                 "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS")}
        os.environ["RABBITMQ_ENABLED_PLUGINS"] = "rabbitmq_stomp"
        os.environ["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = (
            f'-rabbitmq_stomp tcp_listeners [{{"127.0.0.1",{self.stomp_port}}}]')
        try:
            super().start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.stomp_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise BrokerStartError("rabbitmq: the STOMP listener did not open")


# -- raw STOMP clients ---------------------------------------------------------------------

class Wire:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.codec = StompCodec(max_frame_size=1 << 30, accept=frozenset(Command))
        self.sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\n"
                          b"passcode:guest\nheart-beat:0,0\n\n\x00")
        connected = self.frame()
        if connected.command is not Command.CONNECTED:
            raise RuntimeError(f"CONNECT refused: {connected.headers} {connected.body!r}")

    def frame(self) -> Frame:
        while True:
            event = self.codec.next_event()
            if event is NEED_DATA:
                data = self.sock.recv(READ)
                if not data:
                    raise RuntimeError("connection closed by the broker")
                self.codec.receive_data(data)
            elif isinstance(event, Frame):
                if event.command is Command.ERROR:
                    raise RuntimeError(f"ERROR {event.headers} {event.body!r}")
                return event

    def close(self) -> None:
        try:
            self.sock.sendall(b"DISCONNECT\n\n\x00")
        finally:
            self.sock.close()


def consumer(port: int, dest: str, n: int, ack: str, prefetch: int, ready: Any,
             out: Any) -> None:
    wire = Wire(port)
    headers = f"destination:{dest}\nid:0\nack:{ack}\nreceipt:sub\n"
    if ack != "auto":
        headers += f"prefetch-count:{prefetch}\n"
    wire.sock.sendall(f"SUBSCRIBE\n{headers}\n\x00".encode())
    assert wire.frame().command is Command.RECEIPT
    ready.set()
    got = 0
    every = max(1, prefetch // 2)
    while got < n:
        frame = wire.frame()
        if frame.command is not Command.MESSAGE:
            continue
        got += 1
        if ack != "auto" and (got % every == 0 or got == n):
            wire.sock.sendall(b"ACK\nid:" + frame.headers["ack"].encode() + b"\n\n\x00")
    out.put(("consumer", time.time()))
    wire.close()


def publisher(port: int, dest: str, n: int, size: int, out: Any) -> None:
    wire = Wire(port)
    body = b"x" * size
    frame = (f"SEND\ndestination:{dest}\ncontent-length:{size}\n\n".encode() + body
             + b"\x00")
    start = time.time()
    sent = 0
    while sent < n - 1:
        k = min(BATCH, n - 1 - sent)
        wire.sock.sendall(frame * k)
        sent += k
    wire.sock.sendall(f"SEND\ndestination:{dest}\nreceipt:last\ncontent-length:{size}\n\n"
                      .encode() + body + b"\x00")
    while wire.frame().command is not Command.RECEIPT:
        pass
    out.put(("publisher", start))
    wire.close()


def one_run(port: int, n: int, size: int, ack: str, prefetch: int, tag: str) -> float:
    dest = f"/queue/stomp-bench-{tag}-{os.getpid()}-{time.monotonic_ns()}"
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    cons = ctx.Process(target=consumer, args=(port, dest, n, ack, prefetch, ready, out))
    cons.start()
    if not ready.wait(60):
        cons.kill()
        raise RuntimeError("subscriber not ready")
    pub = ctx.Process(target=publisher, args=(port, dest, n, size, out))
    pub.start()
    times: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE
    while len(times) < 2 and time.monotonic() < deadline:
        try:
            who, when = out.get(timeout=1)
        except Exception:  # noqa: BLE001 - queue.Empty from another process's queue
            if not cons.is_alive() and not pub.is_alive() and out.empty():
                break
            continue
        times[who] = when
    for proc in (pub, cons):
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if len(times) < 2:
        raise RuntimeError(f"run did not complete within {DEADLINE:g} s")
    return n / (times["consumer"] - times["publisher"])


def measure(brokers: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Runs alternate between the brokers, so a change in the machine's load during the
    benchmark falls on both alike. Besides msg/s, the broker's own CPU time per message is
    recorded: it depends far less on what else the machine is doing."""
    results: dict[str, Any] = {name: {"rates": {}, "cpu_us": {}} for name in brokers}
    for broker in brokers.values():
        one_run(broker.stomp_port, min(args.warmup, args.messages), args.size, "auto",
                args.prefetch, "warm")
    for ack in args.ack:
        for name in brokers:
            results[name]["rates"][ack] = []
            results[name]["cpu_us"][ack] = []
        for _ in range(args.runs):
            for name, broker in brokers.items():
                cpu0 = broker.cpu_seconds()
                rate = one_run(broker.stomp_port, args.messages, args.size, ack,
                               args.prefetch, ack)
                cpu1 = broker.cpu_seconds()
                results[name]["rates"][ack].append(rate)
                if cpu0 is not None and cpu1 is not None:
                    results[name]["cpu_us"][ack].append((cpu1 - cpu0) / args.messages * 1e6)
                if not args.json:
                    print(f"{name:9} ack:{ack:7} {rate:9.0f} msg/s", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--ack", type=lambda s: s.split(","), default=["auto", "client"])
    parser.add_argument("--only", choices=["gateway", "rabbitmq"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    assert LISTENER_RE  # the gateway's listener lines are parsed by bench/brokers.py
    report: dict[str, Any] = {"messages": args.messages, "size": args.size, "runs": args.runs}
    brokers: dict[str, Any] = {}
    try:
        for cls in (StompRabbitMQ, StompGateway):
            if args.only and cls.name != args.only:
                continue
            broker = cls()
            brokers[cls.name] = broker
            broker.start()
        for name, result in measure(brokers, args).items():
            report[name] = {"version": brokers[name].version, **result}
    finally:
        for broker in brokers.values():
            broker.stop()
    summary: dict[str, Any] = {}
    for ack in args.ack:
        row: dict[str, float] = {}
        for name in ("rabbitmq", "gateway"):
            if name in report:
                row[name] = statistics.median(report[name]["rates"][ack])
                cpu = report[name]["cpu_us"][ack]
                if cpu:
                    row[name + "_cpu_us"] = statistics.median(cpu)
        if "rabbitmq" in row and "gateway" in row:
            row["ratio"] = row["gateway"] / row["rabbitmq"]
        summary[ack] = row
    report["median"] = summary
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        nan = float("nan")
        print(f"\nSEND /queue/x -> one subscriber, {args.messages} messages of {args.size} "
              f"bytes, median of {args.runs} (broker CPU us per message in brackets)")
        print(f"{'ack':8} {'rabbitmq':>20} {'gateway':>20} {'ratio':>7}")
        for ack, row in summary.items():
            cells = [f"{row.get(n, nan):10.0f} ({row.get(n + '_cpu_us', nan):5.1f} us)"
                     for n in ("rabbitmq", "gateway")]
            print(f"{ack:8} {cells[0]:>20} {cells[1]:>20} {row.get('ratio', nan):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
