"""Crash tests: a broker process killed with SIGKILL while pika publishes persistent
messages with confirms and consumes some of them, then restarted on the same data directory.

After every restart each message the broker had confirmed and that was not acknowledged is
delivered again, once; one that had been delivered comes back with `redelivered` set, one
that was never delivered without it. A message whose ack was sent before the kill may come
back too (at-least-once: the ack was not confirmed to anybody), and so may one published
but not yet confirmed; nothing else may.

A delivery's mark reaches the disk with the next group commit, so it is certainly there
once a publish sent after the delivery was confirmed (the ledger's `fence`): held messages
received before the last such publish must come back redelivered; one received in the
last moments before the kill may come back either way.

The kill falls at a different point in each round: early in a stream of publishes, later in
it, right after the last confirm, and right after a restart, before any client is back.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing, suppress
from dataclasses import dataclass, field

import pika
import pika.exceptions

QUEUE = "crash-orders"
FENCE_QUEUE = "crash-fence"
ROUND_DEADLINE = 8.0  # seconds for one round's publishing before the kill
PUBLISH_LIMIT = 2000  # messages one publisher thread sends at most in one round


def connect(broker) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


@dataclass
class Ledger:
    """What the clients know: sent, confirmed, acked, delivered-and-held."""

    sent: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)  # delivered, not acked, at the kill
    received_at: dict[str, float] = field(default_factory=dict)  # held: when delivered
    fence: float = 0.0  # when the latest publish that was then confirmed was sent
    never_delivered: set[str] = field(default_factory=set)  # sent while nobody consumed
    lock: threading.Lock = field(default_factory=threading.Lock)
    lost: int = 0
    redelivered_ok: int = 0
    unmarked_ok: int = 0
    acked_returned: int = 0


class Publisher(threading.Thread):
    """Publishes persistent messages with confirms until told to stop or the broker dies."""

    def __init__(self, broker, ledger: Ledger, prefix: str, unconsumed: bool) -> None:
        super().__init__(daemon=True)
        self.connection = connect(broker)
        self.ledger = ledger
        self.prefix = prefix
        self.unconsumed = unconsumed  # no consumer runs: what it sends is never delivered
        self.stop = threading.Event()
        self.count = 0

    def run(self) -> None:
        ch = self.connection.channel()
        ch.confirm_delivery()
        deadline = time.monotonic() + ROUND_DEADLINE
        with suppress(pika.exceptions.AMQPError, OSError):
            for n in range(PUBLISH_LIMIT):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                mid = f"{self.prefix}-{n}"
                with self.ledger.lock:
                    self.ledger.sent.add(mid)
                    if self.unconsumed:
                        self.ledger.never_delivered.add(mid)
                sent_at = time.monotonic()
                ch.basic_publish("", QUEUE, mid.encode(), properties=pika.BasicProperties(
                    delivery_mode=2, message_id=mid))
                with self.ledger.lock:
                    self.ledger.confirmed.add(mid)
                    self.ledger.fence = max(self.ledger.fence, sent_at)
                self.count += 1


class Consumer(threading.Thread):
    """Consumes while the publisher runs: acks most deliveries, keeps every 7th unacked."""

    def __init__(self, broker, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.connection = connect(broker)
        self.ledger = ledger
        self.stop = threading.Event()
        self.count = 0

    def on_message(self, ch, method, props, body) -> None:
        mid = body.decode()
        self.count += 1
        with self.ledger.lock:
            if self.count % 7 == 0:
                self.ledger.held.add(mid)
                self.ledger.received_at[mid] = time.monotonic()
                return
            self.ledger.acked.add(mid)
        ch.basic_ack(method.delivery_tag)

    def run(self) -> None:
        with suppress(pika.exceptions.AMQPError, OSError):
            ch = self.connection.channel()
            ch.basic_qos(prefetch_count=50)
            ch.basic_consume(QUEUE, self.on_message)
            deadline = time.monotonic() + ROUND_DEADLINE
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.05)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def check_survivors(broker, ledger: Ledger, ack_fraction: float, hold: int) -> None:
    """Read every message back after a restart and check it against the ledger; then ack
    some, hold `hold` unacked and leave the connection open for the kill."""
    connection = connect(broker)
    ch = connection.channel()
    ch.queue_declare(QUEUE, durable=True)
    seen: dict[str, bool] = {}
    tags: list[tuple[int, str]] = []
    for _ in range(PUBLISH_LIMIT * 8):
        method, props, body = ch.basic_get(QUEUE, auto_ack=False)
        if method is None:
            break
        mid = body.decode()
        assert mid not in seen, f"{mid} delivered twice from one recovered queue"
        seen[mid] = method.redelivered
        tags.append((method.delivery_tag, mid))
    must = ledger.confirmed - ledger.acked
    missing = must - set(seen)
    ledger.lost += len(missing)
    assert not missing, f"lost {len(missing)} confirmed messages: {sorted(missing)[:5]}"
    unknown = set(seen) - ledger.sent
    assert not unknown, f"messages nobody sent: {sorted(unknown)[:5]}"
    for mid in ledger.held:
        if mid in seen and ledger.received_at.get(mid, ledger.fence) < ledger.fence:
            assert seen[mid], f"{mid} was delivered before the kill but not redelivered"
            ledger.redelivered_ok += 1
    for mid in ledger.never_delivered & set(seen):
        assert not seen[mid], f"{mid} was never delivered but came back redelivered"
        ledger.unmarked_ok += 1
    ledger.never_delivered -= set(seen)  # delivered now, by basic.get
    ledger.acked_returned += len(set(seen) & ledger.acked)
    # what came back is the queue now: forget acks that were lost with the process
    ledger.acked -= set(seen)
    ledger.confirmed |= set(seen)
    ledger.held = set()
    n_ack = int(len(tags) * ack_fraction)
    for tag, mid in tags[:n_ack]:
        ch.basic_ack(tag)
        ledger.acked.add(mid)
    # requeue the rest except `hold`, which stay delivered and unacked through the kill
    keep = tags[n_ack:n_ack + hold]
    for tag, _ in tags[n_ack + hold:]:
        ch.basic_nack(tag, requeue=True)
    ledger.held = {mid for _, mid in keep}
    now = time.monotonic()
    ledger.received_at = dict.fromkeys(ledger.held, now)
    ch.queue_declare(QUEUE, durable=True, passive=True)  # round trip: acks were processed
    # a confirmed publish to another durable queue: the held messages' marks are on disk
    ch.queue_declare(FENCE_QUEUE, durable=True)
    ch.confirm_delivery()
    sent_at = time.monotonic()
    ch.basic_publish("", FENCE_QUEUE, b"fence", properties=pika.BasicProperties(
        delivery_mode=2))
    ledger.fence = max(ledger.fence, sent_at)
    broker._crash_clients = getattr(broker, "_crash_clients", []) + [connection]


def drop_clients(broker) -> None:
    for connection in getattr(broker, "_crash_clients", []):
        with suppress(Exception):
            connection.close()
    broker._crash_clients = []


def test_confirmed_messages_survive_repeated_kill_9(fresh_broker):
    ledger = Ledger()
    with closing(connect(fresh_broker)) as connection:
        connection.channel().queue_declare(QUEUE, durable=True)
    # (confirms to wait for before the kill, or None: kill when the publisher is done)
    rounds = [40, 250, None, "after-restart"]
    try:
        for r, point in enumerate(rounds):
            check_survivors(fresh_broker, ledger, ack_fraction=0.5, hold=5)
            if point == "after-restart":
                fresh_broker.restart(kill=True)
                drop_clients(fresh_broker)
                continue
            publisher = Publisher(fresh_broker, ledger, f"r{r}", unconsumed=r % 2 == 1)
            consumer = Consumer(fresh_broker, ledger) if r % 2 == 0 else None
            before = len(ledger.confirmed)
            publisher.start()
            if consumer is not None:
                consumer.start()
            if point is None:
                wait_for(lambda p=publisher: p.count >= 150, ROUND_DEADLINE)
                publisher.stop.set()
                publisher.join(ROUND_DEADLINE)
            else:
                target = before + int(point)
                assert wait_for(lambda t=target: len(ledger.confirmed) >= t,
                                ROUND_DEADLINE), "publisher made no progress"
            fresh_broker.restart(kill=True)  # SIGKILL mid-stream (or just after)
            for thread in (publisher, consumer):
                if thread is not None:
                    thread.stop.set()
                    thread.join(ROUND_DEADLINE)
                    assert not thread.is_alive()
            drop_clients(fresh_broker)
        check_survivors(fresh_broker, ledger, ack_fraction=1.0, hold=0)
    finally:
        drop_clients(fresh_broker)
    assert ledger.lost == 0
    assert ledger.redelivered_ok > 0 and ledger.unmarked_ok > 0 and ledger.acked
    print(f"\ncrash test: {len(rounds)} kills, {len(ledger.sent)} sent, "
          f"{len(ledger.confirmed)} confirmed, {ledger.lost} lost, "
          f"{ledger.redelivered_ok} held messages redelivered, "
          f"{ledger.unmarked_ok} never-delivered ones not, "
          f"{ledger.acked_returned} acked messages delivered again")
