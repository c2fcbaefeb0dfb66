"""Peak memory of gateway holding a large backlog (queues larger than memory).

    .venv/bin/python bench/backlog.py                       # 1,000,000 x 4 KiB, transient
    .venv/bin/python bench/backlog.py --persistent --messages 200000 --drain

Starts a gateway with a paging threshold (`[store] paging_threshold`), publishes N messages
of SIZE bytes to one queue with nobody consuming (a raw-socket publisher, bench/clients.py),
checks the queue holds all of them, and samples the broker's resident memory (VmRSS) all
along; with --drain a consumer then reads the whole backlog back and the peak is reported
for that phase too. The figure to read is the peak RSS against the backlog's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from clients import RawConnection  # noqa: E402

LISTENER = re.compile(r"listener amqp on ([0-9.]+):(\d+)")


def status_kib(pid: int, field: str = "VmRSS") -> int:
    """A size from /proc/PID/status: VmRSS (resident now) or VmHWM (peak resident), KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return status_kib(pid)


def peak_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.stop.wait(self.every)

    def reset(self) -> int:
        peak, self.peak = self.peak, rss_kib(self.pid)
        return peak


def start_gateway(tmp: str, threshold: int) -> tuple[subprocess.Popen, int]:
    conf = Path(tmp) / "gateway.toml"
    conf.write_text(
        f"[store]\npaging_threshold = {threshold}\n"
        "[limits]\nmemory_high_watermark = 1125899906842624\n")  # 1 PiB: paging, not alarm
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(conf),
           "--data-dir", str(Path(tmp) / "data"), "--host", "127.0.0.1",
           "--amqp-port", "0", "--mqtt-port", "off", "--stomp-port", "off",
           "--http-port", "off"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 900  # a restart replays the whole log first
    for raw in proc.stdout:
        match = LISTENER.search(raw.decode("utf-8", "replace"))
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stdout],  # type: ignore
                             daemon=True).start()
            return proc, int(match[2])
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("gateway did not report its AMQP listener")


def publish(port: int, queue: str, n: int, size: int, persistent: bool,
            timeout: float) -> float:
    from pamqp import body, commands, header

    c = RawConnection("127.0.0.1", port, "guest", "guest", timeout)
    c.sock.settimeout(timeout)
    c.send(commands.Queue.Declare(queue=queue, durable=persistent), 1)
    c.expect(commands.Queue.DeclareOk)
    payload = b"m" * size
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
    one = (c._frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
           + c._frame.marshal(header.ContentHeader(0, size, props), 1)
           + c._frame.marshal(body.ContentBody(payload), 1))
    chunk_n = 64
    t0 = time.monotonic()
    sent = 0
    while sent < n:
        k = min(chunk_n, n - sent)
        c.sock.sendall(one * k)
        sent += k
        if sent % 65536 < chunk_n:  # a round trip now and then: the broker keeps up
            c.send(commands.Queue.Declare(queue=queue, durable=persistent, passive=True), 1)
            c.expect(commands.Queue.DeclareOk)
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"publishing took over {timeout} s ({sent} sent)")
    c.send(commands.Queue.Declare(queue=queue, durable=persistent, passive=True), 1)
    ok = c.expect(commands.Queue.DeclareOk)
    elapsed = time.monotonic() - t0
    c.close()
    if ok.message_count != n:
        raise RuntimeError(f"queue holds {ok.message_count} messages, expected {n}")
    return elapsed


def drain(port: int, queue: str, n: int, size: int, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / "clients.py"), "consume", "--client", "raw",
           "--host", "127.0.0.1", "--port", str(port), "--queue", queue,
           "--messages", str(n), "--size", str(size), "--ack", "auto",
           "--prefetch", "1000", "--timeout", str(timeout)]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout + 60, text=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"consumer gave no result: {out[-500:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--threshold", type=int, default=128 * 1024 * 1024,
                   help="[store] paging_threshold, bytes (default 128 MiB)")
    p.add_argument("--persistent", action="store_true",
                   help="durable queue, delivery_mode 2 (default: transient)")
    p.add_argument("--drain", action="store_true", help="consume the backlog afterwards")
    p.add_argument("--restart", action="store_true",
                   help="with --persistent: stop the broker once the backlog is in (SIGTERM: "
                        "the publisher takes no confirms, so kill -9 could lose its last "
                        "batch), start it again on the same data directory and report the "
                        "peak RSS of the recovery")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        proc, port = start_gateway(tmp, args.threshold)
        sampler = Sampler(proc.pid)
        sampler.start()
        result: dict = {"messages": args.messages, "size": args.size,
                        "backlog_bytes": args.messages * args.size,
                        "paging_threshold": args.threshold, "persistent": args.persistent,
                        "rss_at_start_kib": rss_kib(proc.pid)}
        try:
            seconds = publish(port, "backlog", args.messages, args.size, args.persistent,
                              args.timeout)
            result["publish_seconds"] = round(seconds, 1)
            result["publish_rate"] = round(args.messages / seconds)
            result["peak_rss_publish_kib"] = sampler.reset()
            result["rss_with_backlog_kib"] = rss_kib(proc.pid)
            pages = Path(tmp) / "data" / "pages.dat"
            result["page_file_bytes"] = pages.stat().st_size if pages.exists() else 0
            if args.restart:
                sampler.stop.set()
                proc.terminate()
                proc.wait(300)
                result["log_bytes"] = (Path(tmp) / "data" / "gateway.log").stat().st_size
                t0 = time.monotonic()
                proc, port = start_gateway(tmp, args.threshold)
                result["restart_seconds"] = round(time.monotonic() - t0, 1)
                sampler = Sampler(proc.pid)
                sampler.start()
                result["peak_rss_recovery_kib"] = peak_kib(proc.pid)
            if args.drain:
                con = drain(port, "backlog", args.messages, args.size, args.timeout)
                result["drained"] = con.get("received")
                if con.get("first") and con.get("last"):
                    result["drain_rate"] = round(con["received"] / (con["last"] - con["first"]))
                result["peak_rss_drain_kib"] = sampler.reset()
        finally:
            sampler.stop.set()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
