"""The only code that touches a client's stream: the connection's own task reads, a writer
task writes, around a sans-IO protocol session.

Tasks: the task serving the connection reads (`run`) and writes the replies to what it read
itself, one write per read. Output that arrives otherwise (deliveries, confirms after a
disk batch, a close) goes through a writer task in the server's connection nursery, started
by `wake` and ended after two quiet ticks, so an idle connection costs one parked task.
Timers are not a task either: the server calls `tick` for every connection once a second.
(Per idle MQTT connection this took the broker from about 16 KiB to about 10 KiB; see
docs/performance.md.)

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
IDLE_TICKS = 2  # ticks without output after which the writer task ends (a wake restarts it)

# One event that is always set stands for every event of every connection that nobody waits
# on yet (each is replaced by a fresh one before a wait): 200 bytes less per connection each.
_SET = trio.Event()
_SET.set()


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
                 after_input: Callable[[], None], nursery: trio.Nursery) -> None:
        self.stream = stream
        self.high_water = high_water
        self.clock = clock
        self.after_input = after_input
        self.nursery = nursery  # where the writer task runs
        self.session: Session | None = None
        self._wakeup = _SET  # a new writer's first look finds whatever is pending
        self._drained = _SET
        self._resumed = _SET
        self._reader_done = trio.Event()
        self._writer_done = _SET  # no writer yet
        self._writing = False  # a writer task exists, or the reader is writing
        self._reading = False  # the reader is inside session.receive_data
        self._idle_ticks = 0  # ticks in a row the writer found nothing to write
        self._ending = False  # the writer is closing the connection
        self._finished = False
        self._reader_scope = trio.CancelScope()
        self._writer_scope: trio.CancelScope | None = None

    def wake(self) -> None:
        """Something was appended to the session's outbound buffer."""
        self._wakeup.set()
        self._idle_ticks = 0
        if not (self._writing or self._reading or self._finished) and self.session is not None:
            self._start_writer()

    def _start_writer(self) -> None:
        self._writing = True
        self._writer_done = trio.Event()
        try:
            self.nursery.start_soon(self._writer)
        except RuntimeError:  # the server's nursery is closing: nothing more is written
            self._writing = False
            self._writer_done.set()

    def tick(self, now: float) -> None:
        """Once a second, from the server: the session's timers; retire an idle writer."""
        session = self.session
        if session is None or self._finished:
            return
        session.timer(now)
        if session.pending_output or session.closed:
            self.wake()
        elif self._writing and not self._ending:
            self._idle_ticks += 1
            if self._idle_ticks >= IDLE_TICKS:
                self._wakeup.set()  # the writer finds nothing to write and ends

    async def run(self, session: Session) -> None:
        self.session = session
        if session.pending_output:
            self.wake()
        try:
            with self._reader_scope:
                await self._reader()
            await self._writer_done.wait()
        finally:
            self._finished = True
            self.stop()
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
        self._reader_scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

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
                self._reading = True  # output from this input is sent below, not by a writer
                try:
                    session.receive_data(data)
                finally:
                    self._reading = False
                self.after_input()
                if session.pending_output and not self._writing and not session.closed:
                    await self._write_inline(session)
                elif session.pending_output or session.closed:
                    self.wake()
        finally:
            self._reader_done.set()

    async def _write_inline(self, session: Session) -> None:
        """Send the answer to what was just read from this task, without a writer task:
        the usual case of a request (CONNECT, SUBSCRIBE, a confirm-mode publish) and its
        reply. One write; what is still pending after it is left to a writer task."""
        self._writing = True  # keeps wake() from starting a second sender meanwhile
        try:
            data = session.data_to_send()
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                session.connection_lost()
                return
            session.output_drained()
            self._drained.set()
        finally:
            self._writing = False
        if session.pending_output or session.closed:
            self.wake()

    async def _writer(self) -> None:
        session = self.session
        assert session is not None
        try:
            with trio.CancelScope() as self._writer_scope:
                await self._write_loop(session)
        except Exception:
            # a bug met by one connection must not take the others down with it
            log.exception("connection writer failed")
            self._reader_scope.cancel()
        finally:
            self._writer_scope = None
            self._writing = False
            self._writer_done.set()

    async def _write_loop(self, session: Session) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            data = session.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    session.connection_lost()
                    self._reader_scope.cancel()
                    return
            session.output_drained()
            self._drained.set()
            if session.closed and not session.pending_output:
                # half-close, then give the peer a moment to read our close and hang up
                # (the reader drops what it still sends) before the socket goes
                self._ending = True
                with trio.move_on_after(LINGER):
                    send_eof = getattr(self.stream, "send_eof", None)
                    if send_eof is not None:
                        try:
                            await send_eof()
                        except (trio.BrokenResourceError, trio.ClosedResourceError,
                                OSError):
                            pass
                    await self._reader_done.wait()
                self._reader_scope.cancel()
                return
            if (not data and self._idle_ticks >= IDLE_TICKS and not session.pending_output
                    and not self._wakeup.is_set()):
                return  # idle: a wake starts a new writer
