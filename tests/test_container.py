"""The image's start-up logic (`python -m gateway.container`), run outside Docker: the
default user from the environment, no guest/guest and no anonymous administrator reachable
from other addresses, and the health check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pika
import pika.exceptions
import pytest
from conftest import LISTENER_LINE, READY_LINE, REPO_ROOT

from gateway.auth.passwords import check_password
from gateway.config import load_config
from gateway.container import StartRefused, apply_environment, default_user

START_TIMEOUT = 30.0
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("GATEWAY_DEFAULT_", "RABBITMQ_DEFAULT_"))}


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


# -- the decision, in process ---------------------------------------------------------------

def test_environment_user_replaces_the_configured_users() -> None:
    env = {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "s3cret-pass"}
    config = apply_environment(load_config(), env)
    (user,) = config.auth.users
    assert user.name == "admin" and user.tags == ("administrator",)
    assert check_password(user.password_hash, "s3cret-pass")
    assert user.wampcra  # WAMP-CRA works for it too
    assert config.auth.vhosts == ("/",)
    (perm,) = config.auth.permissions
    assert (perm.user, perm.vhost, perm.configure, perm.write, perm.read) == (
        "admin", "/", ".*", ".*", ".*")
    assert "admin" not in config.auth.loopback_users  # reachable from anywhere
    assert "guest" in config.auth.loopback_users


def test_rabbitmq_variables_are_honoured_and_gateway_ones_win() -> None:
    env = {"RABBITMQ_DEFAULT_USER": "rabbit", "RABBITMQ_DEFAULT_PASS": "pw-1",
           "RABBITMQ_DEFAULT_VHOST": "prod"}
    assert default_user(env) == ("rabbit", "pw-1", "prod")
    env |= {"GATEWAY_DEFAULT_USER": "gw", "GATEWAY_DEFAULT_PASS": "pw-2"}
    assert default_user(env) == ("gw", "pw-2", "prod")
    assert default_user({"GATEWAY_DEFAULT_USER": ""}) is None  # empty = unset (compose)


def test_no_environment_keeps_guest_loopback_only() -> None:
    config = apply_environment(load_config(), {})
    assert [u.name for u in config.auth.users] == ["guest"]
    assert "guest" in config.auth.loopback_users


@pytest.mark.parametrize(("text", "env", "says"), [
    # guest/guest opened to every address by a mounted config
    ("[auth]\nloopback_users = []\n", {}, "'guest' has the password 'guest'"),
    # the same user under another name
    ('[auth]\nloopback_users = []\n[[users]]\nname = "root"\npassword = "guest"\n'
     'tags = ["administrator"]\n[[vhosts]]\nname = "/"\n', {}, "'root' has the password"),
    # the environment's password is the well-known one
    ("", {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "guest"},
     "choose another GATEWAY_DEFAULT_PASS"),
    # anonymous MQTT clients from anywhere would be the administrator
    ('[mqtt]\nallow_anonymous = true\nanonymous_user = "admin"\n',
     {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "pw"}, "[mqtt] allow_anonymous"),
    ('[stomp]\nallow_anonymous = true\nanonymous_user = "admin"\n',
     {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "pw"}, "[stomp] allow_anonymous"),
])
def test_open_administrators_are_refused(tmp_path: Path, text: str, env: dict[str, str],
                                         says: str) -> None:
    with pytest.raises(StartRefused, match=says.replace("[", r"\[").replace("]", r"\]")):
        apply_environment(load_config(config_file(tmp_path, text)), env)


def test_user_without_password_is_a_config_error() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_DEFAULT_PASS"):
        default_user({"GATEWAY_DEFAULT_USER": "admin"})


# -- the entry point as the image runs it ---------------------------------------------------

class Started:
    def __init__(self, process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports
        self.lines: list[str] = []


def start(tmp_path: Path, env: dict[str, str], config: Path | None = None,
          data_dir: Path | None = None) -> Started:
    command = [sys.executable, "-m", "gateway.container", "serve", "--host", "127.0.0.1",
               "--data-dir", str(data_dir or tmp_path / "data"), "--amqp-port", "0",
               "--mqtt-port", "0", "--stomp-port", "off", "--http-port", "0"]
    if config is not None:
        command += ["--config", str(config)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**CLEAN_ENV, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = Started(process, {})
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            started.lines.append(line)
            match = LISTENER_LINE.search(line)
            if match:
                started.ports[match[1]] = int(match[3])
            if READY_LINE.search(line):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(START_TIMEOUT)
    return started


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Started]]:
    started: list[Started] = []
    yield started
    for s in started:
        if s.process.poll() is None:
            s.process.terminate()
            try:
                s.process.wait(15)
            except subprocess.TimeoutExpired:
                s.process.kill()
                s.process.wait(5)


def amqp(port: int, user: str, password: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters("127.0.0.1", port, "/",
                                       pika.PlainCredentials(user, password),
                                       connection_attempts=1, socket_timeout=5)
    return pika.BlockingConnection(params)


def test_image_entry_serves_the_environment_user_and_no_guest(
        tmp_path: Path, running: list[Started]) -> None:
    env = {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "s3cret-pass"}
    broker = start(tmp_path, env)
    running.append(broker)
    assert "amqp" in broker.ports, "\n".join(broker.lines)
    with closing(amqp(broker.ports["amqp"], "admin", "s3cret-pass")) as conn:
        conn.channel().queue_declare("from-admin")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(broker.ports["amqp"], "guest", "guest")  # there is no guest at all
    # the health check the image runs, against this broker
    health = config_file(tmp_path, f"[listeners]\namqp = {broker.ports['amqp']}\n")
    result = subprocess.run([sys.executable, "-m", "gateway.container", "healthcheck",
                             str(health)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr

    # stopped: the same check fails
    broker.process.terminate()
    assert broker.process.wait(15) == 0
    result = subprocess.run([sys.executable, "-m", "gateway.container", "healthcheck",
                             str(health)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1 and result.stderr.startswith("unhealthy: ")

    # restarted with another password: the data directory keeps the first (seeded once)
    env2 = {"GATEWAY_DEFAULT_USER": "admin", "GATEWAY_DEFAULT_PASS": "another-pass"}
    again = start(tmp_path, env2)
    running.append(again)
    assert any("is not applied" in line for line in again.lines), "\n".join(again.lines)
    with closing(amqp(again.ports["amqp"], "admin", "s3cret-pass")):
        pass


def test_health_check_over_http_when_amqp_is_off(tmp_path: Path,
                                                 running: list[Started]) -> None:
    broker = start(tmp_path, {})
    running.append(broker)
    health = config_file(tmp_path, f'[listeners]\namqp = "off"\n'
                                   f"http = {broker.ports['http']}\n")
    result = subprocess.run([sys.executable, "-m", "gateway.container", "healthcheck",
                             str(health)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    # guest works from loopback (inside the container), as the health check and ctl need
    with closing(amqp(broker.ports["amqp"], "guest", "guest")):
        pass


def test_image_entry_refuses_an_open_guest(tmp_path: Path) -> None:
    config = config_file(tmp_path, "[auth]\nloopback_users = []\n")
    deadline = time.monotonic() + START_TIMEOUT
    result = subprocess.run(
        [sys.executable, "-m", "gateway.container", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "data"), "--amqp-port", "0", "--mqtt-port", "off",
         "--stomp-port", "off", "--http-port", "off"],
        cwd=REPO_ROOT, env=CLEAN_ENV, capture_output=True, text=True,
        timeout=deadline - time.monotonic())
    assert result.returncode == 78
    assert result.stderr.startswith("gateway: refusing to start: user 'guest'")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_config_users_apply_to_a_seeded_data_directory(tmp_path: Path, fresh_broker) -> None:
    """[[users]] seed a fresh data directory only; `python -m gateway.seed CONFIG` turns
    them into definitions that `gateway ctl import_definitions -` (POST /api/definitions)
    applies to a broker whose data directory holds users already."""
    import httpx

    config = config_file(tmp_path, '[[users]]\nname = "alice"\npassword = "alice-pw"\n'
                                   'tags = ["management"]\n[[vhosts]]\nname = "tenant-a"\n'
                                   '[[permissions]]\nuser = "alice"\nvhost = "tenant-a"\n'
                                   'configure = "^alice\\\\."\nwrite = ".*"\nread = ".*"\n')
    result = subprocess.run([sys.executable, "-m", "gateway.seed", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    defs = json.loads(result.stdout)
    assert [u["name"] for u in defs["users"]] == ["alice"]
    assert defs["users"][0]["hashing_algorithm"] == "gateway_password_hashing_scrypt"
    assert "alice-pw" not in result.stdout  # the hash only
    # the fixture's broker was seeded with guest at its first start: alice is unknown
    port = fresh_broker.amqp_port
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(port, "alice", "alice-pw")
    api = f"http://127.0.0.1:{fresh_broker.ports['http']}/api/definitions"
    reply = httpx.post(api, content=result.stdout, auth=("guest", "guest"),
                       headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.status_code in (200, 201, 204), reply.text
    params = pika.ConnectionParameters("127.0.0.1", port, "tenant-a",
                                       pika.PlainCredentials("alice", "alice-pw"),
                                       connection_attempts=1, socket_timeout=5)
    with closing(pika.BlockingConnection(params)) as conn:
        conn.channel().queue_declare("alice.jobs")
    # and it survives a restart (it is in the store now)
    fresh_broker.restart(kill=False)
    with closing(pika.BlockingConnection(params)):
        pass
