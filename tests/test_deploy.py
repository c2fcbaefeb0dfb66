"""deploy/cluster/compose.yml: three clustered RabbitMQ nodes, two gateway nodes in front
(`gateway serve --backend rabbitmq`), a TCP load balancer (haproxy) before them.

No Docker engine runs here: the file is validated by Compose itself (`docker compose
config` where the compose plugin is installed, else Debian's `docker-compose config`,
which `make test` installs), and what Compose resolves is checked against gateway's own
argument parser and config (so the gateway flags in the file cannot drift from `gateway
serve`'s), RabbitMQ's peer discovery list and haproxy's backends."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import build_parser, serve_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "cluster"
COMPOSE = CLUSTER / "compose.yml"
ENV = {"RABBITMQ_PASS": "s3cret", "ERLANG_COOKIE": "cookie-for-the-test"}
RABBITS = ["rabbit-1", "rabbit-2", "rabbit-3"]
GATEWAYS = ["gateway-1", "gateway-2"]


def compose_command() -> list[str]:
    """Compose's own command line: the docker plugin, else Debian's docker-compose."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True,
                               timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("neither `docker compose` nor `docker-compose` is installed: run `make "
                    "test`, whose setup installs Debian's docker-compose", pytrace=False)
    return [legacy]


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RABBITMQ_USER", "RABBITMQ_PASS", "ERLANG_COOKIE")}
    return subprocess.run([*compose_command(), "--file", str(COMPOSE), "config"],
                          cwd=CLUSTER, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as Compose resolves it (variables interpolated, anchors merged)."""
    done = compose_config(ENV)
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(done.stdout)
    assert isinstance(document, dict)
    return document


def test_compose_validates_the_file_with_its_services(resolved: dict[str, Any]) -> None:
    assert sorted(resolved["services"]) == sorted([*RABBITS, *GATEWAYS, "balancer"])


def test_compose_refuses_to_start_without_the_secrets() -> None:
    for missing in ENV:
        done = compose_config({k: v for k, v in ENV.items() if k != missing})
        assert done.returncode != 0
        assert missing in done.stderr


def gateway_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list) and command[:2] == ["gateway", "serve"], command
    return [str(word) for word in command[1:]]


def test_gateway_commands_parse_with_gateway_serves_parser(resolved: dict[str, Any]) -> None:
    for name in GATEWAYS:
        args = build_parser().parse_args(gateway_args(resolved["services"][name]))
        config = serve_config(args)  # every check `gateway serve` makes before it starts
        backend = config.backend
        assert backend.kind == "rabbitmq"
        assert backend.workers == 2
        hosts = [re.search(r"@([^:/]+):5672/", url)[1]  # type: ignore[index]
                 for url in backend.rabbitmq.urls]
        assert hosts == RABBITS  # one --upstream per RabbitMQ node
        assert all("admin:s3cret@" in url for url in backend.rabbitmq.urls)
        assert backend.rabbitmq.management_url == "http://admin:s3cret@rabbit-1:15672"
        assert config.listeners.host == "0.0.0.0"
        assert config.listeners.amqp is None  # AMQP clients go to RabbitMQ itself


def test_rabbitmq_nodes_cluster_by_their_hostnames(resolved: dict[str, Any]) -> None:
    conf = (CLUSTER / "rabbitmq.conf").read_text(encoding="utf-8")
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    listed = re.findall(r"classic_config\.nodes\.\d+ = rabbit@(\S+)", conf)
    assert listed == RABBITS
    cookies = set()
    for name in RABBITS:
        service = resolved["services"][name]
        assert service["hostname"] == name
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
                  for v in service["volumes"]]
        assert any(m.endswith(":/etc/rabbitmq/conf.d/20-cluster.conf") or
                   ("rabbitmq.conf" in m and "/etc/rabbitmq/conf.d/" in m) for m in mounts)
        environment = service["environment"]
        cookies.add(environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"])
        assert environment["RABBITMQ_DEFAULT_PASS"] == "s3cret"
    assert cookies == {"-setcookie cookie-for-the-test"}  # one cookie for the three


def container_port(entry: object) -> int:
    """The container side of a `ports` entry as Compose prints it: long syntax, or
    "127.0.0.1:1883:1883/tcp" (docker-compose 1.x)."""
    if isinstance(entry, dict):
        return int(entry["target"])
    return int(str(entry).rsplit(":", 1)[-1].split("/", 1)[0])


def test_the_balancer_fronts_the_gateways_ports(resolved: dict[str, Any]) -> None:
    cfg = (CLUSTER / "haproxy.cfg").read_text(encoding="utf-8")
    config = serve_config(build_parser().parse_args(
        gateway_args(resolved["services"]["gateway-1"])))
    for listener in ("mqtt", "stomp", "http"):
        port = getattr(config.listeners, listener)
        backend = cfg.split(f"\nbackend gateways_{listener}\n", 1)[1].split("\n\n", 1)[0]
        assert re.findall(r"server (\S+) (\S+)", backend) == [
            (name, f"{name}:{port}") for name in GATEWAYS]
        assert f"bind :{port}\n    default_backend gateways_{listener}" in cfg
    targets = {container_port(p) for p in resolved["services"]["balancer"]["ports"]}
    assert targets == {config.listeners.mqtt, config.listeners.stomp, config.listeners.http,
                       5672}  # and AMQP, to RabbitMQ
    for name in [*GATEWAYS, *RABBITS[1:]]:  # reached through the balancer only
        assert "ports" not in resolved["services"][name]
