"""The local control channel: `gateway ctl` and `gateway info` on the broker's machine, as the
broker's OS user, need no credentials (the management API on `<data_dir>/ctl.sock`), so
deleting guest as the tutorial says does not lock the operator out; nobody else can use it;
the socket goes away with the broker and a stale one does not stop the next start."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_run import as_other_user, gateway, rows
from conftest import EXTERNAL_URL_ENV, Broker

if os.environ.get(EXTERNAL_URL_ENV):
    pytest.skip("needs broker processes of its own", allow_module_level=True)


def config_for(broker: Broker, where: Path) -> Path:
    """A config file naming the broker's data directory and http port, as an operator's."""
    config = where / "gateway.toml"
    config.write_text(f'[listeners]\nhttp = {broker.ports["http"]}\n'
                      f'[store]\ndata_dir = "{broker.data_dir}"\n')
    return config


def api(broker: Broker, auth: tuple[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api", auth=auth,
                        timeout=10)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A directory other users may enter (as /srv or a home directory is), unlike pytest's
    temporary directories: what keeps them off the socket is the socket itself."""
    where = Path(tempfile.mkdtemp(prefix="gateway-ctl-"))
    os.chmod(where, 0o755)
    yield where
    shutil.rmtree(where)


@pytest.fixture(scope="module")
def operated(home: Path) -> Iterator[Broker]:
    """A broker whose data directory is `data` in `home`, after the operator deleted guest
    (through the socket, with an HTTP client of its own)."""
    running = Broker("127.0.0.1", 0, data_dir=home / "data")
    running.start()
    assert running.data_dir is not None
    local = httpx.Client(transport=httpx.HTTPTransport(uds=str(running.data_dir / "ctl.sock")),
                         base_url="http://localhost/api", timeout=10)
    assert local.delete("/users/guest").status_code == 204
    local.close()
    yield running
    running.stop()


def test_after_delete_user_guest_ctl_still_works(fresh_broker: Broker, tmp_path: Path) -> None:
    config = str(config_for(fresh_broker, tmp_path))
    result = gateway("ctl", "--config", config, "delete_user", "guest")
    assert (result.returncode, result.stdout) == (0, 'Deleting user "guest" ...\n'), \
        result.stderr
    result = gateway("ctl", "--config", config, "-q", "list_users")
    assert result.returncode == 0 and rows(result.stdout) == [["user", "tags"]], result.stderr
    # the operator makes a user for HTTP again, without any credentials
    for args in (["add_user", "ops", "s3cret"], ["set_user_tags", "ops", "administrator"],
                 ["set_permissions", "-p", "/", "ops", ".*", ".*", ".*"]):
        assert gateway("ctl", "--config", config, *args).returncode == 0
    result = gateway("ctl", "--config", config, "-U", "ops", "-P", "s3cret", "-q",
                     "list_users")
    assert result.returncode == 0 and ["ops", "[administrator]"] in rows(result.stdout)
    # over HTTP, guest is gone and no credentials are no login
    with api(fresh_broker) as anonymous, api(fresh_broker, ("guest", "guest")) as guest:
        assert anonymous.get("/overview").status_code == 401
        assert guest.get("/overview").status_code == 401
    result = gateway("ctl", "--config", config, "-U", "guest", "-P", "guest", "list_users")
    assert result.returncode == 77
    assert "the broker refused the credentials of user 'guest' (HTTP 401)" in result.stderr
    result = gateway("info", "--once", "--config", config)
    assert result.returncode == 0 and result.stdout.startswith("gateway "), result.stderr


def test_ctl_finds_the_socket_from_the_working_directory(operated: Broker, home: Path) -> None:
    # `make run` and `gateway ctl` in the same directory: the default data_dir is "data"
    result = gateway("ctl", "-q", "list_users", cwd=home)
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout) == [["user", "tags"]]  # guest deleted, and still served
    result = gateway("ctl", "status", cwd=home)
    assert result.returncode == 0 and "Product name: gateway" in result.stdout


