"""`gateway ctl` and `gateway info` against a running broker, through its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest
from mgmt_client import api_for, q

from gateway.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def ctl(broker: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["ctl", "--host", broker.host, "--port", str(broker.ports["http"]),
                 "--username", broker.user, "--password", broker.password, *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_broker_is_a_clear_error_and_exit_69() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "ctl", "--host", "127.0.0.1", "--port",
         str(free_port()), "list_queues"], cwd=REPO_ROOT, capture_output=True, timeout=30)
    assert result.returncode == 69
    assert b"unable to reach the broker's HTTP API" in result.stderr
    assert b"Traceback" not in result.stderr


def test_list_queues_with_columns(broker: Any, capsys: pytest.CaptureFixture[str],
                                  unique: Callable[[str], str]) -> None:
    name = unique("ctl-q")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        for _ in range(3):
            ch.basic_publish("", name, b"x")
        code, out, _ = ctl(broker, capsys, "-q", "list_queues", "name", "messages", "consumers")
        assert code == 0
        table = rows(out)
        assert table[0] == ["name", "messages", "consumers"]
        assert [name, "3", "0"] in table[1:]
        code, out, _ = ctl(broker, capsys, "--formatter", "json", "list_queues", "name",
                           "durable")
        assert code == 0
        assert {"name": name, "durable": False} in json.loads(out)
        code, _, err = ctl(broker, capsys, "list_queues", "name", "bogus")
        assert code == 64 and "unknown column(s) bogus" in err
        code, out, _ = ctl(broker, capsys, "purge_queue", name)
        assert code == 0 and f"Purging queue '{name}'" in out
        code, out, _ = ctl(broker, capsys, "-q", "list_queues", "name", "messages")
        assert [name, "0"] in rows(out)
        assert ctl(broker, capsys, "delete_queue", name)[0] == 0
        code, _, err = ctl(broker, capsys, "delete_queue", name)
        assert code == 65 and f"Error: no queue '{name}' in vhost '/'" in err
    finally:
        conn.close()


def test_list_exchanges_bindings_connections_channels_consumers(
        broker: Any, capsys: pytest.CaptureFixture[str], unique: Callable[[str], str]) -> None:
    name = unique("ctl-consumed")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True)
        ch.queue_bind(name, "amq.topic", "ctl.#")
        tag = ch.basic_consume(name, lambda *a: None)
        code, out, _ = ctl(broker, capsys, "-q", "list_exchanges", "name", "type")
        assert code == 0 and ["amq.topic", "topic"] in rows(out)
        code, out, _ = ctl(broker, capsys, "-q", "list_bindings")
        assert ["amq.topic", "exchange", name, "queue", "ctl.#", "{}"] in rows(out)
        code, out, _ = ctl(broker, capsys, "-q", "list_connections", "user", "protocol")
        assert ["guest", "AMQP 0-9-1"] in rows(out)
        code, out, _ = ctl(broker, capsys, "-q", "list_channels", "user", "consumer_count")
        assert ["guest", "1"] in rows(out)
        code, out, _ = ctl(broker, capsys, "-q", "list_consumers", "queue_name", "consumer_tag",
                           "ack_required")
        assert [name, tag, "true"] in rows(out)
    finally:
        conn.close()


def test_users_vhosts_permissions_and_authenticate(
        broker: Any, capsys: pytest.CaptureFixture[str], unique: Callable[[str], str]) -> None:
    user, vhost = unique("ctl-user"), unique("ctl-vhost")
    assert ctl(broker, capsys, "add_user", user, "s3cret")[0] == 0
    code, out, _ = ctl(broker, capsys, "authenticate_user", user, "s3cret")
    assert code == 0 and "Success" in out
    code, _, err = ctl(broker, capsys, "authenticate_user", user, "wrong")
    assert code == 65 and "failed to authenticate" in err  # rabbitmqctl's EX_DATAERR
    assert ctl(broker, capsys, "set_user_tags", user, "monitoring", "management")[0] == 0
    code, out, _ = ctl(broker, capsys, "-q", "list_users")
    assert [user, "[monitoring, management]"] in rows(out)
    assert ctl(broker, capsys, "change_password", user, "n3w")[0] == 0
    assert ctl(broker, capsys, "authenticate_user", user, "n3w")[0] == 0
    assert ctl(broker, capsys, "authenticate_user", user, "s3cret")[0] == 65
    # the tags survived the password change
    code, out, _ = ctl(broker, capsys, "-q", "list_users")
    assert [user, "[monitoring, management]"] in rows(out)

    assert ctl(broker, capsys, "add_vhost", vhost)[0] == 0
    code, out, _ = ctl(broker, capsys, "-q", "list_vhosts")
    assert [vhost] in rows(out)
    assert ctl(broker, capsys, "-p", vhost, "set_permissions", user, "^app-", ".*", ".*")[0] \
        == 0
    code, out, _ = ctl(broker, capsys, "-q", "-p", vhost, "list_permissions")
    assert [user, "^app-", ".*", ".*"] in rows(out)
    code, out, _ = ctl(broker, capsys, "-q", "list_user_permissions", user)
    assert [vhost, "^app-", ".*", ".*"] in rows(out)
    # the new user can use the new vhost over AMQP at once, within its permissions
    params = pika.URLParameters(f"amqp://{user}:n3w@{broker.host}:{broker.amqp_port}/"
                                f"{q(vhost)}")
    conn = pika.BlockingConnection(params)
    try:
        conn.channel().queue_declare("app-orders")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            conn.channel().queue_declare("other")
        assert refused.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()
    assert ctl(broker, capsys, "-p", vhost, "clear_permissions", user)[0] == 0
    code, out, _ = ctl(broker, capsys, "-q", "-p", vhost, "list_permissions")
    assert all(r[0] != user for r in rows(out)[1:])
    assert ctl(broker, capsys, "delete_vhost", vhost)[0] == 0
    assert ctl(broker, capsys, "delete_user", user)[0] == 0
    code, _, err = ctl(broker, capsys, "delete_user", user)
    assert code == 67 and f"Error: no user '{user}'" in err  # rabbitmqctl's EX_NOUSER


def test_policies(broker: Any, capsys: pytest.CaptureFixture[str],
                  unique: Callable[[str], str]) -> None:
    name, queue = unique("ctl-policy"), unique("ctl-limited")
    api = api_for(broker)
    try:
        api.put(f"/queues/%2F/{q(queue)}", {"durable": False})
        code, _, _ = ctl(broker, capsys, "set_policy", name, f"^{queue}$",
                         '{"max-length": 2}', "--apply-to", "queues", "--priority", "5")
        assert code == 0
        code, out, _ = ctl(broker, capsys, "-q", "list_policies")
        assert ["/", name, f"^{queue}$", "queues", '{"max-length":2}', "5"] in rows(out)
        assert api.json(f"/queues/%2F/{q(queue)}")["policy"] == name
        for i in range(4):
            api.post("/exchanges/%2F/amq.default/publish", {
                "routing_key": queue, "payload": str(i), "payload_encoding": "string",
                "properties": {}})
        assert api.json(f"/queues/%2F/{q(queue)}")["messages"] == 2
        assert ctl(broker, capsys, "clear_policy", name)[0] == 0
        code, out, _ = ctl(broker, capsys, "-q", "list_policies")
        assert all(r[1] != name for r in rows(out)[1:])
        code, _, err = ctl(broker, capsys, "set_policy", name, ".*", "{not json")
        assert code == 65 and "not JSON" in err
    finally:
        api.delete(f"/queues/%2F/{q(queue)}")
        api.close()


def test_status_and_definitions_round_trip(broker: Any, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path,
                                           unique: Callable[[str], str]) -> None:
    code, out, _ = ctl(broker, capsys, "status")
    assert code == 0 and "Product name: gateway" in out
    assert f"port: {broker.amqp_port}, protocol: amqp" in out
    queue = unique("ctl-defs")
    api = api_for(broker)
    try:
        api.put(f"/queues/%2F/{q(queue)}", {"durable": True})
        path = tmp_path / "defs.json"
        assert ctl(broker, capsys, "export_definitions", str(path))[0] == 0
        data = json.loads(path.read_text())
        assert any(item["name"] == queue for item in data["queues"])
        api.delete(f"/queues/%2F/{q(queue)}")
        assert api.get(f"/queues/%2F/{q(queue)}").status_code == 404
        assert ctl(broker, capsys, "import_definitions", str(path))[0] == 0
        assert api.json(f"/queues/%2F/{q(queue)}")["durable"] is True
    finally:
        api.delete(f"/queues/%2F/{q(queue)}")
        api.close()


def test_info_prints_queues_with_depth_bars(broker: Any, capsys: pytest.CaptureFixture[str],
                                           unique: Callable[[str], str]) -> None:
    deep, shallow = unique("info-deep"), unique("info-shallow")
    api = api_for(broker)
    try:
        for name, n in ((deep, 8), (shallow, 2)):
            api.put(f"/queues/%2F/{q(name)}", {"durable": False})
            for _ in range(n):
                api.post("/exchanges/%2F/amq.default/publish", {
                    "routing_key": name, "payload": "x", "payload_encoding": "string",
                    "properties": {}})
        code = main(["info", "--once", "--host", broker.host, "--port",
                     str(broker.ports["http"])])
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith("gateway ")
        assert "connections:" in out and "QUEUE" in out
        lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
        assert lines[deep].count("█") > lines[shallow].count("█") > 0
        assert " 8 " in lines[deep]
    finally:
        api.delete(f"/queues/%2F/{q(deep)}")
        api.delete(f"/queues/%2F/{q(shallow)}")
        api.close()


def test_info_refreshes_in_place_until_stopped(broker: Any) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "info", "--interval", "0.2", "--host", broker.host,
         "--port", str(broker.ports["http"])],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    seen = b""
    watchdog = threading.Timer(20.0, process.kill)  # a hung view cannot hang the suite
    watchdog.start()
    try:
        # three frames, each starting with the clear-screen sequence
        while seen.count(b"\x1b[H\x1b[2J") < 3 and len(seen) < 1_000_000:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            seen += chunk
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(10)
    assert seen.count(b"\x1b[H\x1b[2J") >= 3, seen[-500:]
    assert b"QUEUE" in seen and b"connections:" in seen
