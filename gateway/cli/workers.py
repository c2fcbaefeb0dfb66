"""`gateway serve --workers N` (`[backend] workers`): the parent process that runs N
gateway workers sharing the listening ports, and keeps them running.

Theory of operation. The parent serves no client. It
1. locks the data directory for all its workers (a second broker on it is refused; the
   workers take no lock: gateway/server/worker.py), makes the WAMP-CRA secret there once
   (so the workers do not race to write it), and reserves every configured listener's
   port (gateway/server/listen.py: a port 0 becomes a fixed free port, the same for every
   worker and for a worker restarted later);
2. starts the workers by running `python -m gateway serve` again with the same arguments,
   the reserved ports as `--<listener>-port` flags, and two it alone passes: the worker's
   index and a pipe on which the worker says "ready"; the worker's standard input is a
   pipe from the parent that ends when the parent does (a parent killed with SIGKILL
   leaves no worker serving). The workers' logs go where the parent's go ([log] or
   standard error);
3. says "gateway VERSION ready" once every worker is ready; if a worker exits before it
   is ready, stops the others and exits with that worker's status (its one-line reason is
   in the log already);
4. restarts a worker that exits while it should be running, after a delay that doubles
   with each quick death in a row (one within QUICK_DEATH seconds of its start), from
   RESTART_DELAY up to RESTART_DELAY_MAX; after MAX_QUICK_DEATHS quick deaths in a row it
   gives up: stops every worker and exits 1;
5. on SIGTERM or SIGINT sends SIGTERM to every worker (each shuts down as a lone server
   does: listeners first, clients told, answers drained), waits up to STOP_GRACE seconds,
   kills what is left (SIGKILL), and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

import gateway
from gateway.config import TLS_LISTENERS, Config

log = logging.getLogger("gateway.workers")

QUICK_DEATH = 10.0  # s: a worker that exits sooner after its start died quickly
MAX_QUICK_DEATHS = 5  # in a row: give up
RESTART_DELAY = 0.5  # s, doubled per quick death in a row
RESTART_DELAY_MAX = 15.0
START_TIMEOUT = 60.0  # s for a worker to be ready (its upstream connection included)
STOP_GRACE = 20.0  # s between SIGTERM and SIGKILL

# every TCP listener `gateway serve` can open, by its config name (flag: --NAME-port with
# "_" as "-")
LISTENERS = ("amqp", "mqtt", "stomp", "http", "web_stomp", "web_mqtt", *TLS_LISTENERS)


class WorkerStartFailed(Exception):
    def __init__(self, index: int, status: int) -> None:
        super().__init__(f"worker {index} did not start (exit status {status})")
        self.index = index
        self.status = status


def add_worker_flags(serve: argparse.ArgumentParser) -> None:
    """The flags only the parent passes to a worker (hidden from --help)."""
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-ready-fd", type=int, default=-1, help=argparse.SUPPRESS)


def listener_ports(config: Config) -> dict[str, int]:
    """Every listener that is on, with its configured port (0: any free port)."""
    ports = {}
    for name in LISTENERS:
        port = getattr(config.listeners, name)
        if port is not None:
            ports[name] = port
    return ports


@dataclass(eq=False)
class Slot:
    """One worker's place: its current process and its record of quick deaths."""

    index: int
    process: trio.Process | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    lifeline: int = -1  # the parent's end of the worker's standard input

    def closed(self) -> None:
        if self.lifeline >= 0:
            with contextlib.suppress(OSError):
                os.close(self.lifeline)
            self.lifeline = -1


