"""One STOMP connection's state machine: frames in -> core calls, deliveries -> MESSAGE.

Theory of operation
-------------------
The server feeds received bytes to `receive_data`; the codec turns them into frames and
each frame is handled to completion, synchronously, against the core (one handler per
command in `handlers.py`). Everything to send is appended to an outbound buffer that the
server's writer task drains (`data_to_send`). No I/O and no awaits happen here.

The connection's states, the commands each takes and where they lead are `machine.py`'s
tables (`StompMachine`); every frame is put to it first.

Any problem is answered with one ERROR frame (`message` header, explanatory body, the
`receipt-id` of the frame that caused it) and the connection closes, as the spec requires
(1.2 "ERROR"): a malformed frame, a refused login, a `BrokerError` from the core with its
AMQP reply code turned into RabbitMQ's words (`not_found`, `access_refused`, ...).

Receipts go out in the order their frames arrived. A frame whose handling appended records
to the store (a persistent SEND to a durable queue, a durable subscription's queue, a
COMMIT of either) has its RECEIPT held until the store reports that position durable
(`receipts`, a `gateway.core.confirms` tracker: after the group commit that makes it so,
the store task has this session `flush_confirms`); later receipts wait behind it.

Heart-beats (spec 1.2 "Heart-beating"): the client's `cx,cy` is answered with `sx,sy` =
(cy, cx) raised to at least `heartbeat_min` ms (zero stays zero, meaning none). The server
sends an EOL after half its interval of silence and closes the connection after twice the
client's interval without a byte from it.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from gateway.auth import access
from gateway.core.confirms import Confirms
from gateway.core.errors import BrokerError
from gateway.core.queue import Entry, Queue
from gateway.core.vhost import server_queue_name
from gateway.info import ConnectionInfo
from protocols.admission import Admit, admit_all
from protocols.outbox import Outbox
from protocols.stomp import handlers
from protocols.stomp.codec import StompCodec, encode_frame, encode_headers
from protocols.stomp.frames import (
    NEED_DATA,
    Command,
    Frame,
    Heartbeat,
    StompError,
    StompProtocolError,
    Version,
)
from protocols.stomp.machine import Local, State, StompMachine
from protocols.stomp.mapping import message_destination, message_headers
from protocols.stomp.subscription import AckMode, Subscription

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, User
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost
    from protocols.tls import TLSPeer

log = logging.getLogger("gateway.stomp")

CONNECT_TIMEOUT: Final = 10.0  # seconds a client has to send CONNECT, as RabbitMQ's
# (the server passes its limits.handshake_timeout)


__all__ = ["State", "StompSession", "error_message"]
TRANSACTIONAL: Final = frozenset({Command.SEND, Command.ACK, Command.NACK})


class Receipt(NamedTuple):
    receipt_id: str
    close: bool  # a DISCONNECT's: the connection closes once it is sent


def error_message(err: BrokerError) -> str:
    """RabbitMQ's short name for an AMQP reply code: 404 -> `not_found`."""
    return err.code.name.lower()


