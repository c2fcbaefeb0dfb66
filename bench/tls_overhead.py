"""What TLS costs on gateway's AMQP port: the same pika work on amqp and on amqps.

    .venv/bin/python bench/tls_overhead.py                   # defaults below
    .venv/bin/python bench/tls_overhead.py --connections 100 --messages 10000 --runs 1

Starts one gateway (subprocess) with `amqp` and `amqps` on free ports and certificates made
for the run (`gateway.cli.certs`, ECDSA P-256), then alternates plain and TLS for each run:

- connections: open a pika BlockingConnection (handshake, connection.start/tune/open) and
  close it, `--connections` times in a row; reported as connections per second. Over TLS
  with PLAIN (user guest) and with EXTERNAL (a client certificate for guest).
- messages: publish `--messages` bodies of `--size` bytes to a fresh queue without
  confirms, then consume them all with auto-ack; reported as messages per second (count
  divided by the time from the first publish to the last delivery).

The median of `--runs` runs is printed. Everything runs on one machine; the client (pika,
pure Python) costs as much CPU as the broker, so these are relative figures.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pika.credentials

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.cli.certs import CertFiles, generate  # noqa: E402

LISTENER = re.compile(r"listener (\w+) on [0-9.]+:(\d+)")
START_TIMEOUT = 30.0


def start_gateway(directory: Path, files: CertFiles) -> tuple[subprocess.Popen[bytes],
                                                               dict[str, int]]:
    config = directory / "gateway.toml"
    config.write_text(f"""
[listeners]
mqtt = "off"
stomp = "off"
http = "off"
amqps = 0
[tls]
certfile = "{files.server_certificate}"
keyfile = "{files.server_key}"
cafile = "{files.ca_certificate}"
verify = "peer"
[store]
fsync = false
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host",
         "127.0.0.1", "--amqp-port", "0", "--data-dir", str(directory / "data")],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ports: dict[str, int] = {}
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            match = LISTENER.search(line)
            if match:
                ports[match[1]] = int(match[2])
            if " ready" in line:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(START_TIMEOUT) or {"amqp", "amqps"} - set(ports):
        proc.kill()
        raise SystemExit("gateway did not start")
    return proc, ports


def parameters(ports: dict[str, int], files: CertFiles, mode: str) -> pika.ConnectionParameters:
    if mode == "plain":
        return pika.ConnectionParameters("127.0.0.1", ports["amqp"])
    context = ssl.create_default_context(cafile=str(files.ca_certificate))
    credentials: pika.credentials.PlainCredentials | pika.credentials.ExternalCredentials
    credentials = pika.PlainCredentials("guest", "guest")
    if mode == "tls-external":
        context.load_cert_chain(str(files.client_certificate), str(files.client_key))
        credentials = pika.credentials.ExternalCredentials()
    return pika.ConnectionParameters("127.0.0.1", ports["amqps"], credentials=credentials,
                                     ssl_options=pika.SSLOptions(context, "127.0.0.1"))


def connections_per_second(params: pika.ConnectionParameters, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        pika.BlockingConnection(params).close()
    return count / (time.perf_counter() - start)


def messages_per_second(params: pika.ConnectionParameters, count: int, size: int,
                        deadline: float) -> float:
    body = b"x" * size
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        start = time.perf_counter()
        for _ in range(count):
            ch.basic_publish("", queue, body)
        got = 0

        def on_message(*_: object) -> None:
            nonlocal got
            got += 1

        ch.basic_consume(queue, on_message, auto_ack=True)
        stop = time.monotonic() + deadline
        while got < count and time.monotonic() < stop:
            conn.process_data_events(time_limit=0.1)
        if got < count:
            raise SystemExit(f"only {got} of {count} messages arrived in {deadline:g} s")
        return count / (time.perf_counter() - start)
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="deadline of one message run, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        files = generate(Path(tmp) / "certs")
        proc, ports = start_gateway(Path(tmp), files)
        try:
            results: dict[str, list[float]] = {}

            def record(name: str, measure: Callable[[], float]) -> None:
                results.setdefault(name, []).append(measure())

            for _ in range(args.runs):
                for mode in ("plain", "tls", "tls-external"):
                    params = parameters(ports, files, mode)
                    record(f"connections/s {mode}",
                           lambda p=params: connections_per_second(p, args.connections))
                for mode in ("plain", "tls"):
                    params = parameters(ports, files, mode)
                    record(f"messages/s {mode}", lambda p=params: messages_per_second(
                        p, args.messages, args.size, args.timeout))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"gateway, pika {pika.__version__}, {ssl.OPENSSL_VERSION}; "
          f"{args.connections} connections, {args.messages} x {args.size} B, "
          f"median of {args.runs}")
    for name, values in results.items():
        print(f"{name:28} {statistics.median(values):10,.0f}   "
              f"(runs: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
