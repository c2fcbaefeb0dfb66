"""The only code that touches a client's stream: a reader task and a writer task per
connection, in one nursery, around a sans-IO protocol session.

Back-pressure: the reader stops reading while the session's outbound buffer is above its
high-water mark (a client that does not read what it is sent cannot make the broker buffer
without bound), and consumers get no credit meanwhile (see `AMQPConsumer.can_take`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

log = logging.getLogger("gateway.server")

READ_SIZE = 65536
LINGER = 1.0  # seconds a closed connection waits for the peer to hang up


class Session(Protocol):
    """What a protocol session offers the I/O layer. Besides these, the store task calls
    `flush_confirms()` after each durable batch (send what waited for the disk: AMQP
    confirms, MQTT PUBACK/PUBREC, STOMP receipts) and then `wake()` if output is pending."""

    wake: Callable[[], None]

    def flush_confirms(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def pending_output(self) -> int: ...

    @property
    def read_paused(self) -> bool: ...

    @property
    def alarm(self) -> bool: ...

    def memory_alarm(self, on: bool) -> None: ...

    def receive_data(self, data: bytes | bytearray) -> None: ...
    def data_to_send(self) -> bytes: ...
    def output_drained(self) -> None: ...
    def timer(self, now: float) -> None: ...
    def connection_lost(self) -> None: ...
    def shutdown(self) -> None: ...


class Connection:
    """Drives one session over one stream until either side closes it."""

    def __init__(self, stream: trio.abc.Stream, high_water: int, clock: Callable[[], float],
                 after_input: Callable[[], None]) -> None:
        self.stream = stream
        self.high_water = high_water
        self.clock = clock
        self.after_input = after_input
        self.session: Session | None = None
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._resumed = trio.Event()
        self._reader_done = trio.Event()
        self._cancel: trio.CancelScope | None = None

    def wake(self) -> None:
        """Something was appended to the session's outbound buffer."""
        self._wakeup.set()

    async def run(self, session: Session) -> None:
        self.session = session
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._ticker)
        finally:
            session.connection_lost()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await self.stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass

    def resume(self) -> None:
        """The session may want reading again (an alarm cleared)."""
        self._resumed.set()

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _reader(self) -> None:
        session = self.session
        assert session is not None
        try:
            while True:
                while session.pending_output > self.high_water and not session.closed:
                    self._drained = trio.Event()
                    await self._drained.wait()
                while session.read_paused and not session.closed:
                    self._resumed = trio.Event()
                    await self._resumed.wait()
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    session.connection_lost()
                    self.wake()
                    return
                if session.closed:
                    # after our close: read and drop until the peer closes too, so a
                    # client still sending sees our close frame rather than a reset
                    self.wake()
                    continue
                session.receive_data(data)
                self.after_input()
                if session.pending_output or session.closed:
                    self.wake()
        finally:
            self._reader_done.set()

    async def _writer(self) -> None:
        session = self.session
        assert session is not None
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            data = session.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    session.connection_lost()
                    self.stop()
                    return
            session.output_drained()
            self._drained.set()
            if session.closed and not session.pending_output:
                # half-close, then give the peer a moment to read our close and hang up
                # (the reader drops what it still sends) before the socket goes
                with trio.move_on_after(LINGER):
                    send_eof = getattr(self.stream, "send_eof", None)
                    if send_eof is not None:
                        try:
                            await send_eof()
                        except (trio.BrokenResourceError, trio.ClosedResourceError,
                                OSError):
                            pass
                    await self._reader_done.wait()
                self.stop()
                return

    async def _ticker(self) -> None:
        session = self.session
        assert session is not None
        while True:
            await trio.sleep(1)
            session.timer(self.clock())
            if session.pending_output or session.closed:
                self.wake()
