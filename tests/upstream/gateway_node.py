"""A `gateway serve --backend rabbitmq` node as a subprocess of the tests, in front of the
private RabbitMQ node or cluster of `rabbit.py`; every listener on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from .rabbit import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENER_LINE = re.compile(r"listener (\w+) on ([0-9.]+):(\d+)")
READY_LINE = re.compile(r"gateway \S+ ready")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class GatewayNode:
    """One gateway process; `ports` once started (mqtt, stomp)."""

    def __init__(self, cluster: Cluster, data_dir: Path, *, nodes: list[int] | None = None,
                 extra: list[str] | None = None) -> None:
        self.command = [sys.executable, "-m", "gateway", "serve", "--backend", "rabbitmq",
                        "--host", "127.0.0.1", "--data-dir", str(data_dir),
                        "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "off",
                        "--upstream-management", cluster.nodes[0].management_url]
        for i in nodes if nodes is not None else range(len(cluster.nodes)):
            self.command += ["--upstream", cluster.nodes[i].url()]
        self.command += extra or []
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = {}
        self.lines: deque[str] = deque(maxlen=400)
        self.process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> GatewayNode:
        process = subprocess.Popen(self.command, cwd=REPO_ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        self.process = process
        ready = threading.Event()

        def drain() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self.lines.append(line)
                match = LISTENER_LINE.search(line)
                if match:
                    self.ports[match[1].lower()] = int(match[3])
                if READY_LINE.search(line):
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(START_TIMEOUT)
        if process.poll() is not None or "mqtt" not in self.ports:
            self.stop()
            raise AssertionError(f"gateway node did not start:\n{self.output()}")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """kill -9 of this node (by the PID of the process the test started), as a crash."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
