"""A consumer that never reads its socket: the broker pushes into the socket until the
kernel's buffers and `limits.connection_buffer` are full, then pauses it (no more
deliveries), and cuts it off once a write has stalled for `limits.send_timeout` (1 s
here). Every message it held unacknowledged goes back to its queue, where another
consumer gets them all; the well-behaved pair meanwhile loses nothing."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import Any

import pika
from abuse_kit import (
    SteadyStream,
    amqp_login,
    bounded,
    broker_pid,
    check_stream,
    config,
    connect,
    memory_kib,
    mqtt_connect_packet,
    still_serving,
    websocket_frame_header,
    websocket_open,
)
from pamqp import commands, frame

MESSAGES = 3000
BODY = b"n" * 4096  # 12 MB in all: more than the socket buffers on both sides hold


def test_consumer_that_never_reads(configured_broker: Callable[[str], Any],
                                   unique: Callable[[str], str],
                                   figures: Callable[..., None]) -> None:
    broker = configured_broker(config(memory_high_watermark=256_000_000))
    queue = unique("stuck")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(queue)
    stuck = amqp_login(broker.ports["amqp"], rcvbuf=4096)
    stuck.sendall(frame.marshal(commands.Basic.Consume(queue=queue, no_ack=False), 1))
    # from here on the stuck consumer never reads its socket again
    with SteadyStream(broker.url, unique("steady")) as steady:
        started = time.monotonic()
        for n in range(MESSAGES):
            ch.basic_publish("", queue, BODY)
            if n % 200 == 0:
                conn.process_data_events(time_limit=0)
        consumers = ready = -1
        with bounded(20) as more:
            while more():
                state = ch.queue_declare(queue, passive=True).method
                consumers, ready = state.consumer_count, state.message_count
                if consumers == 0 and ready == MESSAGES:
                    break
                conn.process_data_events(time_limit=0.1)
        cut_after = time.monotonic() - started
        rss = memory_kib(broker_pid(broker))
        result = steady.result()
    stuck.close()
    figures("consumer never reads", messages=MESSAGES, cut_off_after_s=round(cut_after, 2),
            peak_rss_kib=rss["VmHWM"])
    assert consumers == 0, "the consumer that does not read was not cut off"
    assert ready == MESSAGES, f"{ready} of {MESSAGES} back in the queue"
    assert "a write stalled for the send timeout (1 s)" in broker.output(2000)
    # another consumer gets every one of them
    got = 0
    ch.basic_qos(prefetch_count=500)
    with bounded(20) as more:
        for method, _, body in ch.consume(queue, inactivity_timeout=1):
            if method is None:
                if not more():
                    break
                continue
            assert body == BODY
            ch.basic_ack(method.delivery_tag)
            got += 1
            if got == MESSAGES or not more():
                break
    ch.cancel()
    conn.close()
    assert got == MESSAGES
    check_stream(result, figures, "consumer never reads")
    still_serving(broker, unique("after-noread"))


def _logged_closed(broker: Any, what: str) -> bool:
    return any(what in line and "not reading: a write stalled" in line
               for line in broker.output(2000).splitlines())


def test_mqtt_and_wamp_subscribers_that_never_read(configured_broker: Callable[[str], Any],
                                                   unique: Callable[[str], str],
                                                   figures: Callable[..., None]) -> None:
    """The same over MQTT (its own port) and WAMP (WebSocket on the HTTP port): both are
    cut off by the send timeout."""
    broker = configured_broker(config(memory_high_watermark=256_000_000))
    mqtt = connect(broker.ports["mqtt"], rcvbuf=4096)
    mqtt.sendall(mqtt_connect_packet(4, unique("stuck")))
    assert mqtt.recv(4) == b"\x20\x02\x00\x00"
    topic = b"flood/#"
    mqtt.sendall(b"\x82" + bytes([2 + 2 + len(topic) + 1]) + b"\x00\x01"
                 + struct.pack(">H", len(topic)) + topic + b"\x00")
    assert mqtt.recv(5) == b"\x90\x03\x00\x01\x00"  # SUBACK, QoS 0 granted
    wamp = websocket_open(broker.ports["http"], "wamp.2.json", rcvbuf=4096)
    for message in ([1, "/", {"roles": {"subscriber": {}}, "authmethods": ["ticket"],
                               "authid": "guest"}], [5, "guest", {}], [32, 1, {}, "flood.x"]):
        text = json.dumps(message).encode()
        wamp.sendall(websocket_frame_header(len(text), opcode=1) + text)
        reply = wamp.recv(4096)  # CHALLENGE, WELCOME, then SUBSCRIBED
        assert reply[:1] == b"\x81", reply
    # from here on neither reads its socket again
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    with SteadyStream(broker.url, unique("steady")) as steady:
        started = time.monotonic()
        for n in range(MESSAGES):
            ch.basic_publish("amq.topic", "flood.x", BODY)
            if n % 200 == 0:
                conn.process_data_events(time_limit=0)
        with bounded(20) as more:
            while more() and not (_logged_closed(broker, "connection 127.0.0.1")
                                  and _logged_closed(broker, "websocket 127.0.0.1")):
                conn.process_data_events(time_limit=0.1)
        cut_after = time.monotonic() - started
        result = steady.result()
    conn.close()
    mqtt.close()
    wamp.close()
    figures("MQTT and WAMP subscribers never read", messages=MESSAGES,
            both_cut_off_after_s=round(cut_after, 2))
    assert _logged_closed(broker, "connection 127.0.0.1"), "the MQTT subscriber"
    assert _logged_closed(broker, "websocket 127.0.0.1"), "the WAMP subscriber"
    check_stream(result, figures, "MQTT and WAMP subscribers never read")
    still_serving(broker, unique("after-noread-mqtt-wamp"))
