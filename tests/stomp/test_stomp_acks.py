"""Acknowledgements, prefetch, requeue, transactions and receipts of the STOMP session,
driven by bytes against an in-memory broker."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_stomp_helpers import Client, LaggingStore

from gateway.server.app import Durability
from gateway.store.disk import DiskStore
from protocols.stomp import handlers
from protocols.stomp.frames import Command, Frame

C = Command


def ready(c: Client, queue: str) -> int:
    return c.broker.vhost("/").queues[queue].message_count


def setup(version: str = "1.2", ack: str = "client-individual", queue: str = "/queue/w",
          count: int = 3, **sub: str) -> tuple[Client, list[Frame]]:
    c = Client()
    c.connect(version)
    for i in range(count):
        c.send(C.SEND, {"destination": queue}, b"m%d" % i)
    c.send(C.SUBSCRIBE, {"destination": queue, "id": "s", "ack": ack, **sub})
    return c, c.frames()


def ack_headers(c: Client, msg: Frame) -> dict[str, str]:
    """How each version names a message in ACK/NACK."""
    if c.version is not None and c.version.value == "1.2":
        return {"id": msg.headers["ack"]}
    return {"message-id": msg.headers["message-id"], "subscription": "s"}


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_client_individual_ack(version: str) -> None:
    c, msgs = setup(version)
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    assert ("ack" in msgs[0].headers) == (version == "1.2")
    c.send(C.ACK, ack_headers(c, msgs[1]))
    q = c.broker.vhost("/").queues["w"]
    assert sorted(e.message.body for e in q.unacked.values()) == [b"m0", b"m2"]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_client_ack_is_cumulative(version: str) -> None:
    c, msgs = setup(version, ack="client")
    c.send(C.ACK, ack_headers(c, msgs[1]))
    q = c.broker.vhost("/").queues["w"]
    assert [e.message.body for e in q.unacked.values()] == [b"m2"]
    # an id already covered by the cumulative ACK is unknown now
    c.send(C.ACK, ack_headers(c, msgs[0]))
    err = c.error()
    assert err.headers["message"] == "Bad ACK"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_requeues_and_marks_redelivered(version: str) -> None:
    c, msgs = setup(version, count=1)
    c.send(C.NACK, ack_headers(c, msgs[0]))
    (again,) = c.frames()
    assert again.body == b"m0" and again.headers["redelivered"] == "true"


def test_nack_without_requeue_drops_the_message() -> None:
    c, msgs = setup(count=1)
    c.send(C.NACK, {"id": msgs[0].headers["ack"], "requeue": "false"})
    assert c.frames() == []
    q = c.broker.vhost("/").queues["w"]
    assert not q.unacked and q.message_count == 0


def test_ack_of_unknown_message_is_an_error() -> None:
    c, _ = setup(count=1)
    c.send(C.ACK, {"id": "nonsense", "receipt": "r"})
    err = c.error()
    assert err.headers["message"] == "Bad ACK" and err.headers["receipt-id"] == "r"
    assert b"nonsense" in err.body


def test_ack_in_auto_mode_is_unknown() -> None:
    c, msgs = setup(ack="auto", count=1)
    c.send(C.ACK, {"id": msgs[0].headers["message-id"]})
    assert c.error().headers["message"] == "Bad ACK"


def test_ack_without_id() -> None:
    c, _ = setup(count=1)
    c.send(C.ACK, {})
    err = c.error()
    assert err.headers["message"] == "Missing header" and b"'id'" in err.body


def test_disconnect_requeues_unacked_messages() -> None:
    c, msgs = setup(count=2)
    assert len(msgs) == 2
    c.send(C.DISCONNECT)
    assert c.session.closed and ready(c, "w") == 2
    again = Client(c.broker)
    again.connect()
    again.send(C.SUBSCRIBE, {"destination": "/queue/w", "id": "s", "ack": "client"})
    assert [(m.body, m.headers["redelivered"]) for m in again.frames()] == [
        (b"m0", "true"), (b"m1", "true")]


def test_unsubscribe_requeues_unacked_messages() -> None:
    c, _ = setup(count=2)
    c.send(C.UNSUBSCRIBE, {"id": "s"})
    assert ready(c, "w") == 2 and c.session.subscriptions == {}


def test_prefetch_count_limits_unacked() -> None:
    c, msgs = setup(count=5, **{"prefetch-count": "2"})
    assert [m.body for m in msgs] == [b"m0", b"m1"]
    c.send(C.ACK, {"id": msgs[0].headers["ack"]})
    assert [m.body for m in c.frames()] == [b"m2"]


def test_bad_prefetch_count() -> None:
    c, _ = setup(count=0, **{"prefetch-count": "-1"})
    assert c.session.closed


# -- transactions --------------------------------------------------------------------------

def test_transaction_commit_makes_sends_and_acks_happen() -> None:
    c, msgs = setup(count=1)
    c.send(C.BEGIN, {"transaction": "t"})
    c.send(C.SEND, {"destination": "/queue/tx", "transaction": "t"}, b"in tx")
    c.send(C.ACK, {"id": msgs[0].headers["ack"], "transaction": "t"})
    assert "tx" not in c.broker.vhost("/").queues
    assert len(c.broker.vhost("/").queues["w"].unacked) == 1
    c.send(C.COMMIT, {"transaction": "t", "receipt": "done"})
    assert c.one(C.RECEIPT).headers["receipt-id"] == "done"
    assert ready(c, "tx") == 1
    assert not c.broker.vhost("/").queues["w"].unacked


def test_transaction_abort_discards_everything() -> None:
    c, msgs = setup(count=1)
    c.send(C.BEGIN, {"transaction": "t"})
    c.send(C.SEND, {"destination": "/queue/w", "transaction": "t"}, b"never")
    c.send(C.NACK, {"id": msgs[0].headers["ack"], "transaction": "t"})
    c.send(C.ABORT, {"transaction": "t", "receipt": "a"})
    assert c.one(C.RECEIPT).headers["receipt-id"] == "a"
    q = c.broker.vhost("/").queues["w"]
    assert q.message_count == 0 and len(q.unacked) == 1


def test_transaction_open_at_disconnect_is_aborted() -> None:
    c = Client()
    c.connect()
    c.send(C.BEGIN, {"transaction": "t"})
    c.send(C.SEND, {"destination": "/queue/gone", "transaction": "t"}, b"x")
    c.send(C.DISCONNECT)
    assert "gone" not in c.broker.vhost("/").queues and c.session.transactions == {}


@pytest.mark.parametrize("frame", [
    (C.SEND, {"destination": "/queue/a", "transaction": "nope"}),
    (C.COMMIT, {"transaction": "nope"}),
    (C.ABORT, {"transaction": "nope"}),
])
def test_unknown_transaction(frame: tuple[Command, dict[str, str]]) -> None:
    c = Client()
    c.connect()
    c.send(*frame)
    err = c.error()
    assert err.headers["message"] == "Bad transaction" and b"nope" in err.body


def test_transactions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "MAX_TX_BYTES", 1000)
    c = Client()
    c.connect()
    c.send(C.BEGIN, {"transaction": "t"})
    c.send(C.SEND, {"destination": "/queue/a", "transaction": "t"}, b"x" * 600)
    c.send(C.ABORT, {"transaction": "t"})
    assert c.session.tx_bytes == 0
    c.send(C.BEGIN, {"transaction": "t2"})
    c.send(C.SEND, {"destination": "/queue/a", "transaction": "t2"}, b"x" * 600)
    c.send(C.SEND, {"destination": "/queue/a", "transaction": "t2"}, b"x" * 600)
    err = c.error()
    assert err.headers["message"] == "Bad transaction" and b"1000 bytes" in err.body
    many = Client()
    many.connect()
    for i in range(handlers.MAX_TRANSACTIONS):
        many.send(C.BEGIN, {"transaction": f"t{i}"})
    many.send(C.BEGIN, {"transaction": "one-too-many"})
    assert many.error().headers["message"] == "Bad transaction"


def test_begin_twice_and_begin_without_name() -> None:
    c = Client()
    c.connect()
    c.send(C.BEGIN, {"transaction": "t"})
    c.send(C.BEGIN, {"transaction": "t"})
    assert c.error().headers["message"] == "Bad transaction"
    c2 = Client()
    c2.connect()
    c2.send(C.BEGIN, {})
    assert c2.error().headers["message"] == "Missing header"


# -- receipts ------------------------------------------------------------------------------

def test_receipt_for_every_frame() -> None:
    c = Client()
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/queue/r", "id": "0", "ack": "client",
                         "receipt": "1"})
    c.send(C.BEGIN, {"transaction": "t", "receipt": "2"})
    c.send(C.SEND, {"destination": "/queue/r", "receipt": "3"}, b"x")
    frames = c.frames()
    msg = next(f for f in frames if f.command is C.MESSAGE)
    c.send(C.ACK, {"id": msg.headers["ack"], "receipt": "4"})
    c.send(C.ABORT, {"transaction": "t", "receipt": "5"})
    c.send(C.UNSUBSCRIBE, {"id": "0", "receipt": "6"})
    c.send(C.DISCONNECT, {"receipt": "7"})
    frames += c.frames()
    assert [f.headers["receipt-id"] for f in frames if f.command is C.RECEIPT] == [
        "1", "2", "3", "4", "5", "6", "7"]
    assert c.session.closed


def test_persistent_send_receipt_waits_for_the_store() -> None:
    store = LaggingStore()
    c = Client(store=store)
    c.connect()
    c.send(C.SEND, {"destination": "/queue/p", "receipt": "decl"}, b"transient")
    store.sync()  # the queue's declaration becomes durable
    c.session.flush_confirms()
    assert c.one(C.RECEIPT).headers["receipt-id"] == "decl"
    c.send(C.SEND, {"destination": "/queue/p", "persistent": "true", "receipt": "p1"}, b"x")
    c.send(C.SEND, {"destination": "/queue/p", "receipt": "t1"}, b"y")
    assert c.frames() == []  # t1 waits behind p1: receipts keep their order
    assert store.appended > store.durable
    store.sync()
    c.session.flush_confirms()
    assert [f.headers["receipt-id"] for f in c.frames()] == ["p1", "t1"]


def test_transient_send_receipt_is_immediate() -> None:
    store = LaggingStore()
    c = Client(store=store)
    c.connect()
    c.send(C.SEND, {"destination": "/topic/none", "persistent": "true", "receipt": "r"}, b"x")
    assert c.one(C.RECEIPT).headers["receipt-id"] == "r"


def test_disconnect_receipt_waits_for_pending_writes_then_closes() -> None:
    store = LaggingStore()
    c = Client(store=store)
    c.connect()
    c.send(C.SEND, {"destination": "/queue/p2", "persistent": "true"}, b"x")
    c.send(C.DISCONNECT, {"receipt": "bye"})
    assert c.frames() == [] and not c.session.closed
    c.send(C.SEND, {"destination": "/queue/p2"}, b"after disconnect")  # ignored
    store.sync()
    c.session.flush_confirms()
    assert c.one(C.RECEIPT).headers["receipt-id"] == "bye"
    assert c.session.closed and ready(c, "p2") == 1


def test_the_store_task_sends_the_receipts_that_waited(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, fsync=False)
    store.recover()
    c = Client(store=store)
    other = Client(c.broker)
    c.connect()
    other.connect()
    durability = Durability(store, c.broker)
    c.send(C.SEND, {"destination": "/queue/d", "receipt": "decl"}, b"transient")
    assert c.frames() == []  # the queue's declaration waits for the disk
    trio.run(durability.flush)
    assert c.one(C.RECEIPT).headers["receipt-id"] == "decl"
    c.send(C.SEND, {"destination": "/queue/d", "persistent": "true", "receipt": "p1"}, b"x")
    other.send(C.SEND, {"destination": "/queue/d", "receipt": "t1"}, b"y")
    assert other.one(C.RECEIPT).headers["receipt-id"] == "t1"  # wrote nothing: at once
    c.send(C.DISCONNECT, {"receipt": "bye"})
    assert c.frames() == [] and c.broker.durable.waiting == 1
    trio.run(durability.flush)
    assert [f.headers["receipt-id"] for f in c.frames()] == ["p1", "bye"]
    assert c.session.closed and ready(c, "d") == 3
    store.close()
