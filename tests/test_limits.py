"""Limits enforced by a running broker: the memory high-watermark blocks publishers with
connection.blocked and lets them go with connection.unblocked, losing nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

WATERMARK = 50_000


@pytest.fixture
def small_broker(configured_broker: Callable[[str], Any]) -> str:
    broker = configured_broker(f"[limits]\nmemory_high_watermark = {WATERMARK}\n")
    return str(broker.url)


def _wait_for(connection: pika.BlockingConnection, events: list[str], what: str,
              seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while what not in events and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    assert what in events, f"no connection.{what} within {seconds} s (got {events})"


def test_memory_alarm_blocks_then_unblocks_publisher_and_loses_nothing(
        small_broker: str) -> None:
    params = pika.URLParameters(small_broker)
    publisher = pika.BlockingConnection(params)
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("hold")
    body = b"m" * 1000
    total = 120  # 120 kB: well over the 50 kB watermark
    for _ in range(total):
        channel.basic_publish("", "hold", body)
    _wait_for(publisher, events, "blocked")

    consumer = pika.BlockingConnection(params)
    cch = consumer.channel()
    received = 0
    deadline = time.monotonic() + 20
    while received < total and time.monotonic() < deadline:
        method, _, got = cch.basic_get("hold", auto_ack=True)
        if method is None:
            consumer.process_data_events(time_limit=0.05)
            publisher.process_data_events(time_limit=0.05)
            continue
        assert got == body
        received += 1
    _wait_for(publisher, events, "unblocked")
    assert received == total
    assert events[:2] == ["blocked", "unblocked"]
    consumer.close()
    publisher.close()
