"""WAMP v2 messages as typed values (spec "Message Definitions", Basic and Advanced Profile).

Each message is a frozen dataclass whose fields follow the wire list after its code, in
order; `args`/`kwargs` are the optional trailing payload (None when absent on the wire).
`MessageType` holds the codes. `ProtocolViolation` is the only error the codec raises: the
session answers it with ABORT `wamp.error.protocol_violation` and closes the transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final


class MessageType(IntEnum):
    HELLO = 1
    WELCOME = 2
    ABORT = 3
    CHALLENGE = 4
    AUTHENTICATE = 5
    GOODBYE = 6
    ERROR = 8
    PUBLISH = 16
    PUBLISHED = 17
    SUBSCRIBE = 32
    SUBSCRIBED = 33
    UNSUBSCRIBE = 34
    UNSUBSCRIBED = 35
    EVENT = 36
    CALL = 48
    CANCEL = 49
    RESULT = 50
    REGISTER = 64
    REGISTERED = 65
    UNREGISTER = 66
    UNREGISTERED = 67
    INVOCATION = 68
    INTERRUPT = 69
    YIELD = 70


MAX_ID: Final = 2**53  # ids are integers in [1, 2^53] (spec "IDs")


class ProtocolViolation(Exception):
    """A message that cannot be decoded or is not a valid WAMP message."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


Args = list[Any] | None
Kwargs = dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Hello:
    realm: str
    details: dict[str, Any]
    TYPE = MessageType.HELLO


@dataclass(frozen=True, slots=True)
class Welcome:
    session: int
    details: dict[str, Any]
    TYPE = MessageType.WELCOME


@dataclass(frozen=True, slots=True)
class Abort:
    details: dict[str, Any]
    reason: str
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.ABORT


@dataclass(frozen=True, slots=True)
class Challenge:
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    TYPE = MessageType.CHALLENGE


@dataclass(frozen=True, slots=True)
class Authenticate:
    signature: str
    extra: dict[str, Any] = field(default_factory=dict)
    TYPE = MessageType.AUTHENTICATE


@dataclass(frozen=True, slots=True)
class Goodbye:
    details: dict[str, Any]
    reason: str
    TYPE = MessageType.GOODBYE


@dataclass(frozen=True, slots=True)
class Error:
    request_type: int
    request: int
    details: dict[str, Any]
    error: str
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.ERROR


@dataclass(frozen=True, slots=True)
class Publish:
    request: int
    options: dict[str, Any]
    topic: str
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.PUBLISH


@dataclass(frozen=True, slots=True)
class Published:
    request: int
    publication: int
    TYPE = MessageType.PUBLISHED


@dataclass(frozen=True, slots=True)
class Subscribe:
    request: int
    options: dict[str, Any]
    topic: str
    TYPE = MessageType.SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Subscribed:
    request: int
    subscription: int
    TYPE = MessageType.SUBSCRIBED


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request: int
    subscription: int
    TYPE = MessageType.UNSUBSCRIBE


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    request: int
    details: dict[str, Any] | None = None  # router-initiated (revocation) only
    TYPE = MessageType.UNSUBSCRIBED


@dataclass(frozen=True, slots=True)
class Event:
    subscription: int
    publication: int
    details: dict[str, Any]
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.EVENT


@dataclass(frozen=True, slots=True)
class Call:
    request: int
    options: dict[str, Any]
    procedure: str
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.CALL


@dataclass(frozen=True, slots=True)
class Cancel:
    request: int
    options: dict[str, Any]
    TYPE = MessageType.CANCEL


@dataclass(frozen=True, slots=True)
class Result:
    request: int
    details: dict[str, Any]
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.RESULT


@dataclass(frozen=True, slots=True)
class Register:
    request: int
    options: dict[str, Any]
    procedure: str
    TYPE = MessageType.REGISTER


@dataclass(frozen=True, slots=True)
class Registered:
    request: int
    registration: int
    TYPE = MessageType.REGISTERED


@dataclass(frozen=True, slots=True)
class Unregister:
    request: int
    registration: int
    TYPE = MessageType.UNREGISTER


@dataclass(frozen=True, slots=True)
class Unregistered:
    request: int
    details: dict[str, Any] | None = None  # router-initiated (revocation) only
    TYPE = MessageType.UNREGISTERED


@dataclass(frozen=True, slots=True)
class Invocation:
    request: int
    registration: int
    details: dict[str, Any]
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.INVOCATION


@dataclass(frozen=True, slots=True)
class Interrupt:
    request: int
    options: dict[str, Any]
    TYPE = MessageType.INTERRUPT


@dataclass(frozen=True, slots=True)
class Yield:
    request: int
    options: dict[str, Any]
    args: Args = None
    kwargs: Kwargs = None
    TYPE = MessageType.YIELD


Message = (
    Hello | Welcome | Abort | Challenge | Authenticate | Goodbye | Error | Publish | Published
    | Subscribe | Subscribed | Unsubscribe | Unsubscribed | Event | Call | Cancel | Result
    | Register | Registered | Unregister | Unregistered | Invocation | Interrupt | Yield
)

# The request types an ERROR may answer (spec "ERROR"): the router sends ERROR for these
# client requests, and accepts ERROR from a callee for INVOCATION only.
ERROR_REQUEST_TYPES: Final = frozenset({
    MessageType.SUBSCRIBE, MessageType.UNSUBSCRIBE, MessageType.PUBLISH,
    MessageType.REGISTER, MessageType.UNREGISTER, MessageType.CALL, MessageType.INVOCATION,
})
