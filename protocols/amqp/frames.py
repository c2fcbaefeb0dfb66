"""Events produced by the AMQP 0-9-1 codec, and the errors it raises.

The codec (``codec.py``) turns bytes into these events; the session consumes them. Methods
themselves stay pamqp objects (``pamqp.commands.*``): one typed class per AMQP method is
exactly what pamqp already provides, so there is no second copy of the spec here.

Every error is a ``ProtocolError`` carrying the AMQP reply code to put in the
``connection.close`` the session sends back (all codes the codec uses are hard errors, so
the whole connection closes). ``BadProtocolHeader`` is the one exception to that rule: the
spec (0-9-1 section 4.2.2) says the server answers a bad greeting with its own
``PROTOCOL_HEADER`` and closes the socket, without any frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

from pamqp import base, commands

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
M = TypeVar("M", bound=base.Frame)


def reply(method_class: type[M], **values: Any) -> M:
    """A method the server sends that carries client-chosen names, built without pamqp's
    ``validate``: pamqp holds queue and exchange names to ``^[a-zA-Z0-9-_.:@#,/+ ]*$`` and
    exchange names to 127 characters, while RabbitMQ (and this broker) accept any UTF-8
    name up to 255 bytes, so a queue.declare-ok, basic.get-ok or basic.return for a name
    we accepted must be buildable. Every field is given by name."""
    method = method_class.__new__(method_class)
    for name in method_class.attributes():
        setattr(method, name, values.pop(name))
    if values:
        raise TypeError(f"{method_class.name} has no fields {sorted(values)}")
    return method



class ReplyCode(enum.IntEnum):
    """The AMQP reply codes the codec raises (0-9-1 spec, "constants")."""

    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505


class NeedData(enum.Enum):
    """Sentinel type of ``NEED_DATA``: no complete event is buffered yet."""

    NEED_DATA = enum.auto()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ProtocolHeaderReceived:
    """The client opened with ``PROTOCOL_HEADER``; the server now sends connection.start."""


@dataclass(frozen=True, slots=True)
class Method:
    """A method frame that carries no content (everything except basic.publish)."""

    channel: int
    method: base.Frame


@dataclass(frozen=True, slots=True)
class Content:
    """A complete basic.publish: the method, its content header and all its body frames."""

    channel: int
    method: commands.Basic.Publish
    properties: commands.Basic.Properties
    body: bytes
    # the property flags and list exactly as received: a delivery of the unchanged
    # message can send them again without encoding the properties anew
    raw_properties: bytes = b"\x00\x00"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat frame (channel 0)."""


@dataclass(frozen=True, slots=True)
class OversizeContent:
    """A basic.publish whose header announced more than ``max_message_size`` bytes.

    The codec discards the body frames that follow as they arrive (never buffering them) and
    then accepts the next publish on the channel; the session decides the answer (RabbitMQ
    closes the channel with 406 PRECONDITION_FAILED "message size ... larger than max size").
    """

    channel: int
    method: commands.Basic.Publish
    size: int


Event: TypeAlias = ProtocolHeaderReceived | Method | Content | Heartbeat | OversizeContent


class ProtocolError(Exception):
    """A violation by the peer; ``code`` is the AMQP reply code for connection.close.

    ``class_id``/``method_id`` name the offending method when there is one (they go into
    connection.close as the spec asks); ``channel`` is the channel of the offending frame.
    """

    def __init__(
        self,
        code: int,
        text: str,
        channel: int = 0,
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text
        self.channel = channel
        self.class_id = class_id
        self.method_id = method_id

    def __str__(self) -> str:
        return f"{self.code} {self.text} (channel {self.channel})"


class BadProtocolHeader(ProtocolError):
    """The first bytes are not ``PROTOCOL_HEADER``: answer with it and close the socket."""

    def __init__(self, received: bytes) -> None:
        super().__init__(
            ReplyCode.FRAME_ERROR, f"bad protocol header {received!r}, expected AMQP 0-9-1"
        )
        self.received = received
