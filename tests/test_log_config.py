"""`[log]`: `gateway serve` writes its log where the config says (file, level, JSON lines),
and the data directory holds the store's files only."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from gateway.config import ConfigError, LogConfig, load_config
from gateway.store.disk import LOG_NAME

START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(tmp_path: Path, config_text: str, *extra: str) -> tuple[int, str, Path]:
    """Run `gateway serve` with this config until its HTTP port answers, stop it with
    SIGTERM; returns its exit code, what it printed, and its data directory."""
    config = tmp_path / "gateway.toml"
    config.write_text(config_text)
    data_dir = tmp_path / "data"
    http = free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config),
               "--host", "127.0.0.1", "--amqp-port", "0", "--mqtt-port", "off",
               "--stomp-port", "off", "--http-port", str(http), "--data-dir", str(data_dir),
               *extra]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", http), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"serve did not start: {process.communicate(timeout=10)[0]!r}")
        time.sleep(0.2)  # the listener lines and "ready" follow the binding closely
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, out.decode("utf-8", "replace"), data_dir


def test_log_file_gets_json_lines_and_stderr_stays_quiet(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "broker.jsonl"  # its directory is created
    code, out, data_dir = serve(tmp_path, f'[log]\nfile = "{log_file}"\njson = true\n')
    assert code == 0, out
    assert "listener" not in out and "ready" not in out  # nothing on the terminal
    lines = log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("listener amqp on 127.0.0.1:") for m in messages)
    assert any(m.endswith("ready") for m in messages)
    assert {r["level"] for r in records} == {"info"}
    assert records[0]["time"].endswith("+00:00")
    # the data directory holds the store, not a text log
    names = {p.name for p in data_dir.iterdir()}
    assert LOG_NAME in names and "gateway.log" not in names


def test_level_filters_and_text_lines_append(tmp_path: Path) -> None:
    log_file = tmp_path / "broker.log"
    log_file.write_text("kept from before\n")
    # a torn record at the end of the store's log makes recovery warn at start
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / LOG_NAME).write_bytes(b"\x00\x00\x00\x10torn")
    code, out, _ = serve(tmp_path, f'[log]\nfile = "{log_file}"\nlevel = "warning"\n')
    assert code == 0, out
    text = log_file.read_text()
    assert text.startswith("kept from before\n")  # appended to, not replaced
    lines = text.splitlines()[1:]
    assert any(" WARNING gateway.store: " in line and "incomplete write" in line
               for line in lines), text
    assert not any(" INFO " in line for line in lines), text  # "listener", "ready" filtered


def test_log_level_flag_overrides_the_file(tmp_path: Path) -> None:
    log_file = tmp_path / "broker.log"
    code, out, _ = serve(tmp_path, f'[log]\nfile = "{log_file}"\nlevel = "error"\n',
                         "--log-level", "info")
    assert code == 0, out
    assert " INFO gateway.server: listener amqp on " in log_file.read_text()


def test_default_is_stderr_text_at_info(tmp_path: Path) -> None:
    assert load_config().log == LogConfig(file=None, level="info", json=False)
    code, out, _ = serve(tmp_path, "")
    assert code == 0
    assert " INFO gateway.server: listener amqp on 127.0.0.1:" in out


@pytest.mark.parametrize(("text", "key"), [
    ('[log]\nlevel = "loud"\n', "log.level"),
    ("[log]\njson = 1\n", "log.json"),
    ("[log]\nfile = 3\n", "log.file"),
    ('[log]\nformat = "json"\n', "log.format"),
])
def test_bad_log_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert err.value.key == key


def test_unwritable_log_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[log]\nfile = "{blocker / "x.log"}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "data")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("gateway: ") and "Traceback" not in result.stderr
