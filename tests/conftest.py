"""Fixtures shared by the whole suite: a running broker, and unique names for its objects.

`broker` (one per session) and `fresh_broker` (one per test) start `gateway serve` as a child
process on free ports with its own data directory. The broker logs one line per listener it
opened, ``listener amqp on 127.0.0.1:PORT``; the fixture waits for that line (at most
START_TIMEOUT seconds), then keeps draining the broker's output into a bounded buffer that is
attached to the report of any failing test.

With GATEWAY_TEST_AMQP_URL set (for example ``amqp://guest:guest@127.0.0.1:5672/%2F``), the
client tests run against that broker instead, which is how they are checked against RabbitMQ.
A test that needs to stop or restart its broker is then skipped: that is the only skip.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The WAMP and WebSocket tests share helpers kept in tests/websocket (ab_client). They are put
# on the path here rather than in a conftest.py of tests/wamp: pytest imports every conftest.py
# as the module "conftest", so a second one would shadow this file for `from conftest import`.
sys.path.insert(0, str(REPO_ROOT / "tests" / "websocket"))
EXTERNAL_URL_ENV = "GATEWAY_TEST_AMQP_URL"
START_TIMEOUT = 20.0  # seconds for the broker to report its AMQP listener
STOP_TIMEOUT = 10.0  # seconds for the broker to exit after SIGTERM, before SIGKILL
LISTENER_LINE = re.compile(r"listener (\w+) on ([0-9.]+):(\d+)")
READY_LINE = re.compile(r"gateway \S+ ready")
OUTPUT_LINES_KEPT = 2000
NEEDS_OWN_PROCESS = (
    f"needs a broker process of its own to stop and restart; {EXTERNAL_URL_ENV} points at "
    "an external broker"
)


def unique_name(prefix: str) -> str:
    """`prefix` with a random suffix, so tests sharing one broker never collide on names."""
    return f"{prefix}-{secrets.token_hex(4)}"


class Broker:
    """The AMQP broker under test: a `gateway serve` child process, or an external broker."""

    def __init__(
        self,
        host: str,
        amqp_port: int,
        *,
        data_dir: Path | None,
        vhost: str = "/",
        user: str = "guest",
        password: str = "guest",
        config: Path | None = None,
    ) -> None:
        self.host = host
        self.config = config  # a --config file, for brokers with non-default settings
        # every protocol listener and HTTP on a free port (0); after start: the bound ports
        self.ports: dict[str, int | None] = {"amqp": amqp_port, "mqtt": 0, "stomp": 0,
                                             "http": 0}
        self.amqp_port = amqp_port
        self.data_dir = data_dir  # None for an external broker
        self.vhost = vhost
        self.user = user
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._output_lock = threading.Lock()  # the reader thread appends while tests read

    def __repr__(self) -> str:
        kind = "external" if self.is_external else f"data_dir={self.data_dir}"
        return f"Broker({self.host}:{self.amqp_port}, {kind})"

    @classmethod
    def external(cls, url: str) -> Broker:
        parts = urlsplit(url)
        broker = cls(
            parts.hostname or "127.0.0.1",
            parts.port or 5672,
            data_dir=None,
            vhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
        )
        broker.ports["http"] = 15672  # RabbitMQ's management listener
        return broker

    @property
    def is_external(self) -> bool:
        return self.data_dir is None

    @property
    def url(self) -> str:
        """AMQP URI as pika and aio-pika take it (vhost percent-encoded: `/` is `%2F`)."""
        vhost = quote(self.vhost, safe="")
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.amqp_port}/{vhost}"

    def output(self, last: int = 200) -> str:
        """The last lines the broker printed (stdout and stderr merged)."""
        with self._output_lock:
            return "\n".join(list(self._output)[-last:])

    def _log(self, line: str) -> None:
        with self._output_lock:
            self._output.append(line)

    def start(self) -> None:
        """Start the broker; on a restart it binds the same AMQP port and data directory."""
        self._require_own_process()
        assert self._process is None, "broker already running"
        self.ports["amqp"] = self.amqp_port
        command = [
            sys.executable, "-m", "gateway", "serve",
            "--host", self.host,
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        for name in ("amqp", "mqtt", "stomp", "http"):
            port = self.ports.get(name)
            command += [f"--{name}-port", "off" if port is None else str(port)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._log(f"[fixture] started pid {process.pid}: {' '.join(command)}")
        listener: list[int] = []
        found: dict[str, int] = {}
        reported = threading.Event()  # the broker said it is ready, or its output ended

        def drain() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self._log(line)
                match = LISTENER_LINE.search(line)
                if match and not reported.is_set():
                    found[match[1].lower()] = int(match[3])
                    if match[1].lower() == "amqp":
                        listener.append(int(match[3]))
                if READY_LINE.search(line):
                    reported.set()
            reported.set()

        self._process = process
        self._reader = threading.Thread(target=drain, name=f"broker-{process.pid}", daemon=True)
        self._reader.start()
        reported.wait(START_TIMEOUT)
        if not listener:
            self.stop(kill=True)  # logs the exit code
            pytest.fail(
                f"broker did not log 'listener amqp on HOST:PORT' (waited up to "
                f"{START_TIMEOUT:g} s); its output:\n{self.output()}",
                pytrace=False,
            )
        self.amqp_port = listener[0]
        self.ports.update(found)

    def stop(self, kill: bool = False) -> None:
        """SIGKILL the broker (kill=True), or SIGTERM it and SIGKILL it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    warnings.warn(
                        f"broker pid {process.pid} ignored SIGTERM for {STOP_TIMEOUT:g} s; "
                        "killing it",
                        stacklevel=2,
                    )
                    process.kill()
        returncode = process.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        self._log(f"[fixture] pid {process.pid} exited with {returncode}")

    def restart(self, kill: bool = True) -> None:
        """Stop (kill -9 by default, else SIGTERM) and start again on the same port and data."""
        self._require_own_process()
        self.stop(kill=kill)
        self.start()

    def _require_own_process(self) -> None:
        if self.is_external:
            pytest.skip(NEEDS_OWN_PROCESS)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole session; tests keep apart by using `unique` names."""
    url = os.environ.get(EXTERNAL_URL_ENV)
    if url:
        yield Broker.external(url)
        return
    running = Broker("127.0.0.1", 0, data_dir=tmp_path_factory.mktemp("broker-data"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker process of this test's own, free to be stopped and restarted."""
    if os.environ.get(EXTERNAL_URL_ENV):
        pytest.skip(NEEDS_OWN_PROCESS)
    data_dir = tmp_path / "broker-data"
    data_dir.mkdir()
    running = Broker("127.0.0.1", 0, data_dir=data_dir)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def configured_broker(tmp_path: Path) -> Iterator[Callable[[str], Broker]]:
    """Start a broker of this test's own with extra TOML config (merged over the default):
    `configured_broker("[limits]\\nmax_connections = 2\\n")`."""
    if os.environ.get(EXTERNAL_URL_ENV):
        pytest.skip(NEEDS_OWN_PROCESS)
    started: list[Broker] = []

    def start(config_text: str) -> Broker:
        n = len(started)
        config = tmp_path / f"gateway-{n}.toml"
        config.write_text(config_text)
        data_dir = tmp_path / f"broker-data-{n}"
        data_dir.mkdir()
        running = Broker("127.0.0.1", 0, data_dir=data_dir, config=config)
        started.append(running)
        running.start()
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("orders")`` -> ``"orders-1f2e3d4c"``."""
    return unique_name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the output of the broker(s) a failing test used to its report."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Broker) and not value.is_external:
                report.sections.append((f"broker output (port {value.amqp_port})", value.output()))
    return report


_FIGURES: list[str] = []


@pytest.fixture
def figures() -> Callable[..., None]:
    """`figures(name, key=value, ...)`: a measured figure, printed in the run's terminal
    summary under "measured figures" (the abuse tests record theirs so)."""
    def record(name: str, **values: object) -> None:
        _FIGURES.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
