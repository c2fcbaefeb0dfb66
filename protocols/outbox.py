"""The outbound buffer every protocol session keeps for the I/O layer.

A session appends encoded frames (or, for a message protocol such as WAMP, whole
messages) with `emit`; the connection takes them all at once, joined into one byte string
with `data_to_send` (one write per wake-up, however many frames queued meanwhile) or, where
a framing layer sends each as a message of its own (WebSocket), as a list with
`messages_to_send`. Past `high_water` bytes the session is `output_blocked`: its consumers
take no more messages until the writer has drained the buffer below half the mark, and then
`credit_returned` lets them take again. Sans-IO: `wake` is the only call out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

M = TypeVar("M", bound=bytes | str)  # bytes: a byte stream; bytes | str: WebSocket messages


class MessageOutbox(Generic[M]):
    """The buffer of whole messages; `Outbox` is the byte-stream one."""

    high_water: int
    wake: Callable[[], None]
    clock: Callable[[], float]

    def init_outbox(self) -> None:
        self._out: list[M] = []
        self._out_size = 0
        self.output_blocked = False
        self.last_send = self.clock()

    @property
    def pending_output(self) -> int:
        return self._out_size

    def messages_to_send(self) -> list[M]:
        """Everything queued, in order, one item per `emit`."""
        out = self._out
        if not out:
            return []
        self._out = []
        self._out_size = 0
        self.last_send = self.clock()
        return out

    def output_drained(self) -> None:
        """The writer flushed the buffer: consumers held back by it may take again."""
        if self.output_blocked and self._out_size < self.high_water // 2:
            self.output_blocked = False
            self.credit_returned()

    def credit_returned(self) -> None:
        """Let the consumers this session holds back take messages again."""

    def emit(self, data: M) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= self.high_water:
            self.output_blocked = True
        if len(self._out) == 1:
            self.wake()


class Outbox(MessageOutbox[bytes]):
    """The buffer of a byte-stream protocol (AMQP, MQTT, STOMP)."""

    def data_to_send(self) -> bytes:
        return b"".join(self.messages_to_send())
