"""A private RabbitMQ cluster for the upstream tests, from the system's rabbitmq-server.

Every node has its own node name (``gw-test-<pid>-<n>-<i>@localhost``), its own loopback
ports (AMQP, management, Erlang distribution), its own data, log and config directories
and Erlang cookie under one temporary directory, and the nodes find each other through a
private ``epmd`` on a free port (ERL_EPMD_PORT), so a system RabbitMQ and the system epmd
are never touched: not its node name, ports, cookie or /var/lib/rabbitmq. The server runs
as the current user (root here: RabbitMQ 3.10 starts as root without complaint once HOME
and the RABBITMQ_* paths point at writable directories). The system's rabbitmq-env.conf
is not read (RABBITMQ_CONF_ENV_FILE points at an empty file of ours).

Processes started here (epmd and each node's ``beam.smp``, through ``rabbitmq-server``,
which execs it) are stopped by their PID, never by name, and the directory is removed.
Run ``python tests/upstream/rabbit.py N`` to start N nodes, print their URLs and the
start-up time, and stop them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBIT_BIN / "rabbitmq-server"
CTL = RABBIT_BIN / "rabbitmqctl"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
START_TIMEOUT = 90.0  # seconds for one node to answer `rabbitmqctl await_startup`
CTL_TIMEOUT = 60.0
USER, PASSWORD = "gwtest", "gwtest-secret"


def available() -> bool:
    """Whether Debian's rabbitmq-server and epmd are installed."""
    return SERVER.exists() and CTL.exists() and Path(EPMD).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One RabbitMQ node of a private cluster."""

    name: str  # Erlang node name, name@localhost
    base: Path  # its directory (data, logs, config, HOME with the cookie)
    amqp_port: int
    management_port: int
    dist_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "stdout.log"

    def url(self, user: str = USER, password: str = PASSWORD, vhost: str = "%2F") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{vhost}"

    @property
    def management_url(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.management_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node; its stdout."""
        done = subprocess.run(
            [str(CTL), "-n", self.name, *args], env=self.env, capture_output=True,
            timeout=timeout, check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.name} failed ({done.returncode}): "
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def start(self) -> None:
        """Start the node (not waiting for it); ``wait`` waits."""
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(SERVER)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.base,
            )

    def wait(self, timeout: float = START_TIMEOUT) -> None:
        """Until the node has booted; RuntimeError with its log's tail if it cannot."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.name} did not start in {timeout} s:\n{self.tail()}")
            try:
                self.ctl("await_startup", "--timeout", str(max(1, int(remaining))),
                         timeout=remaining + 5)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                time.sleep(0.5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def beam_pid(self) -> int | None:
        """The PID of this node's Erlang VM: ``rabbitmq-server`` is a shell script that runs
        it as a child (and stops it on SIGTERM); the VM writes its PID to the pid file. The
        PID is used only if that process's command line names this node."""
        try:
            pid = int((self.base / "rabbit.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.base).encode() in cmdline else None

    def kill(self) -> None:
        """kill -9 of this node's VM (by its PID), as a crash would end it."""
        pid = self.beam_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (RabbitMQ shuts down cleanly on it), then SIGKILL; by PID only."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
        pid = self.beam_pid()  # the VM, if the script left it (it stops it on SIGTERM)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


class Cluster:
    """N private RabbitMQ nodes clustered together, with a test user on vhost /."""

    def __init__(self, size: int, root: Path | None = None) -> None:
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="gw-rabbit-", dir=root))
        self.cookie = secrets.token_hex(16).upper()
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        tag = f"gw-test-{os.getpid()}-{secrets.token_hex(2)}"
        self.nodes = [self._node(f"{tag}-{i}@localhost", i) for i in range(size)]
        self.startup_seconds = 0.0

    def _node(self, name: str, index: int) -> Node:
        base = self.root / f"node{index}"
        for sub in ("home", "mnesia", "log", "etc"):
            (base / sub).mkdir(parents=True)
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        amqp, management, dist = free_port(), free_port(), free_port()
        (base / "etc" / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{amqp}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management}\n"
            "loopback_users = none\n"
            "log.console = false\nlog.file.level = info\n"
            # refuse no publisher for disk space in a small test directory
            "disk_free_limit.absolute = 1MB\n"
        )
        (base / "etc" / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (base / "etc" / "rabbitmq-env.conf").write_text("")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base / "home"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(base / "etc" / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": name,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
            "RABBITMQ_CONFIG_FILE": str(base / "etc" / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "etc" / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "etc" / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_ALLOW_INPUT": "",
        }
        return Node(name, base, amqp, management, dist, env)

    def start(self) -> None:
        """Start epmd and every node, cluster them and add the test user."""
        began = time.monotonic()
        self.epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "")},
        )
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        first.ctl("add_user", USER, PASSWORD)
        first.ctl("set_user_tags", USER, "administrator")
        first.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every node and epmd by PID, then remove the directory."""
        for node in self.nodes:  # all at once: each takes seconds to shut down
            if node.alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def urls(self, user: str = USER, password: str = PASSWORD) -> list[str]:
        return [node.url(user, password) for node in self.nodes]


@contextlib.contextmanager
def running_cluster(size: int) -> Iterator[Cluster]:
    cluster = Cluster(size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":
    with running_cluster(int(sys.argv[1]) if len(sys.argv) > 1 else 1) as c:
        print(f"{c.size} node(s) up in {c.startup_seconds:.1f} s")
        for n in c.nodes:
            print(n.name, n.url(), n.management_url)
        print(c.nodes[0].ctl("cluster_status"))
