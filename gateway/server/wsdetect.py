"""Which protocol a WebSocket client speaks when it offered no subprotocol: its first message.

RabbitMQ's Web-STOMP serves clients that offer no `Sec-WebSocket-Protocol`, and some common
clients offer none (stomp.py's `WSStompConnection`, paho-mqtt's default websocket
transport). On the shared `/ws` endpoint (and its aliases `/mqtt`, `/stomp`) such a client
is accepted without a subprotocol and its first complete message decides:

    STOMP   text or binary that starts, after optional EOLs, with a `CONNECT` or `STOMP`
            command line (STOMP 1.2 "Connecting": frames may be preceded by EOLs)
    MQTT    binary whose first byte is 0x10, a CONNECT packet's fixed header
            [MQTT-3.1.0-1: the first packet from the client must be CONNECT]
    WAMP    a HELLO: text `[1, ...` (JSON), or binary MessagePack of a 3-element array
            starting with 1 (fixarray 0x93, then 0x01)

A message of EOLs only (STOMP heart-beats before the CONNECT) decides nothing yet; anything
else is refused. Pure functions over one message: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

MORE: Final = "more"  # nothing decided yet: wait for the next message

STOMP: Final = "v12.stomp"  # the STOMP session negotiates its version from CONNECT itself
MQTT: Final = "mqtt"
WAMP_JSON: Final = "wamp.2.json"
WAMP_MSGPACK: Final = "wamp.2.msgpack"

_STOMP_CONNECT: Final = re.compile(rb"(CONNECT|STOMP)\r?\n")
_WAMP_HELLO: Final = re.compile(r"\s*\[\s*1\s*,")
MQTT_CONNECT: Final = 0x10
MSGPACK_HELLO: Final = (0x93, 0x01)


def detect(message: bytes | str) -> str | None:
    """The subprotocol whose first message `message` is, `MORE` when it is only EOLs, or
    None when it is none of them."""
    if isinstance(message, str):
        if _WAMP_HELLO.match(message):
            return WAMP_JSON
        data = message.encode("utf-8")
    else:
        data = message
        if data[:1] == bytes((MQTT_CONNECT,)):
            return MQTT
        if tuple(data[:2]) == MSGPACK_HELLO:
            return WAMP_MSGPACK
    rest = data.lstrip(b"\r\n")
    if not rest:
        return MORE
    if _STOMP_CONNECT.match(rest):
        return STOMP
    return None
