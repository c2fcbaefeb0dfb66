"""`gateway serve` as a user runs it: flags, the listener lines, and a clean stop."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from conftest import REPO_ROOT, Broker

from gateway.config import TLS_LISTENERS


def test_sigterm_closes_clients_with_320_and_exits_cleanly(fresh_broker: Broker) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(fresh_broker.url))
    channel = connection.channel()
    channel.queue_declare("before-stop")
    process = fresh_broker._process
    assert process is not None
    os.kill(process.pid, signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            connection.process_data_events(time_limit=0.2)
    assert closed.value.reply_code == 320
    assert process.wait(10) == 0
    fresh_broker.stop()
    output = fresh_broker.output()
    assert "Traceback" not in output
    assert "received SIGTERM, shutting down" in output


def test_every_listener_off_still_starts_and_stops(tmp_path: object) -> None:
    command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
               "--amqp-port", "off", "--mqtt-port", "off", "--stomp-port", "off",
               "--http-port", "off", "--data-dir", str(tmp_path)]
    # with every listener off there is nothing to serve: it must still start and stop
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    lines = []
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.append(raw)
            if b"ready" in raw:
                break
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    out = b"".join(lines) + out
    assert process.returncode == 0
    assert b"ready" in out
    assert b"listener amqp on" not in out
    assert b"Traceback" not in out


@pytest.mark.parametrize("value", ["70000", "-1", "http"])
def test_bad_port_flag_is_a_clear_usage_error(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--amqp-port", value],
        cwd=REPO_ROOT, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert b"--amqp-port" in result.stderr
    assert b"Traceback" not in result.stderr


def test_bad_config_file_is_reported(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "bad.toml")
    with open(path, "w") as f:
        f.write("[listeners]\namqpp = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", path],
        cwd=REPO_ROOT, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert b"listeners.amqpp" in result.stderr


# -- a listener that cannot be bound: one line naming it and its address -------------------

LABELS = {"amqp": "AMQP", "mqtt": "MQTT", "stomp": "STOMP", "http": "HTTP",
          "web_stomp": "Web-STOMP", "web_mqtt": "Web-MQTT", "amqps": "AMQPS",
          "mqtts": "MQTTS", "stomps": "STOMPS", "https": "HTTPS",
          "web_stomp_tls": "Web-STOMP TLS", "web_mqtt_tls": "Web-MQTT TLS"}
PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE = 24, 10  # <linux/prctl.h>, <linux/capability.h>
FREE_PORTS = ["--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0"]


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}-port"


@pytest.fixture(scope="module")
def tls_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file whose [tls] section is a development certificate's, as
    `gateway ctl generate_cert` prints it."""
    where = tmp_path_factory.mktemp("serve-tls")
    made = subprocess.run([sys.executable, "-m", "gateway", "ctl", "-q", "generate_cert",
                           str(where / "certs")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    config = where / "tls.toml"
    config.write_text(made.stdout)
    return config


def serve_output(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "serve", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, **kwargs)


def not_logged(stderr: str) -> list[str]:
    """The lines of `stderr` that are not log records (the log's lines start with a date)."""
    return [line for line in stderr.splitlines() if line and not line[:4].isdigit()]


@pytest.mark.parametrize("name", list(LABELS))
def test_a_taken_port_is_one_line_naming_the_listener(name: str, tmp_path: Path,
                                                      tls_config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*FREE_PORTS, "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data"),
                flag(name), str(port)]
        if name in TLS_LISTENERS:
            args += ["--config", str(tls_config)]
        result = serve_output(args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not_logged(result.stderr) == [
        f"gateway: {LABELS[name]} listener: 127.0.0.1:{port} is in use (another program "
        f"listens there; choose another port with {flag(name)} or [listeners] {name})"]


def test_every_listener_has_a_serve_flag() -> None:
    result = serve_output(["--help"])
    assert result.returncode == 0
    for name in LABELS:
        assert flag(name) in result.stdout


def test_an_address_not_on_this_machine_is_one_line(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface
    result = serve_output([*FREE_PORTS, "--host", "192.0.2.1", "--data-dir", str(tmp_path)])
    assert result.returncode == 1
    assert not_logged(result.stderr) == [
        "gateway: AMQP listener: 192.0.2.1:0: no such address on this machine (see --host or "
        "[listeners] host)"]


def _without_bind_privilege() -> None:
    """In the child before exec: drop CAP_NET_BIND_SERVICE from the capability bounding set,
    so that even as root it may not bind a privileged port (the interpreter lives where
    only root may read, so the child cannot simply run as another user)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_privileged_port_without_privileges_is_one_line(tmp_path: Path) -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 1:
        pytest.skip("every port is unprivileged on this system")
    port = start - 1
    result = serve_output([*FREE_PORTS, "--host", "127.0.0.1", "--data-dir", str(tmp_path),
                           "--stomp-port", str(port)], preexec_fn=_without_bind_privilege)
    assert result.returncode == 1, result.stderr
    why = " (ports below 1024 need privileges)" if port < 1024 else ""
    assert not_logged(result.stderr) == [
        f"gateway: STOMP listener: 127.0.0.1:{port}: permission denied{why}"]


def test_make_run_passes_args_to_serve(tmp_path: Path) -> None:
    """`make run ARGS="..."`, with the test's own Python environment as the Makefile's."""
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: make installs nothing
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = " ".join([*FREE_PORTS, "--amqp-port", str(port), "--data-dir", str(tmp_path)])
        result = subprocess.run(
            ["make", "-s", "run", f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}",
             f"ARGS={args}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"gateway: AMQP listener: 127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr
