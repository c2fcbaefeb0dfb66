"""The AMQP session driven by bytes: a client made of pamqp frames on one side, the real
session, core and auth on the other; no sockets. Time is a variable the test moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from pamqp import body, frame, header, heartbeat
from pamqp import commands as C

from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.server.app import Durability
from gateway.store.base import MemoryStore, Store
from gateway.store.disk import DiskStore
from protocols.amqp.frames import PROTOCOL_HEADER
from protocols.amqp.session import AMQPSession


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """Speaks to a session through bytes, as a socket would carry them."""

    def __init__(self, *, loopback: bool = True, heartbeat: int = 60,
                 max_message_size: int = 1 << 20, store: Store | None = None) -> None:
        config = load_config()
        self.clock = Clock()
        self.broker = Broker(store if store is not None else MemoryStore(),
                             config.auth.vhosts)
        self.session = AMQPSession(
            self.broker, AuthService(config.auth), peer=("127.0.0.1", 5555),
            loopback=loopback, clock=self.clock, heartbeat=heartbeat,
            max_message_size=max_message_size)
        self._buf = b""
        self._held: list[Any] = []

    def send(self, channel: int, *frames: Any) -> None:
        self.session.receive_data(b"".join(frame.marshal(f, channel) for f in frames))

    def raw(self, data: bytes) -> None:
        self.session.receive_data(data)

    def received(self) -> list[tuple[int, Any]]:
        self._buf += self.session.data_to_send()
        out = []
        while self._buf:
            if self._buf.startswith(b"AMQP"):
                out.append((0, self._buf[:8]))
                self._buf = self._buf[8:]
                continue
            consumed, channel, value = frame.unmarshal(self._buf)
            self._buf = self._buf[consumed:]
            out.append((channel, value))
        return out

    def methods(self) -> list[Any]:
        held, self._held = self._held, []
        return held + [v for _, v in self.received()]

    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  heartbeat: int = 0, frame_max: int = 131072) -> None:
        self.raw(PROTOCOL_HEADER)
        start = self.methods()
        assert isinstance(start[0], C.Connection.Start)
        self.send(0, C.Connection.StartOk(client_properties={"capabilities": {
            "consumer_cancel_notify": True}}, mechanism="PLAIN",
            response=f"\0{user}\0{password}"))
        tune = self.methods()
        if not isinstance(tune[0], C.Connection.Tune):
            self._held = tune
            return
        self.send(0, C.Connection.TuneOk(2047, frame_max, heartbeat),
                  C.Connection.Open(virtual_host=vhost))

    def open_channel(self, n: int = 1) -> None:
        self.send(n, C.Channel.Open())
        assert isinstance(self.methods()[-1], C.Channel.OpenOk)


def test_handshake_advertises_rabbitmq_capabilities() -> None:
    c = Client()
    c.raw(PROTOCOL_HEADER)
    (start,) = c.methods()
    assert isinstance(start, C.Connection.Start)
    assert start.mechanisms == "PLAIN AMQPLAIN"
    caps = start.server_properties["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
                "per_consumer_qos", "direct_reply_to"):
        assert caps[cap] is True, cap
    c.send(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
    (tune,) = c.methods()
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    c.send(0, C.Connection.TuneOk(100, 65536, 0), C.Connection.Open(virtual_host="/"))
    assert isinstance(c.methods()[0], C.Connection.OpenOk)
    assert c.session.channel_max == 100 and c.session.codec.frame_max == 65536


def test_bad_protocol_header_gets_ours_back_and_closes() -> None:
    c = Client()
    c.raw(b"AMQP\x01\x01\x00\x0a")
    out = c.received()
    assert out == [(0, PROTOCOL_HEADER)]
    assert c.session.closed


def test_wrong_password_is_connection_close_403() -> None:
    c = Client()
    c.handshake(password="nope")
    (close,) = c.methods()
    assert isinstance(close, C.Connection.Close)
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused")


def test_guest_from_a_remote_peer_is_refused() -> None:
    c = Client(loopback=False)
    c.handshake()
    (close,) = c.methods()
    assert close.reply_code == 403


def test_amqplain_login() -> None:
    c = Client()
    c.raw(PROTOCOL_HEADER)
    c.methods()
    from pamqp import encode

    table = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]
    c.send(0, C.Connection.StartOk(mechanism="AMQPLAIN", response=table.decode("latin-1")))
    assert isinstance(c.methods()[0], C.Connection.Tune)


def test_unknown_vhost_is_530() -> None:
    c = Client()
    c.handshake(vhost="/nowhere")
    (close,) = c.methods()
    assert close.reply_code == 530
    assert "/nowhere" in close.reply_text


def test_method_on_unopened_channel_is_504() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.send(3, C.Queue.Declare(queue="q"))
    (close,) = c.methods()
    assert isinstance(close, C.Connection.Close) and close.reply_code == 504


def test_channel_above_channel_max_is_530() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.send(4000, C.Channel.Open())
    (close,) = c.methods()
    assert close.reply_code == 530


def test_soft_error_closes_only_the_channel() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.open_channel(1)
    c.open_channel(2)
    c.send(1, C.Queue.Declare(queue="missing", passive=True))
    (close,) = c.methods()
    assert isinstance(close, C.Channel.Close) and close.reply_code == 404
    assert (close.class_id, close.method_id) == (50, 10)
    # methods on the closing channel are dropped until close-ok
    c.send(1, C.Queue.Declare(queue="x"))
    assert c.methods() == []
    c.send(1, C.Channel.CloseOk())
    c.send(2, C.Queue.Declare(queue="ok"))
    (ok,) = c.methods()
    assert isinstance(ok, C.Queue.DeclareOk) and ok.queue == "ok"


def test_oversize_message_closes_channel_406_and_connection_lives() -> None:
    c = Client(max_message_size=1000)
    c.handshake()
    c.methods()
    c.open_channel(1)
    c.open_channel(2)
    c.send(1, C.Basic.Publish(exchange="", routing_key="q"),
           header.ContentHeader(
               0, 5000, C.Basic.Properties()),
           body.ContentBody(b"x" * 5000))
    (close,) = c.methods()
    assert isinstance(close, C.Channel.Close) and close.reply_code == 406
    assert "5000" in close.reply_text
    c.send(2, C.Queue.Declare(queue="still-here"))
    assert isinstance(c.methods()[0], C.Queue.DeclareOk)


def test_heartbeats_sent_when_idle_and_dead_client_dropped() -> None:
    c = Client(heartbeat=10)
    c.handshake(heartbeat=10)
    c.methods()
    c.clock.now += 5
    c.session.timer(c.clock.now)
    out = c.received()
    assert any(isinstance(v, heartbeat.Heartbeat) for _, v in out)
    c.clock.now += 16  # 21 s without a byte from the client: two intervals missed
    c.session.timer(c.clock.now)
    assert c.session.closed


def test_client_heartbeat_keeps_connection() -> None:
    c = Client(heartbeat=10)
    c.handshake(heartbeat=10)
    c.methods()
    for _ in range(5):
        c.clock.now += 9
        c.raw(frame.marshal(heartbeat.Heartbeat(), 0))
        c.session.timer(c.clock.now)
    assert not c.session.closed


def test_heartbeat_zero_disables_it() -> None:
    c = Client(heartbeat=10)
    c.handshake(heartbeat=0)
    c.methods()
    c.clock.now += 1000
    c.session.timer(c.clock.now)
    assert not c.session.closed
    assert c.received() == []


def test_shutdown_sends_connection_forced() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.session.shutdown()
    (close,) = c.methods()
    assert isinstance(close, C.Connection.Close) and close.reply_code == 320


@pytest.mark.parametrize("garbage", [b"\x01\x00\x01\x00\x00\x00\x01\x00\xff",
                                     b"\x09\x00\x00\x00\x00\x00\x00\xce"])
def test_malformed_frames_close_connection_with_frame_error(garbage: bytes) -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.raw(garbage)
    (close,) = c.methods()
    assert isinstance(close, C.Connection.Close) and close.reply_code == 501
    assert c.session.closed


def test_consumer_cancel_notification_when_queue_deleted() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.open_channel(1)
    c.open_channel(2)
    c.send(1, C.Queue.Declare(queue="gone"), C.Basic.Consume(queue="gone", consumer_tag="t1"))
    assert isinstance(c.methods()[-1], C.Basic.ConsumeOk)
    c.send(2, C.Queue.Delete(queue="gone"))
    out = c.received()
    cancels = [(ch, v) for ch, v in out if isinstance(v, C.Basic.Cancel)]
    assert cancels and cancels[0][0] == 1 and cancels[0][1].consumer_tag == "t1"


def test_recover_without_requeue_is_540_as_in_rabbitmq() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.open_channel(1)
    c.send(1, C.Basic.Recover(requeue=False))
    (close,) = c.methods()
    assert isinstance(close, C.Connection.Close) and close.reply_code == 540
    assert close.reply_text == "NOT_IMPLEMENTED - requeue=false"


def test_recover_requeues_unacked_with_redelivered() -> None:
    c = Client()
    c.handshake()
    c.methods()
    c.open_channel(1)
    c.send(1, C.Queue.Declare(queue="rq"))
    c.send(1, C.Basic.Publish(exchange="", routing_key="rq"),
           header.ContentHeader(
               0, 2, C.Basic.Properties()),
           body.ContentBody(b"hi"))
    c.send(1, C.Basic.Consume(queue="rq", consumer_tag="c"))
    first = [v for v in c.methods() if isinstance(v, C.Basic.Deliver)]
    assert len(first) == 1 and first[0].redelivered is False
    c.send(1, C.Basic.Recover(requeue=True))
    out = c.methods()
    again = [v for v in out if isinstance(v, C.Basic.Deliver)]
    assert any(isinstance(v, C.Basic.RecoverOk) for v in out)
    assert len(again) == 1 and again[0].redelivered is True


def test_confirms_wait_for_the_disk_and_keep_their_order(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, fsync=False)
    store.recover()
    c = Client(store=store)
    c.handshake()
    c.methods()
    durability = Durability(store, c.broker)
    for n in (1, 2):
        c.open_channel(n)
        c.send(n, C.Confirm.Select())
    c.send(1, C.Queue.Declare(queue="d", durable=True),
           C.Queue.Declare(queue="one", durable=True, arguments={
               "x-max-length": 1, "x-overflow": "reject-publish"}))
    trio.run(durability.flush)
    c.methods()

    def publish(channel: int, queue: str, mode: int) -> None:
        c.send(channel, C.Basic.Publish(exchange="", routing_key=queue),
               header.ContentHeader(0, 1, C.Basic.Properties(delivery_mode=mode)),
               body.ContentBody(b"m"))

    publish(1, "d", 2)  # 1: waits for the disk
    publish(1, "d", 1)  # 2: transient, but confirmed in order, after 1
    publish(2, "one", 2)  # channel 2's 1: waits for the disk
    publish(2, "one", 2)  # 2: refused by the full queue: a nack, after its 1
    assert c.methods() == [] and c.broker.durable.waiting == 2  # a tracker per channel
    trio.run(durability.flush)  # the store task alone: no one flushes the session by hand
    got = [(n, type(m).__name__, m.delivery_tag, m.multiple) for n, m in c.received()]
    assert [g for g in got if g[0] == 1] == [(1, "Ack", 2, True)]
    assert [g for g in got if g[0] == 2] == [(2, "Ack", 1, True), (2, "Nack", 2, False)]
    assert len(got) == 3
    assert c.broker.durable.waiting == 0
    store.close()


def test_a_closed_channel_gets_no_confirms_even_when_its_number_is_open_again(
        tmp_path: Path) -> None:
    store = DiskStore(tmp_path, fsync=False)
    store.recover()
    c = Client(store=store)
    c.handshake()
    c.methods()
    durability = Durability(store, c.broker)
    c.open_channel(1)
    c.send(1, C.Confirm.Select(), C.Queue.Declare(queue="d", durable=True))
    trio.run(durability.flush)
    c.methods()
    c.send(1, C.Basic.Publish(exchange="", routing_key="d"),
           header.ContentHeader(0, 1, C.Basic.Properties(delivery_mode=2)),
           body.ContentBody(b"m"))
    assert c.methods() == []  # the confirm waits for the disk
    c.send(1, C.Channel.Close(200, "bye", 0, 0))
    assert [type(m).__name__ for m in c.methods()] == ["CloseOk"]
    c.open_channel(1)  # the same number, a new channel that published nothing
    trio.run(durability.flush)
    c.session.flush_confirms()
    assert c.received() == []  # no ack for the old channel's publish on the new one
    store.close()
