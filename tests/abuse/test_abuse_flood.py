"""A publisher floods a queue nobody consumes past the memory high-watermark (16 MB here):
the broker raises its memory alarm (connection.blocked), stops reading publishers, and
lets them go (connection.unblocked) once the queue is deleted. The broker's peak RSS
(VmHWM) during the flood is recorded. The well-behaved pair is paused by the alarm like
every publisher, so its latency includes the alarm's length; it must lose nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
from abuse_kit import (
    SteadyStream,
    bounded,
    broker_pid,
    check_stream,
    config,
    memory_kib,
    still_serving,
)

WATERMARK = 16_000_000
BODY = b"f" * 1024
MAX_FLOOD = 160_000  # messages: ten times the watermark, a bound the alarm must beat


def test_flood_past_the_memory_mark(configured_broker: Callable[[str], Any],
                                    unique: Callable[[str], str],
                                    figures: Callable[..., None]) -> None:
    broker = configured_broker(config(memory_high_watermark=WATERMARK))
    pid = broker_pid(broker)
    flood_queue = unique("flood")
    events: list[str] = []
    publisher = pika.BlockingConnection(pika.URLParameters(broker.url))
    publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare(flood_queue)
    before = memory_kib(pid)
    sent = 0
    with SteadyStream(broker.url, unique("steady")) as steady:
        with bounded(30) as more:
            while "blocked" not in events and sent < MAX_FLOOD and more():
                channel.basic_publish("", flood_queue, BODY)
                sent += 1
                if sent % 100 == 0:
                    publisher.process_data_events(time_limit=0)
        blocked_at = time.monotonic()
        peak = memory_kib(pid)
        # end the flood: another connection deletes the queue; the alarm clears
        admin = pika.BlockingConnection(pika.URLParameters(broker.url))
        dropped = admin.channel().queue_delete(flood_queue).method.message_count
        admin.close()
        with bounded(15) as more:
            while "unblocked" not in events and more():
                publisher.process_data_events(time_limit=0.05)
        alarm_s = time.monotonic() - blocked_at
        result = steady.result()
    publisher.close()
    figures("memory flood", flood_messages=sent, queued_when_deleted=dropped,
            alarm_seconds=round(alarm_s, 2), rss_before_kib=before["VmRSS"],
            peak_rss_kib=peak["VmHWM"])
    assert events[:2] == ["blocked", "unblocked"], events
    assert sent * len(BODY) > WATERMARK
    assert dropped * len(BODY) > WATERMARK  # the queue held what was over the mark
    check_stream(result, figures, "memory flood")
    still_serving(broker, unique("after-flood"))
