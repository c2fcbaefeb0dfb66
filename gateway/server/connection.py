"""The only code that touches a client's stream: the connection's own task reads, a writer
task writes, around a sans-IO protocol session.

Every client is driven here, whichever port it came in on: a TCP client's session is its
protocol's (AMQP, MQTT, STOMP); a WebSocket client's is `gateway.server.wsframing`'s framing
layer, which wraps the protocol session inside (WAMP, MQTT, STOMP) and looks the same from
here. So the limits below, the memory alarm, timers and shutdown hold for both alike.

Tasks: the task serving the connection reads (`run`) and writes the replies to what it read
itself, one write per read. Output that arrives otherwise (deliveries, confirms after a
disk batch, a close) goes through a writer task in the server's connection nursery, started
by `wake` and ended after two quiet ticks, so an idle connection costs one parked task.
Timers are not a task either: the server calls `tick` for every connection once a second.
(Per idle MQTT connection this took the broker from about 16 KiB to about 10 KiB; see
docs/performance.md.)

Password checks: a session that needs a slow (scrypt) password check exposes it as
`password_check` and holds its further input; `settle_password_check` runs the check in a
worker thread (at most `PASSWORD_CHECK_THREADS` at once, under the limiter the server gives
its `AuthService`: each takes 16 MiB and a core for some 30-60 ms), hands the answer back
and lets the session go on (`resume_input`), so one login never stalls the other clients.

Back-pressure: the reader stops reading while the session's outbound buffer is above its
high-water mark (a client that does not read what it is sent cannot make the broker buffer
without bound), and consumers get no credit meanwhile (see `AMQPConsumer.can_take`).

Limits (docs/limits.md): a write that makes no progress for `send_timeout` seconds cuts
the client off (its unacknowledged messages go back to their queues), as RabbitMQ's
`send_timeout` TCP option does; a session not logged in within `handshake_timeout`
seconds (checked by `tick`), or that sends more than `handshake_max_bytes` before it is,
is closed (RabbitMQ's `handshake_timeout`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

import trio

from gateway.auth.login import PendingCheck

log = logging.getLogger("gateway.server")

READ_SIZE = 65536
LINGER = 1.0  # seconds a closed connection waits for the peer to hang up
IDLE_TICKS = 2  # ticks without output after which the writer task ends (a wake restarts it)

# One event that is always set stands for every event of every connection that nobody waits
# on yet (each is replaced by a fresh one before a wait): 200 bytes less per connection each.
_SET = trio.Event()
_SET.set()
SEND_CHUNK = 256 * 1024  # bytes written per send timeout: progress, not total, is timed


async def peer_of(stream: trio.SocketStream) -> tuple[str, int] | None:
    """The client's address, or None (and the stream closed) when it is already gone: a
    client may reset the connection between the accept and this call."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        return None
    return (peer[0], peer[1])


class SendStalled(Exception):
    """A write made no progress within the send timeout."""


async def send_with_timeout(stream: trio.abc.Stream, data: bytes, timeout: float) -> None:
    """Write `data`, each `SEND_CHUNK` within `timeout` seconds (0 = no limit); raises
    `SendStalled` when the peer stops reading, or trio's stream errors."""
    if not timeout or len(data) <= SEND_CHUNK:
        with trio.move_on_after(timeout or float("inf")) as scope:
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise SendStalled
        return
    view = memoryview(data)
    for start in range(0, len(data), SEND_CHUNK):
        with trio.move_on_after(timeout) as scope:
            await stream.send_all(view[start:start + SEND_CHUNK])
        if scope.cancelled_caught:
            raise SendStalled


class HandshakeLimits:
    """Time and bytes a client gets to log in (see the module doc); 0 = no limit."""

    def __init__(self, timeout: float = 0.0, max_bytes: int = 0) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.received = 0

    def over(self, session: Session, data_len: int) -> bool:
        """Count bytes read while not logged in: True when past the cap."""
        if session.authenticated or not self.max_bytes:
            return False
        self.received += data_len
        return self.received > self.max_bytes

    def expired(self, session: Session, age: float) -> bool:
        """Not logged in `age` seconds after the start, past the timeout."""
        return bool(self.timeout) and age >= self.timeout and not session.authenticated

    async def watch(self, session: Session, stop: Callable[[str], None]) -> None:
        """For a connection with tasks of its own: stop it if it has not logged in when
        the timeout ends."""
        if not self.timeout:
            return
        await trio.sleep(self.timeout)
        if not session.authenticated:
            stop(self.why())

    def why(self) -> str:
        return f"not logged in within the handshake timeout ({self.timeout:g} s)"

