"""The files that package and run the broker agree with each other and with the config.

No Docker engine runs here, so the Dockerfile and docker-compose.yml are read as text and
checked against the default config: every default listener port is exposed and published,
and the data volume is mounted where the image keeps its data.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.config import default_config_text, load_config

ROOT = Path(__file__).resolve().parent.parent


def default_ports() -> set[int]:
    ports = {port for port in load_config().listeners.ports().values() if port is not None}
    assert ports, "the default config has at least one listener"
    return ports


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def dockerfile(instruction: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == instruction]


def image_data_dir() -> str:
    (volume,) = dockerfile("VOLUME")
    return volume.strip()


def image_command() -> list[str]:
    (cmd,) = dockerfile("CMD")
    command = json.loads(cmd)
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command)
    return command


def flag_value(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_dockerfile_base_and_command() -> None:
    (base,) = dockerfile("FROM")
    assert base == "python:3.11-slim"
    command = image_command()
    assert command[:2] == ["gateway", "serve"]
    assert flag_value(command, "--host") == "0.0.0.0"
    assert flag_value(command, "--data-dir") == image_data_dir() == "/var/lib/gateway"


def test_dockerfile_exposes_every_default_port() -> None:
    exposed = {int(port.split("/")[0]) for args in dockerfile("EXPOSE") for port in args.split()}
    assert default_ports() <= exposed


def test_image_config_overlay_is_valid(tmp_path: Path) -> None:
    """The config the image writes at build time loads, and only lifts the loopback rule."""
    config_path = flag_value(image_command(), "--config")
    runs = " ".join(dockerfile("RUN"))
    match = re.search(r"printf '([^']*)' > " + re.escape(config_path), runs)
    assert match, f"the Dockerfile writes {config_path} with printf"
    overlay = tmp_path / "gateway.toml"
    overlay.write_text(match.group(1).replace("\\n", "\n"), encoding="utf-8")
    config, default = load_config(overlay), load_config()
    assert config.auth.loopback_users == frozenset()
    assert config.auth.users == default.auth.users
    assert config.listeners == default.listeners


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def service(compose: dict[str, object]) -> dict[str, object]:
    services = compose["services"]
    assert isinstance(services, dict)
    gateway = services["gateway"]
    assert isinstance(gateway, dict)
    return gateway


def published(entry: object) -> tuple[int, int]:
    """(host port, container port) of a compose `ports` entry, short or long syntax."""
    if isinstance(entry, dict):
        return int(entry["published"]), int(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    return int(parts[-2]), int(parts[-1])


def test_compose_builds_this_directory(compose: dict[str, object]) -> None:
    assert service(compose)["build"] == "."


def test_compose_publishes_every_default_port(compose: dict[str, object]) -> None:
    ports = service(compose)["ports"]
    assert isinstance(ports, list)
    mapping = dict(published(entry)[::-1] for entry in ports)  # container -> host
    for port in default_ports():
        assert port in mapping, f"port {port} is not published"
        assert mapping[port] == port, f"port {port} is published as {mapping[port]}"


def test_compose_mounts_named_volume_at_data_dir(compose: dict[str, object]) -> None:
    volumes = service(compose)["volumes"]
    assert isinstance(volumes, list)
    mounts = {}
    for entry in volumes:
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry["source"]
        else:
            source, target = str(entry).split(":")[:2]
            mounts[target] = source
    data_dir = image_data_dir()
    assert data_dir in mounts, f"nothing is mounted at {data_dir}"
    declared = compose.get("volumes")
    assert isinstance(declared, dict) and mounts[data_dir] in declared, "a named volume"


# --------------------------------------------------------------------------- default config


def test_packaged_default_config_is_conf_gateway_toml() -> None:
    repo_copy = (ROOT / "conf" / "gateway.toml").read_bytes()
    packaged = (ROOT / "gateway" / "default.toml").read_bytes()
    assert repo_copy == packaged, "copy conf/gateway.toml over gateway/default.toml"
    assert default_config_text() == repo_copy.decode("utf-8")
    assert load_config(ROOT / "conf" / "gateway.toml") == load_config()


def test_pyproject_ships_default_config_and_types() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(pyproject["tool"]["setuptools"]["package-data"]["gateway"]) >= {
        "default.toml",
        "py.typed",
    }
    assert pyproject["project"]["scripts"]["gateway"] == "gateway.cli.main:main"
    assert pyproject["tool"]["pytest"]["ini_options"]["trio_mode"] is True


# --------------------------------------------------------------------------- CI


def test_ci_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run is executable"
    commands = [
        shlex.split(line)
        for line in script.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert any(command[-2:] == ["make", "test"] for command in commands)


def test_make_test_runs_lint_types_and_tests() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for tool in ("ruff check", "mypy", "pytest"):
        assert f"$(BIN)/{tool}" in makefile
    assert re.search(r"^\$\(STAMP\): pyproject\.toml", makefile, re.MULTILINE)
