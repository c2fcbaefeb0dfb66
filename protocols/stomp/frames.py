"""STOMP frames as the codec produces and consumes them, and the codec's one error.

A frame is a command, its headers and a body (spec 1.2 "STOMP Frames"). Header values are
kept unescaped (the codec escapes on the wire per version); when a header is repeated only
the first occurrence counts (spec 1.2 "Repeated Header Entries"), so `headers` is a dict.
A heart-beat is a bare end-of-line between frames (spec 1.1/1.2 "Heart-beating").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final


class Command(enum.Enum):
    # client frames
    CONNECT = "CONNECT"
    STOMP = "STOMP"
    SEND = "SEND"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    ACK = "ACK"
    NACK = "NACK"
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ABORT = "ABORT"
    DISCONNECT = "DISCONNECT"
    # server frames
    CONNECTED = "CONNECTED"
    MESSAGE = "MESSAGE"
    RECEIPT = "RECEIPT"
    ERROR = "ERROR"


CLIENT_COMMANDS: Final = frozenset({
    Command.CONNECT, Command.STOMP, Command.SEND, Command.SUBSCRIBE, Command.UNSUBSCRIBE,
    Command.ACK, Command.NACK, Command.BEGIN, Command.COMMIT, Command.ABORT,
    Command.DISCONNECT,
})

# The frames whose headers are never escaped (spec 1.2 "Value Encoding": CONNECT and
# CONNECTED frames do not escape the colon or octets, for 1.0 compatibility).
UNESCAPED_COMMANDS: Final = frozenset({Command.CONNECT, Command.STOMP, Command.CONNECTED})


class Version(enum.Enum):
    V1_0 = "1.0"
    V1_1 = "1.1"
    V1_2 = "1.2"


SUPPORTED_VERSIONS: Final = (Version.V1_0, Version.V1_1, Version.V1_2)


@dataclass(frozen=True, slots=True)
class Frame:
    command: Command
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An end-of-line received between frames."""


class NeedData(enum.Enum):
    """Sentinel type of `NEED_DATA`: no complete event is buffered yet."""

    NEED_DATA = enum.auto()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA

Event = Frame | Heartbeat


class StompError(Exception):
    """A STOMP-level error a session answers with an ERROR frame (then it closes):
    `message` is the short `message` header, `detail` the body explaining it."""

    headers: tuple[tuple[str, str], ...] = ()  # extra headers for the ERROR frame

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(f"{message}: {detail}")
        self.message = message
        self.detail = detail


class StompProtocolError(StompError):
    """The byte stream is not valid STOMP (raised by the codec only)."""