class StompSession(Outbox):
    def __init__(
        self,
        broker: Broker,
        auth: AuthService,
        *,
        peer: tuple[str, int],
        loopback: bool,
        clock: Callable[[], float],
        wake: Callable[[], None] = lambda: None,
        max_frame_size: int = 4 * 1024 * 1024,
        max_headers: int = 100,
        max_header_length: int = 8192,
        heartbeat_min: int = 1000,
        high_water: int = 1024 * 1024,
        anonymous_user: str | None = None,
        loopback_users: frozenset[str] = frozenset(),
        tls: TLSPeer | None = None,
        ssl_cert_login: bool = False,
        admit: Admit = admit_all,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.admit = admit
        self.connect_timeout = connect_timeout
        self.id = broker.next_connection_id()  # unique among the broker's connections
        self.broker = broker
        self.auth = auth
        self.peer = peer
        self.loopback = loopback
        # a slow password check the I/O layer runs in a thread; input waits meanwhile
        self.password_check: PendingCheck | None = None
        self.clock = clock
        self.wake = wake
        self.codec = StompCodec(max_frame_size=max_frame_size, max_headers=max_headers,
                                max_header_length=max_header_length)
        self.heartbeat_min = heartbeat_min
        self.high_water = high_water
        self.anonymous_user = anonymous_user  # who a CONNECT without login is (None: refused)
        self.loopback_users = loopback_users
        self.tls = tls
        # a CONNECT without login is the verified certificate's CN (RabbitMQ's ssl_cert_login)
        self.cert_user = tls.cert_user if tls is not None and ssl_cert_login else None
        self.machine = StompMachine()
        self.version = Version.V1_0
        self.session_name = "session-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.ack_ids: dict[str, tuple[Subscription, int]] = {}
        self.transactions: dict[str, list[Frame]] = {}
        self.tx_bytes = 0  # bytes of SEND bodies buffered in open transactions
        self.temp_queues: dict[str, Queue] = {}
        self.declared: set[str] = set()  # /queue/ names declared by a SEND already
        self.targets: dict[str, tuple[str, str]] = {}  # SEND destination -> (exchange, key)
        # receipts in frame order, each waiting for its frame's store records
        self.receipts: Confirms[Receipt] = Confirms(broker.durable, self)
        self._dest_blocks: dict[str, bytes] = {}  # encoded `destination` lines, by value
        self._next_tag = 1
        self.started = clock()
        self.last_recv = self.started
        self.init_outbox()
        self.send_interval = 0.0  # seconds between our heart-beats (0: none)
        self.recv_interval = 0.0  # seconds the client promised between its bytes (0: none)
        self.close_reason: str | None = None
        self.alarm = False
        self.read_paused = False

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    @property
    def protocol_name(self) -> str:
        """As the management API lists connections (RabbitMQ: "STOMP 1.2")."""
        return f"STOMP {self.version.value}"

    def info(self) -> ConnectionInfo:
        """This connection as management shows it."""
        return ConnectionInfo(
            self.protocol_name, "stomp", self.peer,
            self.user.name if self.user is not None else None,
            self.vhost.name if self.vhost is not None else None, self.closed,
            tls=self.tls.info() if self.tls is not None else None,
            pending_output=self.pending_output, blocked=self.read_paused)

    # -- I/O boundary ----------------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        """Logged in with a vhost open (the handshake limits no longer apply)."""
        return self.vhost is not None

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def closed(self) -> bool:
        return self.machine.state is State.CLOSED

    def credit_returned(self) -> None:
        self.kick()

    def send_frame(self, command: Command, headers: list[tuple[str, str]],
                   body: bytes = b"") -> None:
        self.emit(encode_frame(command, headers, body, self.version))

    def receive_data(self, data: bytes | bytearray) -> None:
        machine = self.machine
        if not machine.buffers:
            return
        self.last_recv = self.clock()
        self.codec.receive_data(data)
        while machine.parses and self.password_check is None:
            try:
                event = self.codec.next_event()
            except StompProtocolError as exc:
                self.send_error(exc.message, exc.detail)
                break
            if event is NEED_DATA:
                break
            if isinstance(event, Heartbeat):
                continue
            self._handle(event)
        self.flush_confirms()

    def resume_input(self) -> None:
        """A password check finished: handle the input that waited for it."""
        self.receive_data(b"")

    def timer(self, now: float) -> None:
        """Heart-beats both ways, and the deadline for CONNECT."""
        machine = self.machine
        if machine.allows(Local.CONNECT_DEADLINE):
            if now - self.started > self.connect_timeout:
                self.close_reason = "no CONNECT frame in time"
                self._finish()
            return
        if not machine.allows(Local.HEARTBEAT):
            return
        if self.read_paused:
            self.last_recv = now  # paused by the memory alarm: we are the ones not reading
        if self.recv_interval and now - self.last_recv > 2 * self.recv_interval:
            log.info("connection %s: no heart-beat from the client for %.1f s, closing",
                     self.name, now - self.last_recv)
            self.close_reason = "missed heart-beats"
            self._finish()
            return
        if self.send_interval and now - self.last_send >= self.send_interval / 2:
            self.emit(self.codec.heartbeat())
            self.last_send = now

    def connection_lost(self) -> None:
        """The socket is gone: requeue what was not acknowledged, drop open transactions."""
        self._finish()

    def shutdown(self) -> None:
        if self.machine.allows(Local.NOTICE):
            self.send_error("Server shutdown", "The broker is shutting down.")
        elif not self.closed:
            self._finish()

    def vhost_deleted(self, name: str) -> None:
        """The vhost this connection is on was deleted."""
        if self.machine.allows(Local.NOTICE):
            self.send_error("Virtual host deleted", f"Virtual host '{name}' was deleted.")
        elif not self.closed:
            self._finish()

    def memory_alarm(self, on: bool) -> None:
        """Over the memory high-watermark a connection that SENDs is not read any more
        (STOMP has no way to tell the client) until the alarm clears."""
        if on == self.alarm:
            return
        self.alarm = on
        if not on:
            self.read_paused = False

    # -- errors and closing ----------------------------------------------------------------

    def send_error(self, message: str, detail: str, receipt: str | None = None,
                   extra: tuple[tuple[str, str], ...] = ()) -> None:
        """ERROR then close (spec 1.2: the server MUST close the connection after it)."""
        if not self.machine.allows(Local.SEND_ERROR):
            return
        headers = [("message", message), ("content-type", "text/plain"), *extra]
        if receipt is not None:
            headers.append(("receipt-id", receipt))
        self.send_frame(Command.ERROR, headers, detail.encode("utf-8"))
        log.info("connection %s: ERROR %s: %s", self.name, message, detail.strip())
        self.close_reason = message
        self._finish()

    def _finish(self, event: Local = Local.FINISH) -> None:
        self._release_all()
        self.machine.process(event)

    def _release_all(self) -> None:
        now = self.clock()
        subs = list(self.subscriptions.values())
        # every subscription stops consuming before any requeues: a requeue dispatches at
        # once, and must not hand a message to another subscription of this closing session
        for sub in subs:
            if not sub.queue.deleted:
                sub.queue.vhost.cancel(sub.queue, sub, now)
        for sub in subs:
            self.end_subscription(sub, now)
        self.transactions.clear()
        self.tx_bytes = 0
        self.receipts.clear()
        if self.vhost is not None:
            self.vhost.connection_closed(self)
        self.temp_queues.clear()

    # -- frames ----------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        command = frame.command
        try:
            machine = self.machine
            if command not in machine.steady:
                machine.process(command)  # CONNECT's transition, or the refusal
            tx = frame.get("transaction") if command in TRANSACTIONAL else None
            durable = self.broker.durable
            before = durable.position
            if tx is not None:
                self.buffer_in_transaction(tx, frame)
                after = None
            else:
                after = handlers.TABLE[command](self, frame)
        except StompError as exc:
            self.send_error(exc.message, exc.detail, receipt, exc.headers)
            return
        except BrokerError as err:
            self.send_error(error_message(err), err.text, receipt)
            return
        if receipt is not None and command is not Command.DISCONNECT:
            self.receipts.insert(durable.since(before), Receipt(receipt, False))
            self.flush_confirms()
        if after is not None:
            after()

    def replay(self, frame: Frame) -> None:
        """Run a frame of a committed transaction."""
        after = handlers.TABLE[frame.command](self, frame)
        if after is not None:
            after()

    def buffer_in_transaction(self, tx: str, frame: Frame) -> None:
        actions = self.transactions.get(tx)
        if actions is None:
            raise StompError("Bad transaction", f"Invalid transaction identifier: {tx}")
        if len(actions) >= handlers.MAX_TX_ACTIONS:
            raise StompError("Bad transaction", f"Transaction {tx} has more than "
                             f"{handlers.MAX_TX_ACTIONS} frames")
        size = self.tx_bytes + len(frame.body)
        if size > handlers.MAX_TX_BYTES:
            raise StompError("Bad transaction", "Open transactions of this connection hold "
                             f"more than {handlers.MAX_TX_BYTES} bytes of message bodies")
        self.tx_bytes = size
        actions.append(frame)

    def end_transaction(self, tx: str) -> list[Frame]:
        actions = self.transactions.pop(tx, None)
        if actions is None:
            raise StompError("Bad transaction", f"Invalid transaction identifier: {tx}")
        self.tx_bytes -= sum(len(f.body) for f in actions)
        return actions

    @property
    def _cache_key(self) -> str:
        return "stomp-" + self.version.value

    def connected(self, user: User, vhost: VirtualHost, send_interval: float,
                  recv_interval: float) -> None:
        self.user = user
        self.vhost = vhost
        self.send_interval = send_interval
        self.recv_interval = recv_interval
        self.machine.process(Local.LOGGED_IN)

    def disconnect(self, receipt: str | None) -> None:
        """DISCONNECT: close now, or once its RECEIPT is out. That receipt waits for every
        store write made so far, so it confirms all that came before it."""
        if receipt is None:
            self.close_reason = "DISCONNECT"
            self._finish()
            return
        self.machine.process(Local.AWAIT_RECEIPT)
        self.receipts.insert(self.broker.durable.position, Receipt(receipt, True))

    def flush_confirms(self) -> None:
        """Send the receipts whose frames' store records are durable, in order."""
        if not self.receipts:
            return
        for receipt in self.receipts.confirm():
            self.send_frame(Command.RECEIPT, [("receipt-id", receipt.receipt_id)])
            if receipt.close:
                self._finish(Local.RECEIPT_SENT)
                return

    # -- deliveries and acknowledgements ---------------------------------------------------

    def deliver(self, sub: Subscription, entry: Entry) -> None:
        tag = self._next_tag
        self._next_tag = tag + 1
        message_id = f"{sub.id_prefix}{tag}"
        if not sub.no_ack:
            sub.unacked[tag] = (entry, message_id)
            self.ack_ids[message_id] = (sub, tag)
        msg = entry.message
        version = self.version
        key = self._cache_key
        block: bytes | None = msg.cache.get(key)
        if block is None:
            destination = message_destination(msg)
            props = message_headers(msg)
            if props:
                block = encode_headers([("destination", destination), *props], version)
            else:  # the common case: a bare message; its block depends on where it went
                block = self._dest_blocks.get(destination)
                if block is None:
                    if len(self._dest_blocks) > 1000:
                        self._dest_blocks.clear()
                    block = self._dest_blocks[destination] = encode_headers(
                        [("destination", destination)], version)
            msg.cache[key] = block
        wire_id = sub.wire_id_prefix + b"%d" % tag
        ack = b"ack:%s\n" % wire_id if sub.ack_header else b""
        body = msg.body
        self.emit(b"".join((
            sub.wire_head, b"message-id:", wire_id,
            b"\nredelivered:true\n" if entry.redelivered else b"\nredelivered:false\n",
            ack, block, b"content-length:%d\n\n" % len(body), body, b"\x00")))

    def settle(self, ack_id: str, *, ack: bool, requeue: bool, command: str) -> None:
        found = self.ack_ids.get(ack_id)
        if found is None:
            raise StompError(f"Bad {command}",
                             f"Message with id '{ack_id}' is not waiting for an {command} on "
                             "this connection (unknown, already acknowledged, or its "
                             "subscription is auto-acknowledged).")
        sub, tag = found
        now = self.clock()
        requeued: list[Entry] = []
        for entry, mid in sub.take(tag):
            self.ack_ids.pop(mid, None)
            if ack:
                entry.queue.ack(entry)
            elif requeue:
                requeued.append(entry)
            else:
                entry.queue.reject(entry, now)
        if requeued:
            requeued[0].queue.requeue(requeued, now)
        sub.queue.dispatch(now)

    def kick(self) -> None:
        """Credit came back: let the queues of started subscriptions deliver again."""
        now = self.clock()
        for q in {sub.queue for sub in self.subscriptions.values() if sub.started}:
            q.dispatch(now)

    def subscription_cancelled(self, sub: Subscription) -> None:
        """The queue of a subscription was deleted under it. As RabbitMQ does, the client
        is told by an ERROR naming the subscription, and the connection stays open: the
        spec's close-after-ERROR would punish the client for another's deletion."""
        if self.subscriptions.get(sub.id) is not sub:
            return
        del self.subscriptions[sub.id]
        for _, mid in sub.unacked.values():
            self.ack_ids.pop(mid, None)
        sub.unacked.clear()
        if self.machine.allows(Local.NOTICE) and not sub.id.startswith("/temp-queue/"):
            self.send_frame(Command.ERROR, [
                ("message", "Server cancelled subscription"), ("subscription", sub.id),
                ("content-type", "text/plain")],
                f"The server has cancelled subscription '{sub.id}' to {sub.destination}: "
                "its queue was deleted. No more messages will be delivered for it.\n"
                .encode())

    def end_subscription(self, sub: Subscription, now: float) -> None:
        """UNSUBSCRIBE or disconnect: stop consuming, then requeue what was not acked."""
        self.subscriptions.pop(sub.id, None)
        queue = sub.queue
        entries = [entry for entry, _ in sub.unacked.values()]
        for _, mid in sub.unacked.values():
            self.ack_ids.pop(mid, None)
        sub.unacked.clear()
        if not queue.deleted:
            queue.vhost.cancel(queue, sub, now)
        if entries:
            queue.requeue(entries, now)

    def start_subscription(self, sub: Subscription) -> None:
        sub.started = True
        sub.queue.dispatch(self.clock())

    def temp_queue(self, name: str) -> Queue:
        """The private reply queue of `/temp-queue/<name>` (RabbitMQ: an exclusive
        auto-delete `amq.gen-*` queue read by an internal auto-ack subscription whose id is
        the destination)."""
        queue = self.temp_queues.get(name)
        if queue is not None and not queue.deleted:
            return queue
        vh = self.vhost
        assert vh is not None and self.user is not None
        now = self.clock()
        named = server_queue_name()  # named first: checked under the name it will have
        access.declare_queue(self.auth, self.user, vh, named)
        access.consume(self.auth, self.user, vh, named)
        queue = vh.declare_queue(named, exclusive=True, auto_delete=True, owner=self,
                                 now=now, server_named=True)
        self.temp_queues[name] = queue
        sub_id = f"/temp-queue/{name}"
        sub = Subscription(self, sub_id, queue, sub_id, AckMode.AUTO)
        old = self.subscriptions.get(sub_id)
        if old is not None:
            self.end_subscription(old, now)
        self.subscriptions[sub_id] = sub
        sub.started = True
        vh.consume(queue, sub, exclusive=False, now=now)
        return queue
