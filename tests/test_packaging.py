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
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.config import TLS_LISTENERS, default_config_text, load_config

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
    # gateway serve, through the entry that applies GATEWAY_DEFAULT_USER/_PASS and refuses
    # an administrator open to every address (tests/test_container.py runs it)
    assert command[:4] == ["python", "-m", "gateway.container", "serve"]
    assert flag_value(command, "--host") == "0.0.0.0"
    assert flag_value(command, "--data-dir") == image_data_dir() == "/var/lib/gateway"


# RabbitMQ's ports for the listeners that are off by default
OPTIONAL_PORTS = {"web_stomp": 15674, "web_mqtt": 15675, "amqps": 5671, "mqtts": 8883,
                  "stomps": 61614, "https": 15671, "web_stomp_tls": 15673,
                  "web_mqtt_tls": 15676}


def test_dockerfile_exposes_every_default_port() -> None:
    exposed = {int(port.split("/")[0]) for args in dockerfile("EXPOSE") for port in args.split()}
    assert default_ports() <= exposed


def test_websocket_and_tls_ports_are_exposed_and_documented() -> None:
    assert set(OPTIONAL_PORTS) == set(TLS_LISTENERS) | {"web_stomp", "web_mqtt"}
    exposed = {int(port.split("/")[0]) for args in dockerfile("EXPOSE") for port in args.split()}
    assert set(OPTIONAL_PORTS.values()) <= exposed
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    compose_text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for name, port in OPTIONAL_PORTS.items():
        # the compose file shows how to publish each, naming the config key to turn it on
        assert re.search(rf"# - \"127\.0\.0\.1:{port}:{port}\" +# .*\b{name}\b",
                         compose_text), f"{name} ({port}) is not documented in compose"
        assert str(port) in text
    assert "WebSocket on /ws" in text and "WebSocket on /ws" in compose_text


def test_image_has_a_healthcheck_that_the_image_can_run() -> None:
    (check,) = dockerfile("HEALTHCHECK")
    options, _, cmd = check.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    command = json.loads(cmd)
    assert command[:4] == ["python", "-m", "gateway.container", "healthcheck"]
    assert command[4] == flag_value(image_command(), "--config")
    compose_check = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]["gateway"][
        "healthcheck"]
    assert compose_check["test"] == ["CMD", *command]


def test_image_config_overlay_is_valid(tmp_path: Path) -> None:
    """The config the image writes at build time loads and changes nothing: guest stays
    loopback-only (the administrator comes from GATEWAY_DEFAULT_USER/_PASS)."""
    config_path = flag_value(image_command(), "--config")
    runs = " ".join(dockerfile("RUN"))
    match = re.search(r"printf '([^']*)' +> " + re.escape(config_path), runs)
    assert match, f"the Dockerfile writes {config_path} with printf"
    overlay = tmp_path / "gateway.toml"
    overlay.write_text(match.group(1).replace("\\n", "\n"), encoding="utf-8")
    assert load_config(overlay) == load_config()
    assert "guest" in load_config(overlay).auth.loopback_users


def test_compose_passes_the_default_user_from_the_environment(
        compose: dict[str, object]) -> None:
    environment = service(compose)["environment"]
    assert isinstance(environment, dict)
    assert set(environment) == {"GATEWAY_DEFAULT_USER", "GATEWAY_DEFAULT_PASS"}


# --------------------------------------------------------------------------- the lock file

LOCK = ROOT / "requirements.lock"


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text(encoding="utf-8"))
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?: +--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"not a pinned, hashed requirement: {line!r}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", match[3])
        pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = (match[2], hashes)
    return pins


def test_image_installs_pinned_hashed_dependencies() -> None:
    runs = dockerfile("RUN")
    assert any("pip install --require-hashes --no-deps -r requirements.lock" in r for r in runs)
    assert any("pip install --no-deps --no-build-isolation ." in r for r in runs)
    assert ("COPY", "requirements.lock ./") in dockerfile_instructions()
    assert "://" not in LOCK.read_text(encoding="utf-8")  # no index or machine paths
    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [re.split(r"[<>=!~; \[]", dep, maxsplit=1)[0]
              for dep in project["project"]["dependencies"]]
    wanted += [re.split(r"[<>=!~; \[]", dep, maxsplit=1)[0]
               for dep in project["build-system"]["requires"]]
    for name in wanted:
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert key in pins, (f"{name} (pyproject.toml) is not in requirements.lock: "
                             "regenerate it (its header has the command)")


def test_lock_pins_the_versions_the_tests_run() -> None:
    """The image runs what the test suite ran: each runtime pin is the installed version."""
    from importlib.metadata import PackageNotFoundError, version

    for name, (pinned, _) in lock_pins().items():
        if name == "setuptools":
            continue  # the build backend, not imported at run time
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is locked but not installed")
        assert installed == pinned, f"{name}: locked {pinned}, installed {installed}"


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


# --------------------------------------------------------------------------- make's apt installs

INSTALL_SCRIPT = ROOT / "scripts" / "install-debian-packages.sh"


