"""`gateway serve` as a user runs it: flags, the listener lines, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pika
import pika.exceptions
import pytest
from conftest import REPO_ROOT, Broker


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
