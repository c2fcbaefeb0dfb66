"""`gateway ctl` as rabbitmqctl users type it, and what it says when something is wrong:
`-p VHOST` anywhere, usage errors 64, errors that name the missing object, an authorisation
refusal told apart from bad credentials, and another program on the HTTP port (a RabbitMQ,
say) reported as not gateway. Every command runs as a child process, as a user runs it."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_run import gateway, rows

from gateway.cli.ctl import COMMANDS
from gateway.cli.main import build_parser


def http(broker: Any) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(broker.ports["http"])]


def as_guest(broker: Any) -> list[str]:
    return [*http(broker), "-U", broker.user, "-P", broker.password]


@pytest.fixture
def api(broker: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                      auth=(broker.user, broker.password), timeout=10) as client:
        yield client


# -- -p anywhere, usage errors --------------------------------------------------------------


def test_set_permissions_in_rabbitmqctl_order(broker: Any, api: httpx.Client,
                                              unique: Callable[[str], str]) -> None:
    user, vhost = unique("perm-user"), unique("perm-vhost")
    assert api.put(f"/users/{user}", json={"password": "pw", "tags": ""}).status_code == 201
    assert api.put(f"/vhosts/{vhost}").status_code == 201
    try:
        # rabbitmqctl's order, as in the tutorials: -p right after the command
        result = gateway("ctl", *as_guest(broker), "set_permissions", "-p", vhost, user,
                         "^conf", "^write", "^read")
        assert result.returncode == 0, result.stderr
        assert f'Setting permissions for user "{user}" in vhost "{vhost}"' in result.stdout
        shown = api.get(f"/permissions/{vhost}/{user}").json()
        assert (shown["configure"], shown["write"], shown["read"]) == ("^conf", "^write",
                                                                        "^read")
        # before the command, and after its arguments, alike
        for args in (["-p", vhost, "set_permissions", user, "^c2", "^w2", "^r2"],
                     ["set_permissions", user, "^c2", "^w2", "^r2", "-p", vhost],
                     ["set_permissions", user, "^c2", "--vhost", vhost, "^w2", "^r2"]):
            assert gateway("ctl", *as_guest(broker), *args).returncode == 0
        listed = [gateway("ctl", *as_guest(broker), *args).stdout for args in (
            ["-q", "-p", vhost, "list_permissions"], ["list_permissions", "-q", "-p", vhost],
            ["list_permissions", "-p", vhost, "-q"])]
        assert listed[0] == listed[1] == listed[2]
        assert [user, "^c2", "^w2", "^r2"] in rows(listed[0])
    finally:
        api.delete(f"/vhosts/{vhost}")
        api.delete(f"/users/{user}")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_p_after_its_arguments(name: str) -> None:
    scratch = argparse.ArgumentParser()
    COMMANDS[name][1](scratch)  # the command's own arguments
    positionals = [a for a in scratch._actions if not a.option_strings and a.nargs != "*"]
    parser = build_parser()
    args = parser.parse_args(["ctl", name, *(["x"] * len(positionals)), "-p", "elsewhere"])
    assert args.vhost == "elsewhere"
    args = parser.parse_args(["ctl", "-p", "before", name, *(["x"] * len(positionals))])
    assert args.vhost == "before"  # not reset by the command's own -p default


@pytest.mark.parametrize("args", [
    ["ctl"],                                          # no command
    ["ctl", "no_such_command"],
    ["ctl", "set_permissions", "only-a-user"],        # too few arguments
    ["ctl", "delete_user", "a", "b"],                 # too many
    ["ctl", "list_users", "--no-such-option"],
    ["ctl", "--formatter", "xml", "list_users"],
    ["info", "--no-such-option"],
])
def test_usage_errors_exit_64(args: list[str]) -> None:
    result = gateway(*args)
    assert result.returncode == 64, result.stderr
    assert "usage: gateway" in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.stderr


# -- errors that name the object ----------------------------------------------------------------


@pytest.mark.parametrize(("args", "code", "message"), [
    (["list_queues", "-p", "nope"], 65, "Error: no vhost 'nope'"),
    (["set_permissions", "-p", "nope", "guest", ".*", ".*", ".*"], 65,
     "Error: no vhost 'nope'"),
    (["set_permissions", "-p", "/", "no-such-user", ".*", ".*", ".*"], 67,
     "Error: no user 'no-such-user'"),
    (["delete_user", "no-such-user"], 67, "Error: no user 'no-such-user'"),
    (["list_user_permissions", "no-such-user"], 67, "Error: no user 'no-such-user'"),
    (["delete_queue", "no-such-queue"], 65, "Error: no queue 'no-such-queue' in vhost '/'"),
    (["purge_queue", "-p", "nope", "q"], 65, "Error: no vhost 'nope'"),
    (["purge_queue", "no-such-queue"], 65, "Error: no queue 'no-such-queue' in vhost '/'"),
    (["clear_policy", "no-such-policy"], 65,
     "Error: no policy 'no-such-policy' in vhost '/'"),
    (["delete_vhost", "nope"], 65, "Error: no vhost 'nope'"),
    (["close_connection", "no-such-connection", "bye"], 65,
     "Error: no connection 'no-such-connection'"),
    (["set_permissions", "guest", "(", ".*", ".*"], 65, "not a valid regular expression"),
])
def test_errors_name_the_object(broker: Any, args: list[str], code: int,
                                message: str) -> None:
    result = gateway("ctl", *as_guest(broker), *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Not Found" not in result.stderr and "Traceback" not in result.stderr


def test_not_authorised_is_not_bad_credentials(broker: Any, api: httpx.Client,
                                               unique: Callable[[str], str]) -> None:
    plain, limited, queue = unique("plain"), unique("limited"), unique("ctl-locked")
    assert api.put(f"/users/{plain}", json={"password": "pw", "tags": ""}).status_code == 201
    assert api.put(f"/users/{limited}", json={"password": "pw", "tags": "management"}
                   ).status_code == 201
    assert api.put(f"/permissions/%2F/{limited}", json={
        "configure": "", "write": "", "read": "^only-this$"}).status_code == 201
    assert api.put(f"/queues/%2F/{queue}", json={"durable": False}).status_code == 201
    try:
        # a user without management tags (the API answers 401 not_authorised)
        result = gateway("ctl", *http(broker), "-U", plain, "-P", "pw", "list_users")
        assert result.returncode == 77
        assert f"Error: not authorised: user '{plain}' may not do that" in result.stderr
        assert "credentials" not in result.stderr
        # a management user without the read permission on the queue (403)
        result = gateway("ctl", *http(broker), "-U", limited, "-P", "pw", "purge_queue", queue)
        assert result.returncode == 77
        assert (f"Error: not authorised: user '{limited}' may not do that (the broker says: "
                f"access to queue '{queue}' in vhost '/' refused for user '{limited}')"
                ) in result.stderr
        assert "credentials" not in result.stderr
        # a wrong password is what is called bad credentials
        result = gateway("ctl", *http(broker), "-U", limited, "-P", "wrong", "list_queues")
        assert result.returncode == 77
        assert f"the broker refused the credentials of user '{limited}'" in result.stderr
    finally:
        api.delete(f"/queues/%2F/{queue}")
        api.delete(f"/users/{plain}")
        api.delete(f"/users/{limited}")


# -- not gateway on the port --------------------------------------------------------------------

RABBITMQ_OVERVIEW = {  # the start of RabbitMQ 3.12's answer (no message_bytes_held anywhere)
    "management_version": "3.12.1", "rates_mode": "basic", "product_version": "3.12.1",
    "product_name": "RabbitMQ", "rabbitmq_version": "3.12.1", "cluster_name": "rabbit@host",
    "erlang_version": "25.3", "node": "rabbit@host", "object_totals": {"connections": 0},
    "listeners": [{"node": "rabbit@host", "protocol": "amqp", "ip_address": "::",
                   "port": 5672}]}


class _OtherBroker(BaseHTTPRequestHandler):
    """What answers on 15672 when a RabbitMQ runs there: its management API's JSON."""

    server_header: str | None = None

    def version_string(self) -> str:
        return self.server_header or ""

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "server" and not value:
            return  # no Server header at all
        super().send_header(keyword, value)

    def do_GET(self) -> None:
        body = json.dumps(RABBITMQ_OVERVIEW if self.path.startswith("/api/overview")
                          else [{"name": "rabbit@host", "os_pid": "1"}]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["Cowboy", None], ids=["server-cowboy", "no-server-header"])
