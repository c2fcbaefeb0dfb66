"""Oversized frames on every protocol, each refused from its header with the protocol's
own error, while a well-behaved pika pair streams: AMQP frame over frame_max (501) and
content over max_message_size (channel 406), MQTT 5 (DISCONNECT 0x95) and 3.1.1 (closed),
STOMP (ERROR), WebSocket carrying STOMP or WAMP (close 1009), HTTP request head (431)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika
import pytest
from abuse_kit import (
    SteadyStream,
    amqp_frames,
    amqp_login,
    check_stream,
    config,
    connect,
    mqtt_connect_packet,
    read_until_closed,
    remaining_length,
    still_serving,
    websocket_close_code,
    websocket_frame_header,
    websocket_open,
)
from pamqp import commands

ANNOUNCED = 10_000_000  # what each oversized header claims; only a few bytes follow
TAIL = b"x" * 1000


def amqp_oversized_frame(port: int) -> str:
    sock = amqp_login(port)
    sock.sendall(b"\x01\x00\x01" + struct.pack(">I", ANNOUNCED) + TAIL)
    data, closed = read_until_closed(sock)
    closes = [f for _, f in amqp_frames(data) if isinstance(f, commands.Connection.Close)]
    assert closes and closes[0].reply_code == 501, closes
    assert "FRAME_ERROR" in closes[0].reply_text
    assert closed
    return closes[0].reply_text


def amqp_oversized_message(url: str, queue: str) -> str:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"m" * 70_000)  # max_message_size is 65536 here
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.queue_declare(queue, passive=True)
    assert refused.value.reply_code == 406
    text = str(refused.value.reply_text)
    assert "message size 70000 is larger than configured max size 65536" in text
    # the connection goes on; nothing of the refused message reached the queue
    assert conn.channel().queue_declare(queue, passive=True).method.message_count == 0
    conn.close()
    return text


def mqtt_oversized(port: int, version: int) -> bytes:
    sock = connect(port)
    sock.sendall(mqtt_connect_packet(version, f"big-{version}"))
    connack = sock.recv(2)
    assert connack[0] == 0x20, connack
    sock.recv(connack[1])  # the rest of the CONNACK (one length byte: it is short)
    sock.sendall(b"\x30" + remaining_length(ANNOUNCED) + TAIL)
    data, closed = read_until_closed(sock)
    assert closed
    return data


def stomp_oversized(port: int) -> bytes:
    sock = connect(port)
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
    assert sock.recv(4096).startswith(b"CONNECTED")
    sock.sendall(b"SEND\ndestination:/queue/big\ncontent-length:%d\n\n" % ANNOUNCED + TAIL)
    data, closed = read_until_closed(sock)
    assert closed
    return data


def websocket_oversized(ports: dict[str, Any]) -> dict[str, int | None]:
    """Close codes by endpoint (all sent at once: each close takes a moment)."""
    socks = {}
    for port, sub in (("http", "v12.stomp"), ("http", "wamp.2.json"), ("http", "mqtt"),
                      ("web_stomp", "v12.stomp"), ("web_mqtt", "mqtt")):
        sock = socks[f"{port} {sub}"] = websocket_open(ports[port], sub)
        sock.sendall(websocket_frame_header(ANNOUNCED) + TAIL)
    codes = {}
    for name, sock in socks.items():
        data, closed = read_until_closed(sock)
        assert closed
        codes[name] = websocket_close_code(data)
    return codes


def test_oversized_frames_on_every_protocol(configured_broker: Callable[[str], Any],
                                            unique: Callable[[str], str],
                                            figures: Callable[..., None]) -> None:
    broker = configured_broker(config())
    with SteadyStream(broker.url, unique("steady")) as steady:
        amqp_text = amqp_oversized_frame(broker.ports["amqp"])
        message_text = amqp_oversized_message(broker.url, unique("big"))
        v5 = mqtt_oversized(broker.ports["mqtt"], 5)
        v311 = mqtt_oversized(broker.ports["mqtt"], 4)
        stomp = stomp_oversized(broker.ports["stomp"])
        ws_codes = websocket_oversized(broker.ports)
        head = connect(broker.ports["http"])
        head.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 200_000 + b"\r\n\r\n")
        http, _ = read_until_closed(head)
        result = steady.result()
    assert "frame size" in amqp_text and "frame_max 16384" in amqp_text, amqp_text
    assert "PRECONDITION_FAILED" in message_text
    assert v5[:1] == b"\xe0" and v5[2] == 0x95, v5  # DISCONNECT, packet too large
    assert v311 == b""  # 3.1.1 has no DISCONNECT from the server: the socket is closed
    assert stomp.startswith(b"ERROR\n") and b"message:Frame too large" in stomp, stomp[:200]
    assert set(ws_codes.values()) == {1009}, ws_codes
    assert http.startswith(b"HTTP/1.1 431"), http[:100]
    check_stream(result, figures, "oversized frames")
    still_serving(broker, unique("after-oversize"))