@dataclass(eq=False)
class Supervisor:
    command: list[str]  # `python -m gateway serve ...` with the reserved ports
    count: int
    slots: list[Slot] = field(default_factory=list)
    stopping: bool = False
    gave_up: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.slots = [Slot(i) for i in range(self.count)]

    async def spawn(self, slot: Slot) -> bool:
        """Start the worker of `slot`; True once it said it is ready, False if it exited
        (or did not say so within START_TIMEOUT: then it is killed)."""
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        os.set_inheritable(ready_w, True)
        command = [*self.command, "--worker-index", str(slot.index),
                   "--worker-ready-fd", str(ready_w)]
        try:
            process = await trio.lowlevel.open_process(
                command, stdin=life_r, pass_fds=(ready_w,))
        except BaseException:
            for fd in (ready_r, life_w):
                os.close(fd)
            raise
        finally:
            os.close(ready_w)
            os.close(life_r)
        # the parent's end of the lifeline stays open (and is never written) until the
        # parent exits; it must not leak into the other workers
        os.set_inheritable(life_w, False)
        slot.process, slot.lifeline = process, life_w
        slot.started_at = trio.current_time()
        log.info("worker %d started (pid %d)", slot.index, process.pid)
        said = b""
        with trio.move_on_after(START_TIMEOUT):
            async with trio.lowlevel.FdStream(ready_r) as ready:
                while b"\n" not in said:
                    chunk = await ready.receive_some(64)
                    if not chunk:
                        break
                    said += chunk
        if said.startswith(b"ready"):
            return True
        if process.poll() is None:
            log.error("worker %d (pid %d) not ready after %.0f s: killed", slot.index,
                      process.pid, START_TIMEOUT)
            process.kill()
        await process.wait()
        slot.closed()
        return False

    async def keep(self, slot: Slot, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the worker of `slot`, and again whenever it exits, until stopping."""
        if not await self.spawn(slot):
            assert slot.process is not None
            raise WorkerStartFailed(slot.index, _status(slot.process.returncode))
        task_status.started()
        while True:
            process = slot.process
            assert process is not None
            await process.wait()
            slot.closed()
            if self.stopping:
                return
            lived = trio.current_time() - slot.started_at
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
            log.warning("worker %d (pid %d) exited (%s) after %.1f s", slot.index,
                        process.pid, _describe(process.returncode), lived)
            while True:
                if slot.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("worker %d exited %d times in a row within %.0f s of its "
                              "start: giving up", slot.index, slot.quick_deaths, QUICK_DEATH)
                    self.gave_up.set()
                    return
                delay = min(RESTART_DELAY * 2 ** max(slot.quick_deaths - 1, 0),
                            RESTART_DELAY_MAX)
                log.info("restarting worker %d in %.1f s", slot.index, delay)
                await trio.sleep(delay)
                if self.stopped():
                    return
                if await self.spawn(slot):
                    log.info("worker %d ready again (pid %d)", slot.index,
                             slot.process.pid if slot.process else 0)
                    break
                slot.quick_deaths += 1

    def stopped(self) -> bool:
        return self.stopping

    async def stop_all(self) -> None:
        """SIGTERM to every worker, SIGKILL to those still running after STOP_GRACE."""
        self.stopping = True
        running = [s.process for s in self.slots
                   if s.process is not None and s.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE):
            for process in running:
                await process.wait()
        for process in running:
            if process.poll() is None:
                log.warning("worker pid %d still running %.0f s after SIGTERM: killed",
                            process.pid, STOP_GRACE)
                process.kill()
                await process.wait()
        for slot in self.slots:
            slot.closed()

    async def run(self, signals: AsyncIterator[int]) -> int:
        async with trio.open_nursery() as nursery:
            failed: list[WorkerStartFailed] = []
            try:
                async with trio.open_nursery() as starting:
                    for slot in self.slots:
                        starting.start_soon(partial(nursery.start, self.keep, slot))
            except* WorkerStartFailed as group:
                failed += [e for e in group.exceptions if isinstance(e, WorkerStartFailed)]
            if failed:
                log.error("%s: stopping the other workers", failed[0])
                await self.stop_all()
                nursery.cancel_scope.cancel()
                return failed[0].status or 1
            pids = ", ".join(str(s.process.pid) for s in self.slots if s.process)
            log.info("gateway %s ready: %d workers (pids %s)", gateway.__version__,
                     self.count, pids)
            status = 0
            async with trio.open_nursery() as watch:
                watch.start_soon(_first_signal, signals, watch.cancel_scope)
                watch.start_soon(_event, self.gave_up, watch.cancel_scope)
            if self.gave_up.is_set():
                status = 1
            log.info("stopping %d workers", self.count)
            await self.stop_all()
            nursery.cancel_scope.cancel()
        return status


async def _first_signal(signals: AsyncIterator[int], done: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s, stopping the workers", signal.Signals(signum).name)
        break
    done.cancel()


async def _event(event: trio.Event, done: trio.CancelScope) -> None:
    await event.wait()
    done.cancel()


def _status(returncode: int | None) -> int:
    if returncode is None or returncode < 0:  # killed by a signal
        return 1
    return returncode


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def worker_command(argv: list[str], ports: dict[str, int]) -> list[str]:
    """`python -m gateway` with the parent's arguments, and each listener's port fixed."""
    command = [sys.executable, "-m", "gateway", *argv]
    for name, port in ports.items():
        command += [f"--{name.replace('_', '-')}-port", str(port)]
    return command


def run_workers(config: Config, argv: list[str]) -> int:
    """The parent of `config.backend.workers` workers; its exit status."""
    # imported here: the server is only for `gateway serve`
    from gateway.server.app import listener_error
    from gateway.server.control import DataDirInUse, DataDirLock
    from gateway.server.factories import SECRET_FILE, broker_secret
    from gateway.server.listen import reserve, reuse_port_supported

    if not reuse_port_supported():
        print("gateway: --workers needs SO_REUSEPORT, which this system lacks",
              file=sys.stderr)
        return 2
    data_dir = Path(config.store.data_dir)
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except DataDirInUse as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    held: list[socket.socket] = []
    try:
        host = config.listeners.host
        ports: dict[str, int] = {}
        for name, port in listener_ports(config).items():
            try:
                sock = reserve(host, port)
            except OSError as exc:
                print(f"gateway: {listener_error(name, host, port, exc)}", file=sys.stderr)
                return 1
            held.append(sock)
            ports[name] = sock.getsockname()[1]
        broker_secret(data_dir / SECRET_FILE)  # made once, before the workers read it
        supervisor = Supervisor(worker_command(argv, ports), config.backend.workers)

        async def main() -> int:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                return await supervisor.run(signals)

        return trio.run(main)
    finally:
        for sock in held:
            sock.close()
        lock.release()