def other_broker(request: pytest.FixtureRequest) -> Iterator[int]:
    handler = type("Handler", (_OtherBroker,), {"server_header": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_ctl_and_info_say_when_the_port_is_not_gateway(other_broker: int,
                                                       tmp_path: Path) -> None:
    port = str(other_broker)
    for args in (["ctl", "--host", "127.0.0.1", "--port", port, "status"],
                 ["ctl", "--host", "127.0.0.1", "--port", port, "list_queues"],
                 ["info", "--once", "--host", "127.0.0.1", "--port", port]):
        result = gateway(*args)
        assert result.returncode == 69, result.stderr
        assert f"http://127.0.0.1:{port} answers, but it is not gateway" in result.stderr
        assert "another broker, such as RabbitMQ" in result.stderr
        assert "Traceback" not in result.stderr and "KeyError" not in result.stderr
        assert "rabbit@host" not in result.stdout  # nothing of the other broker's shown
    # the same when the config's port is the other broker's, and no --port is given
    config = tmp_path / "gateway.toml"
    config.write_text(f"[listeners]\nhttp = {port}\n[store]\ndata_dir = \"{tmp_path}\"\n")
    result = gateway("ctl", "--config", str(config), "status")
    assert result.returncode == 69 and "it is not gateway" in result.stderr


def test_ctl_on_a_port_that_is_not_http(broker: Any) -> None:
    result = gateway("ctl", "--host", "127.0.0.1", "--port", str(broker.amqp_port),
                     "list_queues")
    assert result.returncode == 69
    assert "does not speak HTTP" in result.stderr and "not gateway's HTTP API" in result.stderr
