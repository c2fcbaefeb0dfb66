"""Errors raised by the core and by auth, each carrying an AMQP 0-9-1 reply code.

Every protocol session translates these into its own error form (AMQP channel/connection
close, MQTT reason code, STOMP ERROR frame, WAMP ERROR). `hard` errors close the whole
connection in AMQP terms; soft ones close only the channel.
"""

from __future__ import annotations

from enum import IntEnum


class ReplyCode(IntEnum):
    SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541


_HARD = {
    ReplyCode.CONNECTION_FORCED,
    ReplyCode.INVALID_PATH,
    ReplyCode.FRAME_ERROR,
    ReplyCode.SYNTAX_ERROR,
    ReplyCode.COMMAND_INVALID,
    ReplyCode.CHANNEL_ERROR,
    ReplyCode.UNEXPECTED_FRAME,
    ReplyCode.RESOURCE_ERROR,
    ReplyCode.NOT_ALLOWED,
    ReplyCode.NOT_IMPLEMENTED,
    ReplyCode.INTERNAL_ERROR,
}


class BrokerError(Exception):
    """An error with an AMQP reply code; the text is what the client is told."""

    code: ReplyCode = ReplyCode.INTERNAL_ERROR

    def __init__(self, text: str, code: ReplyCode | None = None) -> None:
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code

    @property
    def hard(self) -> bool:
        """True when the error closes the connection rather than one channel."""
        return self.code in _HARD

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.text!r})"


class AccessRefused(BrokerError):
    code = ReplyCode.ACCESS_REFUSED


class NotFound(BrokerError):
    code = ReplyCode.NOT_FOUND


class ResourceLocked(BrokerError):
    code = ReplyCode.RESOURCE_LOCKED


class PreconditionFailed(BrokerError):
    code = ReplyCode.PRECONDITION_FAILED


class NotAllowed(BrokerError):
    code = ReplyCode.NOT_ALLOWED


class NotImplementedFeature(BrokerError):
    code = ReplyCode.NOT_IMPLEMENTED


class CommandInvalid(BrokerError):
    code = ReplyCode.COMMAND_INVALID


class ResourceError(BrokerError):
    code = ReplyCode.RESOURCE_ERROR
