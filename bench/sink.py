"""A trivial TCP peer that shows the load generator's own ceiling: no broker, no routing.

    python bench/sink.py [--cpu N]     # prints {"discard": PORT, "stream": PORT}, then serves

* discard port: reads whatever a publisher writes and drops it.
* stream port: reads one JSON line {"proto", "size", "messages"} and writes that many
  pre-encoded deliveries of the protocol (AMQP basic.deliver + header + body, MQTT PUBLISH
  QoS 0, STOMP MESSAGE), in blocks of about 1 MiB, then waits for the client to hang up.

One thread per connection (blocking sendall/recv_into release the GIL). Stopped by the
suite with SIGTERM; every connection ends when its client closes, and the stream writes a
bounded number of messages.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import amqp_deliver_frames, mqtt_publish, payload, stomp_message  # noqa: E402


def discard(conn: socket.socket) -> None:
    buf = bytearray(1 << 20)
    with conn:
        while conn.recv_into(buf):
            pass


def stream(conn: socket.socket) -> None:
    with conn:
        line = b""
        while not line.endswith(b"\n"):
            more = conn.recv(4096)
            if not more:
                return
            line += more
        req = json.loads(line)
        body = payload(req["size"])
        unit = {"amqp": lambda: amqp_deliver_frames(body),
                "mqtt": lambda: mqtt_publish("bench/t", body, 0),
                "stomp": lambda: stomp_message("/queue/x", body)}[req["proto"]]()
        per = max(1, (1 << 20) // len(unit))
        block = unit * per
        left = req["messages"]
        try:
            while left > 0:
                k = min(per, left)
                conn.sendall(block if k == per else unit * k)
                left -= k
            while conn.recv(65536):
                pass
        except OSError:
            pass


def serve(listener: socket.socket, handler) -> None:  # type: ignore[no-untyped-def]
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError:
            pass
    ports = {}
    threads = []
    for name, handler in (("discard", discard), ("stream", stream)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(512)
        ports[name] = s.getsockname()[1]
        t = threading.Thread(target=serve, args=(s, handler), daemon=True)
        t.start()
        threads.append(t)
    print(json.dumps(ports), flush=True)
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