def test_the_local_operator_holds_every_permission(operated: Broker, home: Path) -> None:
    """No user has permissions on a new vhost; the operator on the socket still manages its
    queues, as rabbitmqctl does on the node."""
    assert operated.data_dir is not None
    assert gateway("ctl", "add_vhost", "ops-vhost", cwd=home).returncode == 0
    local = httpx.Client(transport=httpx.HTTPTransport(uds=str(operated.data_dir / "ctl.sock")),
                         base_url="http://localhost/api", timeout=10)
    with local:
        assert local.get("/vhosts/ops-vhost/permissions").json() == []
        assert local.put("/queues/ops-vhost/jobs", json={"durable": True}).status_code == 201
        assert local.post("/exchanges/ops-vhost/amq.default/publish", json={
            "routing_key": "jobs", "payload": "x", "payload_encoding": "string",
            "properties": {}}).json() == {"routed": True}
    result = gateway("ctl", "-q", "list_queues", "-p", "ops-vhost", cwd=home)
    assert result.returncode == 0 and ["jobs", "1"] in rows(result.stdout), result.stderr
    for args in (["purge_queue", "jobs"], ["delete_queue", "jobs"]):
        result = gateway("ctl", *args, "-p", "ops-vhost", cwd=home)
        assert result.returncode == 0, result.stderr
    assert gateway("ctl", "delete_vhost", "ops-vhost", cwd=home).returncode == 0


def test_the_socket_is_the_broker_users_alone(operated: Broker) -> None:
    assert operated.data_dir is not None
    info = os.stat(operated.data_dir / "ctl.sock")
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()


def test_another_user_cannot_use_the_socket(operated: Broker, home: Path) -> None:
    assert operated.data_dir is not None
    path = operated.data_dir / "ctl.sock"
    # the operator's config names the http port (the data directory is "data" here)
    (home / "gateway.toml").write_text(f'[listeners]\nhttp = {operated.ports["http"]}\n')
    if os.geteuid() == 0:
        assert as_other_user("connect", str(path)).stdout.strip() == \
            "PermissionError: Permission denied"
        result = as_other_user("ctl", "--config", "gateway.toml", "list_users", cwd=home)
    else:  # no other user to be: take the permission away from the socket instead
        os.chmod(path, 0)
        try:
            with socket.socket(socket.AF_UNIX) as sock, pytest.raises(PermissionError):
                sock.connect(str(path))
            result = gateway("ctl", "--config", "gateway.toml", "list_users", cwd=home)
        finally:
            os.chmod(path, 0o600)
    # it falls back to HTTP as guest, who is deleted: refused, and told why not the socket
    assert result.returncode == 77, result.stderr
    assert "the broker refused the credentials of user 'guest'" in result.stderr
    assert f"the local control socket {path} was not used" in result.stderr


def test_peer_credentials_are_checked_when_the_mode_is_loosened(operated: Broker) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a second OS user to connect as (the tests run as root in CI)")
    assert operated.data_dir is not None
    path = operated.data_dir / "ctl.sock"
    os.chmod(path, 0o666)  # a mistake: the broker still refuses other users
    try:
        assert as_other_user("connect", str(path)).stdout.strip() == "closed"
    finally:
        os.chmod(path, 0o600)
    assert "local control channel: refused a process of another user" in operated.output()


def test_http_without_credentials_is_refused(operated: Broker) -> None:
    with api(operated) as anonymous:
        response = anonymous.get("/overview")
    assert response.status_code == 401
    assert response.headers["server"].startswith("gateway")


def test_socket_lifecycle_lock_stale_socket_and_shutdown(fresh_broker: Broker,
                                                         tmp_path: Path) -> None:
    assert fresh_broker.data_dir is not None and fresh_broker._process is not None
    path = fresh_broker.data_dir / "ctl.sock"
    config = str(config_for(fresh_broker, tmp_path))
    # a second broker on the same data directory: one clear line, not a second writer
    second = gateway("serve", "--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0",
                     "--http-port", "0", "--data-dir", str(fresh_broker.data_dir))
    assert second.returncode == 1
    assert [line for line in second.stderr.splitlines() if not line[:4].isdigit()] == [
        f"gateway: the data directory {fresh_broker.data_dir} is in use by another running "
        f"broker (pid {fresh_broker._process.pid}); stop it, or give this one its own with "
        "--data-dir"]
    # killed: the socket file stays behind, and ctl says what it is
    fresh_broker.stop(kill=True)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    result = gateway("ctl", "--config", config, "list_users")
    assert result.returncode == 69
    assert "unable to reach the broker's HTTP API" in result.stderr
    assert "no broker listens on it (left by a broker that is not running)" in result.stderr
    # the next start replaces it
    fresh_broker.start()
    result = gateway("ctl", "--config", config, "-q", "list_users")
    assert result.returncode == 0 and ["guest", "[administrator]"] in rows(result.stdout)
    # stopped cleanly: gone
    fresh_broker.stop()
    assert not path.exists()