PASSWORD_CHECK_THREADS: Final = 2  # the server's limiter, held by its AuthService


async def run_password_check(check: PendingCheck) -> None:
    """Run one slow password check in a worker thread; its answer goes where it says."""
    ok = await trio.to_thread.run_sync(check.verify, limiter=check.limiter)
    check.finish(ok)


async def settle_password_check(session: Any) -> None:
    """Run the session's pending password checks, one after another, off the event loop."""
    while (check := getattr(session, "password_check", None)) is not None:
        ok = await trio.to_thread.run_sync(check.verify, limiter=check.limiter)
        session.password_check = None
        check.finish(ok)
        session.resume_input()


class Session(Protocol):
    """What a protocol session offers the I/O layer. Besides these, after each durable
    batch the store task calls `flush_confirms()` on the sessions whose confirms tracker
    waited for a position that became durable (`Broker.durable.due()`: AMQP confirms, MQTT
    PUBACK/PUBREC, STOMP receipts), and then `wake()` if output is pending.
    Optional: `password_check` and `resume_input` (see the module doc), `peer` (for the
    log), and `finished` (True: nothing more will be read, so a closed session's stream
    goes at once instead of lingering for the peer to hang up; a WebSocket whose closing
    handshake is complete)."""

    wake: Callable[[], None]

    def flush_confirms(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def authenticated(self) -> bool: ...

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
                 after_input: Callable[[], None], nursery: trio.Nursery | None, *,
                 send_timeout: float = 0.0, handshake: HandshakeLimits | None = None,
                 label: str = "connection") -> None:
        """`nursery`: where writer tasks run (None: set it before `run`); `label`: what the
        log calls the client ("connection", "websocket")."""
        self.stream = stream
        self.label = label
        self.high_water = high_water
        self.send_timeout = send_timeout
        self.handshake = handshake or HandshakeLimits()
        self.started = clock()
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
            assert self.nursery is not None
            self.nursery.start_soon(self._writer)
        except RuntimeError:  # the server's nursery is closing: nothing more is written
            self._writing = False
            self._writer_done.set()

    def tick(self, now: float) -> None:
        """Once a second, from the server: the session's timers; retire an idle writer."""
        session = self.session
        if session is None or self._finished:
            return
        if self.handshake.expired(session, now - self.started):
            self.cut_off(self.handshake.why())
            return
        session.timer(now)
        if session.pending_output or session.closed:
            self.wake()
        elif self._writing and not self._ending:
            self._idle_ticks += 1
            if self._idle_ticks >= IDLE_TICKS:
                self._wakeup.set()  # the writer finds nothing to write and ends

    async def run(self, session: Session, early: bytes = b"") -> None:
        """Serve until either side closes; `early`: bytes read before the session existed
        (what followed a WebSocket upgrade request), handled as the first read."""
        self.session = session
        if session.pending_output:
            self.wake()
        try:
            with self._reader_scope:
                await self._reader(early)
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

    def cut_off(self, why: str) -> None:
        """Drop the client without a goodbye (a limit it broke, see the module doc)."""
        session = self.session
        if session is not None:
            peer = getattr(session, "peer", ("?", 0))
            log.info("%s %s:%s closed: %s", self.label, peer[0], peer[1], why)
            session.connection_lost()
        self._finished = True
        self.stop()

    async def _reader(self, early: bytes) -> None:
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
                data: bytes | bytearray
                if early:
                    data, early = early, b""
                else:
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
                    if getattr(session, "password_check", None) is not None:
                        await settle_password_check(session)  # its input waits meanwhile
                finally:
                    self._reading = False
                if self.handshake.over(session, len(data)):
                    self.cut_off("sent more than handshake_max_bytes "
                                 f"({self.handshake.max_bytes}) before logging in")
                    return
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
                await send_with_timeout(self.stream, data, self.send_timeout)
            except SendStalled:
                self.cut_off(self._stalled())
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                session.connection_lost()
                return
            session.output_drained()
            self._drained.set()
        finally:
            self._writing = False
        if session.pending_output or session.closed:
            self.wake()

    def _stalled(self) -> str:
        return f"not reading: a write stalled for the send timeout ({self.send_timeout:g} s)"

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
                    await send_with_timeout(self.stream, data, self.send_timeout)
                except SendStalled:
                    self.cut_off(self._stalled())
                    return
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
                finished = getattr(session, "finished", False)
                with trio.move_on_after(0 if finished else LINGER):
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