def test_make_installs_debian_packages_through_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "INSTALL_DEBS := sh scripts/install-debian-packages.sh" in makefile
    for target, packages in (("$(SYSTEM_TOOLS):", "chromium rabbitmq-server docker-compose"),
                             ("$(BENCH_TOOLS):", "rabbitmq-server mosquitto")):
        recipe = makefile.split(f"\n{target}\n", 1)[1].split("\n\n", 1)[0]
        assert f"$(INSTALL_DEBS) {packages}" in recipe
        assert "apt-get install" not in recipe  # only through the script
    assert "apt-get" not in makefile.replace("(apt-get, sudo)", "")


def fake_system(tmp_path: Path, *, installed: set[str], running: set[str],
                policy: str | None) -> tuple[dict[str, str], Path]:
    """Stand-ins for the commands the script runs, in a directory first on PATH: apt-get
    (its "install" runs each package's postinst, which asks policy-rc.d and starts the
    service unless told 101), dpkg-query, service, systemctl, update-rc.d, sudo. Service
    state is a file per running service. Returns the environment and the state directory."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in running:
        (state / f"running-{name}").touch()
    for name in installed:
        (state / f"installed-{name}").touch()
    policy_path = tmp_path / "policy-rc.d"
    if policy is not None:
        policy_path.write_text(policy)
        policy_path.chmod(0o755)
    scripts = {
        "apt-get": f"""
echo "apt-get $*" >> {state}/log
[ "$1" = install ] || exit 0
for pkg in "$@"; do
  case "$pkg" in -*|install) continue;; esac
  touch {state}/installed-$pkg
  case "$pkg" in rabbitmq-server|mosquitto) ;; *) continue;; esac
  echo "enabled" > {state}/enabled-$pkg
  if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" $pkg start; rc=$?; else rc=0; fi
  [ $rc = 101 ] || touch {state}/running-$pkg
done""",
        "dpkg-query": f"""
pkg=$(eval echo \\${{$#}})
[ -e {state}/installed-$pkg ] && printf 'install ok installed' || exit 1""",
        "service": f"""
echo "service $*" >> {state}/log
case "$2" in
  status) [ -e {state}/running-$1 ];;
  stop) rm -f {state}/running-$1;;
esac""",
        "systemctl": f"""
echo "systemctl $*" >> {state}/log
case "$1" in
  is-active) [ -e {state}/running-$3 ];;
  stop) rm -f {state}/running-$2;;
  disable) rm -f {state}/enabled-$3;;
esac""",
        "update-rc.d": f"""
echo "update-rc.d $*" >> {state}/log
[ "$2" = disable ] && rm -f {state}/enabled-$1""",
        "sudo": 'exec "$@"',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body.lstrip("\n") + "\n")
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "POLICY_RC_D": str(policy_path)}
    return env, state


def run_install(env: dict[str, str], *packages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(INSTALL_SCRIPT), *packages], env=env, text=True,
                          capture_output=True, timeout=30)


def test_install_keeps_rabbitmq_from_starting_and_disables_it(tmp_path: Path) -> None:
    env, state = fake_system(tmp_path, installed=set(), running=set(), policy=None)
    result = run_install(env, "chromium", "rabbitmq-server")
    assert result.returncode == 0, result.stderr
    assert (state / "installed-rabbitmq-server").exists()
    assert not (state / "running-rabbitmq-server").exists()  # never started
    assert not (state / "enabled-rabbitmq-server").exists()  # nor enabled at boot
    assert not Path(env["POLICY_RC_D"]).exists()  # the policy was for the install only


def test_an_existing_permissive_policy_is_kept_and_the_started_service_stopped(
        tmp_path: Path) -> None:
    permissive = "#!/bin/sh\nexit 0\n"
    env, state = fake_system(tmp_path, installed=set(), running=set(), policy=permissive)
    result = run_install(env, "rabbitmq-server", "mosquitto")
    assert result.returncode == 0, result.stderr
    assert Path(env["POLICY_RC_D"]).read_text() == permissive  # left as it was
    log = (state / "log").read_text()
    for name in ("rabbitmq-server", "mosquitto"):
        assert not (state / f"running-{name}").exists(), log
        assert not (state / f"enabled-{name}").exists(), log
        assert f"stopping the {name} service the install started" in result.stderr


def test_a_rabbitmq_installed_before_is_left_alone(tmp_path: Path) -> None:
    permissive = "#!/bin/sh\nexit 0\n"
    env, state = fake_system(tmp_path, installed={"rabbitmq-server"},
                             running={"rabbitmq-server"}, policy=permissive)
    (state / "enabled-rabbitmq-server").write_text("enabled")
    result = run_install(env, "chromium", "rabbitmq-server")
    assert result.returncode == 0, result.stderr
    assert (state / "running-rabbitmq-server").exists()  # the user's own: not ours to stop
    assert (state / "enabled-rabbitmq-server").exists()
    assert "stop" not in (state / "log").read_text().replace("apt-get", "")


def test_install_fails_when_the_service_cannot_be_stopped(tmp_path: Path) -> None:
    env, state = fake_system(tmp_path, installed=set(), running=set(),
                             policy="#!/bin/sh\nexit 0\n")
    for name in ("service", "systemctl"):  # a service manager that does not stop it
        path = Path(env["PATH"].split(":")[0]) / name
        path.write_text(path.read_text().replace("rm -f", "true"))
    result = run_install(env, "rabbitmq-server")
    assert result.returncode == 1
    assert "the rabbitmq-server service still runs after the install" in result.stderr


def test_install_script_usage() -> None:
    result = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 64 and "usage" in result.stderr
