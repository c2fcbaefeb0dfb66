"""The outbound byte buffer every stream protocol session keeps for the I/O layer.

A session appends encoded frames with `emit`; the server's writer task takes them all at
once with `data_to_send` (one write per wake-up, however many frames queued meanwhile).
Past `high_water` bytes the session is `output_blocked`: its consumers take no more
messages until the writer has drained the buffer below half the mark, and then
`credit_returned` lets them take again. Sans-IO: `wake` is the only call out.
"""

from __future__ import annotations

from collections.abc import Callable


class Outbox:
    high_water: int
    wake: Callable[[], None]
    clock: Callable[[], float]

    def init_outbox(self) -> None:
        self._out: list[bytes] = []
        self._out_size = 0
        self.output_blocked = False
        self.last_send = self.clock()

    @property
    def pending_output(self) -> int:
        return self._out_size

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if data:
            self.last_send = self.clock()
        return data

    def output_drained(self) -> None:
        """The writer flushed the buffer: consumers held back by it may take again."""
        if self.output_blocked and self._out_size < self.high_water // 2:
            self.output_blocked = False
            self.credit_returned()

    def credit_returned(self) -> None:
        """Let the consumers this session holds back take messages again."""

    def emit(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= self.high_water:
            self.output_blocked = True
        if len(self._out) == 1:
            self.wake()
