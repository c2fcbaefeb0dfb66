"""Celery app and tasks for test_celery.py, loaded both by the test and by its worker process
(`celery -A tests.clients.celery_tasks worker`). The broker URL and the task queue come from
the environment so each test run gets its own."""

from __future__ import annotations

import os

from celery import Celery

BROKER_URL_ENV = "GATEWAY_CELERY_BROKER_URL"
QUEUE_ENV = "GATEWAY_CELERY_QUEUE"

app = Celery(
    "gateway_tests",
    broker=os.environ.get(BROKER_URL_ENV, "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_default_queue=os.environ.get(QUEUE_ENV, "celery"),
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=5,
    broker_connection_max_retries=3,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,  # no pidbox queues left behind
    worker_prefetch_multiplier=1,
    result_expires=60,
)


# Explicit names: the worker imports this module as tests.clients.celery_tasks, the test
# process may import it under another name.
@app.task(name="gateway_tests.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="gateway_tests.fail")
def fail(message: str) -> None:
    raise ValueError(message)
