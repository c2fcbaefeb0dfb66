"""A `gateway serve --backend rabbitmq` node as a subprocess of the tests, in front of the
private RabbitMQ node or cluster of `rabbit.py`; every listener on a free port. With
`workers=N`, the process is the parent of N workers (`--workers N`): their PIDs are read
from its log, and each worker's management API is on its own control socket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from .rabbit import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENER_LINE = re.compile(r"listener (\w+) on ([0-9.]+):(\d+)")
READY_LINE = re.compile(r"gateway \S+ ready")
WORKER_LINE = re.compile(r"worker (\d+) (?:started|ready again) \(pid (\d+)\)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class GatewayNode:
    """One gateway process; `ports` once started (mqtt, stomp)."""

    def __init__(self, cluster: Cluster, data_dir: Path, *, nodes: list[int] | None = None,
                 extra: list[str] | None = None, workers: int = 1, http: bool = False
                 ) -> None:
        self.command = [sys.executable, "-m", "gateway", "serve", "--backend", "rabbitmq",
                        "--host", "127.0.0.1", "--data-dir", str(data_dir),
                        "--mqtt-port", "0", "--stomp-port", "0",
                        "--http-port", "0" if http else "off",
                        "--upstream-management", cluster.nodes[0].management_url]
        if workers != 1:
            self.command += ["--workers", str(workers)]
        self.data_dir = data_dir
        for i in nodes if nodes is not None else range(len(cluster.nodes)):
            self.command += ["--upstream", cluster.nodes[i].url()]
        self.command += extra or []
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = {}
        self.lines: deque[str] = deque(maxlen=2000)
        self.process: subprocess.Popen[bytes] | None = None
        self.workers: dict[int, int] = {}  # worker index -> its latest PID (from the log)
        self.changed = threading.Condition()  # notified on every line

    def control_socket(self, index: int = 0) -> Path:
        """The local control socket of worker `index` (0: the one `gateway ctl` uses)."""
        return self.data_dir / ("ctl.sock" if index == 0 else f"ctl.{index}.sock")

    def wait_for_line(self, pattern: str, *, count: int = 1,
                      timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The `count`-th log line matching `pattern` (counted from the start), waiting up
        to `timeout` seconds for it."""
        compiled = re.compile(pattern)

        def matches() -> list[re.Match[str]]:
            return [m for m in map(compiled.search, list(self.lines)) if m is not None]

        deadline = time.monotonic() + timeout
        with self.changed:
            while len(found := matches()) < count and time.monotonic() < deadline:
                self.changed.wait(0.5)
        if len(found) < count:
            raise AssertionError(f"no log line {pattern!r} (#{count}):\n{self.output()}")
        return found[count - 1]

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
                match = LISTENER_LINE.search(line)
                if match:
                    self.ports[match[1].lower()] = int(match[3])
                worker = WORKER_LINE.search(line)
                if worker:
                    self.workers[int(worker[1])] = int(worker[2])
                self.lines.append(line)  # after what it says is recorded
                if READY_LINE.search(line):
                    ready.set()
                with self.changed:
                    self.changed.notify_all()
            ready.set()
            with self.changed:
                self.changed.notify_all()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(START_TIMEOUT)
        if process.poll() is not None or "mqtt" not in self.ports:
            self.stop()
            raise AssertionError(f"gateway node did not start:\n{self.output()}")
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit status (None: not running)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        return process.returncode

    def kill(self) -> None:
        """kill -9 of this node (by the PID of the process the test started), as a crash."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
