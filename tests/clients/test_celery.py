"""Celery against the broker: a real worker process runs tasks from celery_tasks.py and the
results come back over the `rpc://` backend (AMQP reply queues).

The worker starts once for this module, on a queue of its own, and is stopped by its PID
(SIGTERM, then SIGKILL if it lingers). Nothing waits for the worker to be ready: a task waits
in its queue until the worker consumes it, and every result is awaited with a timeout.
"""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "tests.clients.celery_tasks", "worker",
    "--pool=solo", "--concurrency=1", "--loglevel=warning",
    "--without-gossip", "--without-mingle",  # no waiting for other workers at start
]  # fmt: skip


def celery_url(broker) -> str:
    # The form Celery's documentation uses: vhost "/" gives amqp://...:PORT//
    return f"amqp://{broker.user}:{broker.password}@{broker.host}:{broker.amqp_port}/{broker.vhost}"


def import_tasks() -> ModuleType:
    try:
        return importlib.import_module("tests.clients.celery_tasks")
    except ImportError:  # tests/ is not a package on sys.path: pytest put tests/clients there
        return importlib.import_module("celery_tasks")


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def describe(self) -> str:
        state = self.process.poll()
        status = "running" if state is None else f"exited with {state}"
        return f"celery worker pid {self.process.pid} {status}; its output:\n{self.log.read_text()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="module")
def celery_worker(broker, tmp_path_factory) -> Iterator[tuple[ModuleType, Worker]]:
    url, queue = celery_url(broker), f"celery-{secrets.token_hex(4)}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEWAY_CELERY_BROKER_URL", url)
        patch.setenv("GATEWAY_CELERY_QUEUE", queue)
        tasks = import_tasks()
        assert tasks.app.conf.broker_url == url, "celery_tasks was imported before this test"
        log = tmp_path_factory.mktemp("celery") / "worker.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*WORKER_COMMAND, "-n", f"{queue}@%h"],
                cwd=REPO_ROOT,
                env=os.environ.copy(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
    worker = Worker(process, log)
    try:
        yield tasks, worker
    finally:
        worker.stop()
        # Close this process's connections too: the result consumer's and the producer pool.
        tasks.app.backend.result_consumer.stop()
        with tasks.app.connection_for_write() as connection:
            channel = connection.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)  # Celery declared a direct exchange of that name
        tasks.app.pool.force_close_all()
        tasks.app.close()


def result_of(async_result, worker: Worker):
    try:
        return async_result.get(timeout=RESULT_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no result within {RESULT_TIMEOUT:g} s; {worker.describe()}")


def test_task_result_comes_back_over_rpc(celery_worker):
    tasks, worker = celery_worker
    assert result_of(tasks.add.delay(2, 3), worker) == 5
    results = [tasks.add.delay(n, n) for n in range(5)]
    assert [result_of(r, worker) for r in results] == [0, 2, 4, 6, 8]


def test_task_exception_comes_back_over_rpc(celery_worker):
    tasks, worker = celery_worker
    with pytest.raises(ValueError, match="boom"):
        result_of(tasks.fail.delay("boom"), worker)
    assert result_of(tasks.add.delay(20, 22), worker) == 42
