"""Start and stop the two brokers the benchmark compares, each private to one benchmark run.

* ``RabbitMQ``: a throwaway node from the distribution's rabbitmq-server package, never the
  system service: its own node name, ports, Mnesia/log directories, plugins file, config
  file, Erlang cookie (HOME) and epmd port, all under one temporary directory that is
  removed afterwards. Stopped with ``rabbitmqctl stop``, then by the PIDs this module
  started if that did not work.
* ``Gateway``: ``python -m gateway serve`` on a free port with a temporary data directory;
  the AMQP port is read from its ``listener amqp on HOST:PORT`` log line. With
  ``upstream=`` (a started ``RabbitMQ`` with the management plugin) it runs with
  ``--backend rabbitmq`` in front of that node, and ``workers=N`` adds ``--workers N``
  (``pids`` are then the workers').

* ``Mosquitto``: Debian's mosquitto with a config file in a temporary directory (one
  listener on a free port of 127.0.0.1, anonymous, no persistence), stopped by its PID.

All expose ``name``, ``host``, ``port``, ``version``, ``cpu_seconds()`` (CPU time used by
the broker's OS process so far) and ``stop()``; ``ports`` maps each protocol a broker was
asked to serve to its port, and ``pid`` is the process whose memory the suite reads (the
Erlang VM for RabbitMQ). ``cpu`` pins a broker (and every thread it starts) to one core.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENER_RE = re.compile(r"listener (\w+) on ([0-9.]+):(\d+)")
READY_RE = re.compile(r"gateway \S+ ready(?:: \d+ workers \(pids ([\d, ]+)\))?")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BrokerStartError(Exception):
    pass


def child_setup(cpu: int | None, nofile: int | None):  # type: ignore[no-untyped-def]
    """A preexec_fn: pin the child to one core and raise its open-file limit (root may raise
    the hard limit too; otherwise up to the hard limit). Threads started later inherit both."""

    def setup() -> None:
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
        if nofile:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            for want in ((nofile, max(nofile, hard)), (min(nofile, hard), hard)):
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, want)
                    break
                except (ValueError, OSError):
                    continue

    return setup


def status_kb(pid: int, field: str) -> int | None:
    """A memory figure (VmHWM, VmRSS, ...) of a process from /proc/PID/status, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/PID/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) != 0


def free_port_pair(start: int, tries: int = 200) -> int:
    """The first port p >= start with p and p+1 both free."""
    p = start
    for _ in range(tries):
        if port_is_free(p) and port_is_free(p + 1):
            return p
        p += 2
    raise BrokerStartError(f"no two free consecutive ports from {start}")


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, deadline: float, proc: subprocess.Popen) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerStartError(f"process exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise BrokerStartError(f"port {host}:{port} not open in time")


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return False


def _find_rabbitmq_bin(name: str) -> str:
    # The scripts in the package's own bin directory run the node as the calling user with
    # the environment given here; /usr/sbin's wrappers switch to the 'rabbitmq' user (and
    # its HOME and config) when called as root.
    candidates = []
    if os.environ.get("RABBITMQ_BIN_DIR"):
        candidates.append(Path(os.environ["RABBITMQ_BIN_DIR"]) / name)
    candidates.append(Path("/usr/lib/rabbitmq/bin") / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise BrokerStartError(f"{name} not found (install rabbitmq-server or set RABBITMQ_BIN_DIR)")


class RabbitMQ:
    name = "rabbitmq"

    def __init__(self, port: int = 35672, start_timeout: float = 90.0, verbose=None,
                 plugins: tuple[str, ...] = (), cpu: int | None = None,
                 nofile: int | None = None):
        self.plugins = plugins  # of rabbitmq_mqtt, rabbitmq_stomp: each on a free port
        self.cpu = cpu
        self.nofile = nofile
        self.ports: dict[str, int] = {}
        self.port_hint = port
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.nodename = "benchrmq@localhost"
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.env: dict[str, str] = {}
        self.beam_pid: int | None = None
        self.epmd_port: int | None = None
        self.version = "?"
        self.log = verbose or (lambda msg: None)

    def start(self) -> RabbitMQ:
        server = _find_rabbitmq_bin("rabbitmq-server")
        self.tmp = tempfile.mkdtemp(prefix="bench-rabbitmq-")
        tmp = Path(self.tmp)
        for d in ("home", "mnesia", "log", "etc"):
            (tmp / d).mkdir()
        (tmp / "etc" / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        conf = ["# benchmark node: RabbitMQ defaults, private listeners"]
        self.port = free_port_pair(self.port_hint)
        self.ports = {"amqp": self.port}
        for plugin, proto in (("rabbitmq_mqtt", "mqtt"), ("rabbitmq_stomp", "stomp")):
            if plugin in self.plugins:
                self.ports[proto] = any_free_port()
                conf.append(f"{proto}.listeners.tcp.default = {self.host}:{self.ports[proto]}")
        if "rabbitmq_management" in self.plugins:  # what a gateway --backend rabbitmq needs
            self.ports["management"] = any_free_port()
            conf.append(f"management.tcp.ip = {self.host}")
            conf.append(f"management.tcp.port = {self.ports['management']}")
        (tmp / "etc" / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (tmp / "etc" / "rabbitmq-env.conf").write_text("")
        self.epmd_port = any_free_port()
        env = dict(os.environ)
        env.update(
            HOME=str(tmp / "home"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.port + 1),
            RABBITMQ_MNESIA_BASE=str(tmp / "mnesia"),
            RABBITMQ_LOG_BASE=str(tmp / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(tmp / "etc" / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(tmp / "etc" / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(tmp / "etc" / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(tmp / "etc" / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(tmp / "rabbitmq.pid"),
            ERL_EPMD_PORT=str(self.epmd_port),
        )
        self.env = env
        self.log(f"rabbitmq: starting {self.nodename} on {self.host}:{self.port} in {tmp}")
        self._console = open(tmp / "log" / "console.log", "wb")
        self.proc = subprocess.Popen(
            [server],
            env=env,
            cwd=str(tmp),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, we stop it
            preexec_fn=child_setup(self.cpu, self.nofile),
        )
        deadline = time.monotonic() + self.start_timeout
        try:
            for port in self.ports.values():
                wait_for_port(self.host, port, deadline, self.proc)
        except BrokerStartError as exc:
            tail = self.console_tail()
            self.stop()
            raise BrokerStartError(f"rabbitmq: {exc}\n{tail}") from None
        pidfile = tmp / "rabbitmq.pid"
        while time.monotonic() < deadline and self.beam_pid is None:
            try:
                self.beam_pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        self.version = self._version()
        return self

    def _version(self) -> str:
        try:
            out = subprocess.run(
                [_find_rabbitmq_bin("rabbitmqctl"), "-n", self.nodename, "version"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
            return out.splitlines()[-1] if out else "?"
        except Exception:
            return "?"

    def console_tail(self, n: int = 30) -> str:
        try:
            lines = (Path(self.tmp) / "log" / "console.log").read_text(errors="replace")
            return "\n".join(lines.splitlines()[-n:])
        except Exception:
            return ""

    @property
    def pid(self) -> int | None:
        return self.beam_pid

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.beam_pid) if self.beam_pid else None

    def alive(self) -> str | None:
        """None while the node runs, else what happened to it."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"rabbitmq-server exited with code {self.proc.returncode}: " + " / ".join(
                self.console_tail(3).splitlines()
            )
        if self.beam_pid and not _pid_alive(self.beam_pid):
            return f"the Erlang VM (pid {self.beam_pid}) is gone"
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.log("rabbitmq: stopping")
        if self.proc.poll() is None:
            try:
                subprocess.run(
                    [_find_rabbitmq_bin("rabbitmqctl"), "-n", self.nodename, "stop"],
                    env=self.env,
                    capture_output=True,
                    timeout=60,
                )
            except Exception:
                pass
            if not _wait(self.proc, 30):
                self.proc.terminate()  # the start script's trap stops the node
                if not _wait(self.proc, 20):
                    self.proc.kill()
                    _wait(self.proc, 5)
        if self.beam_pid and _pid_alive(self.beam_pid):
            try:
                os.kill(self.beam_pid, signal.SIGKILL)
            except OSError:
                pass
        # The node started an epmd on our private port (free before we started): stop it.
        if self.epmd_port:
            epmd = shutil.which("epmd") or "epmd"
            try:
                subprocess.run(
                    [epmd, "-port", str(self.epmd_port), "-kill"],
                    capture_output=True,
                    timeout=10,
                )
            except Exception:
                pass
        self.proc = None
        try:
            self._console.close()
        except Exception:
            pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class Gateway:
    name = "gateway"

    def __init__(self, start_timeout: float = 30.0, verbose=None,
                 protocols: tuple[str, ...] = ("amqp",), config_text: str = "",
                 cpu: int | None = None, nofile: int | None = None,
                 upstream: RabbitMQ | None = None, workers: int = 1, name: str = "gateway"):
        self.name = name
        self.upstream = upstream  # --backend rabbitmq in front of this node
        self.workers = workers
        self._ready = threading.Event()
        self._worker_pids: list[int] = []
        self.protocols = protocols  # listeners to open, each on a free port
        self.config_text = config_text  # TOML passed with --config ("" = none)
        self.cpu = cpu
        self.nofile = nofile
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self.version = "?"
        self.log = verbose or (lambda msg: None)
        self._listeners: dict[str, tuple[str, int]] = {}
        self._amqp_seen = threading.Event()

    def command(self, data_dir: str) -> list[str]:
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1"]
        for proto in ("amqp", "mqtt", "stomp", "http"):
            cmd += [f"--{proto}-port", "0" if proto in self.protocols else "off"]
        cmd += ["--data-dir", data_dir]
        if self.upstream is not None:
            up = self.upstream
            cmd += ["--backend", "rabbitmq",
                    "--upstream", f"amqp://guest:guest@{up.host}:{up.port}/%2F",
                    "--upstream-management",
                    f"http://guest:guest@{up.host}:{up.ports['management']}"]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        if self.config_text:
            assert self.tmp is not None
            path = os.path.join(self.tmp, "gateway.toml")
            with open(path, "w") as f:
                f.write(self.config_text)
            cmd += ["--config", path]
        return cmd

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def pids(self) -> list[int]:
        """The processes that serve clients: the workers' with --workers, else the one."""
        if self._worker_pids:
            return list(self._worker_pids)
        return [self.proc.pid] if self.proc else []

    @property
    def ports(self) -> dict[str, int]:
        return {name: port for name, (_host, port) in self._listeners.items()}

    def start(self) -> Gateway:
        self.tmp = tempfile.mkdtemp(prefix="bench-gateway-")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        cmd = self.command(os.path.join(self.tmp, "data"))
        self.log("gateway: starting " + " ".join(cmd[1:]))
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=child_setup(self.cpu, self.nofile),
        )
        # Drain stderr for the broker's whole life, so a chatty log can never fill the pipe
        # and stall the broker; keep the tail for error messages.
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.1) and set(self.protocols) <= set(self._listeners):
                break
            if self.proc.poll() is not None:
                break
        if not set(self.protocols) <= set(self._listeners) or not self._ready.is_set():
            code = self.proc.poll()
            self.stop()
            self._drainer.join(timeout=2)  # collect the last lines it wrote
            why = (
                f"exited with code {code}" if code is not None else "no AMQP listener line in time"
            )
            raise BrokerStartError(
                f"gateway: {why}\n  command: {' '.join(cmd)}\n" + "\n".join(self.tail)
            )
        self.host, self.port = self._listeners[self.protocols[0]]
        try:
            sys.path.insert(0, str(REPO_ROOT))
            import gateway  # noqa: PLC0415

            self.version = getattr(gateway, "__version__", "?")
        except Exception:
            pass
        finally:
            sys.path.pop(0)
        return self

    def _drain(self) -> None:
        assert self.proc and self.proc.stderr
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            m = LISTENER_RE.search(line)
            if m:
                self._listeners[m.group(1).lower()] = (m.group(2), int(m.group(3)))
                if m.group(1).lower() == self.protocols[0]:
                    self._amqp_seen.set()
            ready = READY_RE.search(line)
            if ready:
                if ready.group(1):  # the parent of --workers: "(pids 123, 124)"
                    self._worker_pids = [int(p) for p in ready.group(1).split(",")]
                self._ready.set()

    def cpu_seconds(self) -> float | None:
        if not self.proc:
            return None
        used = [proc_cpu_seconds(pid) for pid in self.pids]
        return sum(u for u in used if u is not None)

    def alive(self) -> str | None:
        """None while gateway runs, else what happened to it."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"gateway exited with code {self.proc.returncode}: " + " / ".join(
                list(self.tail)[-3:]
            )
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.log("gateway: stopping")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            if not _wait(self.proc, 15):
                self.proc.terminate()
                if not _wait(self.proc, 5):
                    self.proc.kill()
                    _wait(self.proc, 5)
        self.proc = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class Mosquitto:
    """Debian's mosquitto on a free port of 127.0.0.1 (anonymous, no persistence, no log)."""

    name = "mosquitto"

    def __init__(self, binary: str | None = None, cpu: int | None = None,
                 nofile: int | None = None, verbose=None):
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.cpu = cpu
        self.nofile = nofile
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.version = "?"
        self.log = verbose or (lambda msg: None)

    @property
    def ports(self) -> dict[str, int]:
        return {"mqtt": self.port} if self.port else {}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> Mosquitto:
        if not os.access(self.binary, os.X_OK):
            raise BrokerStartError(f"mosquitto not found at {self.binary} (apt-get install "
                                   "mosquitto)")
        self.tmp = tempfile.mkdtemp(prefix="bench-mosquitto-")
        self.port = any_free_port()
        conf = Path(self.tmp) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                        "persistence false\nlog_dest none\nset_tcp_nodelay true\n")
        self.log(f"mosquitto: starting on {self.host}:{self.port}")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=child_setup(self.cpu, self.nofile))
        try:
            wait_for_port(self.host, self.port, time.monotonic() + 20, self.proc)
        except BrokerStartError as exc:
            self.stop()
            raise BrokerStartError(f"mosquitto: {exc}") from None
        try:
            out = subprocess.run([self.binary, "-h"], capture_output=True, text=True,
                                 timeout=10).stdout
            m = re.search(r"version (\S+)", out)
            self.version = m.group(1) if m else "?"
        except Exception:
            pass
        return self

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.proc.pid) if self.proc else None

    def alive(self) -> str | None:
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"mosquitto exited with code {self.proc.returncode}"
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.log("mosquitto: stopping")
            if self.proc.poll() is None:
                self.proc.terminate()
                if not _wait(self.proc, 10):
                    self.proc.kill()
                    _wait(self.proc, 5)
            self.proc = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
