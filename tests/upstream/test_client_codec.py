"""The sans-IO client side (protocols.amqp.client, client_codec) fed bytes, no sockets.

Server frames are made by the server's own codec (AMQPCodec encodes what a server sends)
and client output is read back by it (AMQPCodec decodes what a client sends), so the two
directions check each other; pamqp's marshal is the reference for method bytes."""

from __future__ import annotations

import pytest
from pamqp import commands

from protocols.amqp.client import (
    Blocked,
    ChannelClosed,
    ChannelOpened,
    ClientConnection,
    ClientError,
    Confirmed,
    ConnectionClosed,
    ConnectionOpened,
    ConsumerCancelled,
    Delivery,
    Reply,
    Returned,
    Unblocked,
)
from protocols.amqp.client_codec import ClientCodec, build, marshal
from protocols.amqp.codec import AMQPCodec
from protocols.amqp.frames import NEED_DATA, PROTOCOL_HEADER, Content, Method, ProtocolError

Basic, Channel, Connection = commands.Basic, commands.Channel, commands.Connection
server = AMQPCodec()


def events(client: ClientConnection, data: bytes) -> list[object]:
    client.receive_data(data)
    found = []
    while (event := client.next_event()) is not NEED_DATA:
        found.append(event)
    return found


def sent(client: ClientConnection) -> list[object]:
    """What the client sent, as the server's codec reads it."""
    reader = AMQPCodec(frame_max=1 << 20)
    data = client.data_to_send()
    if data.startswith(PROTOCOL_HEADER):
        reader.receive_data(data)
        reader.next_event()
    else:
        reader.receive_data(PROTOCOL_HEADER + data)
        reader.next_event()
    out = []
    while (event := reader.next_event()) is not NEED_DATA:
        out.append(event.method if isinstance(event, Method) else event)
    return out


def opened(heartbeat: int = 60, frame_max: int = 131072) -> ClientConnection:
    client = ClientConnection(username="u", password="p", vhost="v", heartbeat=heartbeat,
                              frame_max=frame_max)
    client.initiate()
    assert client.data_to_send() == PROTOCOL_HEADER
    start = Connection.Start(server_properties={"product": "RabbitMQ"},
                             mechanisms="AMQPLAIN PLAIN", locales="en_US")
    assert events(client, server.encode_method(0, start)) == []
    (start_ok,) = sent(client)
    assert isinstance(start_ok, Connection.StartOk)
    assert start_ok.mechanism == "PLAIN" and start_ok.response == "\0u\0p"
    assert start_ok.client_properties["capabilities"]["publisher_confirms"] is True
    tune = Connection.Tune(channel_max=2047, frame_max=65536, heartbeat=30)
    assert events(client, server.encode_method(0, tune)) == []
    tune_ok, open_ = sent(client)
    assert isinstance(tune_ok, Connection.TuneOk) and isinstance(open_, Connection.Open)
    assert open_.virtual_host == "v"
    (event,) = events(client, server.encode_method(0, Connection.OpenOk()))
    assert isinstance(event, ConnectionOpened)
    return client


def test_handshake_negotiates_limits_and_heartbeat() -> None:
    client = opened(heartbeat=60, frame_max=131072)
    assert (client.channel_max, client.frame_max, client.heartbeat) == (2047, 65536, 30)
    assert client.codec.frame_max == 65536
    client = opened(heartbeat=0)  # 0 on our side: the server's value
    assert client.heartbeat == 30


def test_no_plain_and_refused_version() -> None:
    client = ClientConnection(username="u", password="p")
    client.initiate()
    client.data_to_send()
    with pytest.raises(ProtocolError):
        events(client, server.encode_method(0, Connection.Start(mechanisms="EXTERNAL")))
    (close,) = sent(client)
    assert isinstance(close, Connection.Close) and close.reply_code == 403
    client = ClientConnection(username="u", password="p")
    client.initiate()
    with pytest.raises(ProtocolError, match="refused"):
        events(client, b"AMQP\x00\x00\x09\x00")


def test_handshake_close_from_server() -> None:
    client = ClientConnection(username="u", password="bad")
    client.initiate()
    close = Connection.Close(reply_code=403, reply_text="ACCESS_REFUSED - Login was refused",
                             class_id=0, method_id=0)
    (event,) = events(client, server.encode_method(0, close))
    assert event == ConnectionClosed(403, "ACCESS_REFUSED - Login was refused", True)
    assert [type(m) for m in sent(client)] == [Connection.CloseOk]


def test_confirms_with_multiple_ack_and_nack() -> None:
    client = opened()
    client.open_channel(1)
    (event,) = events(client, server.encode_method(1, Channel.OpenOk()))
    assert event == ChannelOpened(1)
    client.confirm_select(1)
    with pytest.raises(ClientError):
        client.publish(1, "", "q", b"too early")
    assert isinstance(events(client, server.encode_method(1, commands.Confirm.SelectOk()))[0],
                      Reply)
    assert [type(m) for m in sent(client)] == [Channel.Open, commands.Confirm.Select]
    tags = [client.publish(1, "x", "k", b"m%d" % i) for i in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    published = sent(client)
    assert all(isinstance(p, Content) for p in published)
    assert [p.body for p in published] == [b"m%d" % i for i in range(5)]
    ack3 = server.encode_method(1, Basic.Ack(delivery_tag=3, multiple=True))
    nack5 = server.encode_method(1, Basic.Nack(delivery_tag=5, multiple=False))
    assert events(client, ack3 + nack5) == [
        Confirmed(1, (1, 2, 3), True), Confirmed(1, (5,), False)]
    assert client.unconfirmed(1) == [4]


def test_deliveries_returns_and_server_notifications() -> None:
    client = opened(frame_max=4096)
    client.open_channel(1)
    events(client, server.encode_method(1, Channel.OpenOk()))
    sent(client)
    body = bytes(range(256)) * 40  # several body frames at frame_max 4096
    server_small = AMQPCodec(frame_max=4096)
    deliver = server_small.encode_delivery(
        1, "ctag", 7, True, "amq.topic", "a.b",
        b"\x00\x00", body)
    properties = Basic.Properties(headers={"n": 1, "s": "x"}, message_id="m1")
    returned = server_small.encode_content(1, build(
        Basic.Return, reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="q é"),
        properties, b"back")
    # fed one byte at a time: the codec assembles frames across reads
    client.receive_data(b"")
    got: list[object] = []
    for i in range(len(deliver + returned)):
        client.receive_data((deliver + returned)[i : i + 1])
        while (event := client.next_event()) is not NEED_DATA:
            got.append(event)
    assert len(got) == 2
    delivery, back = got
    assert isinstance(delivery, Delivery)
    assert (delivery.consumer_tag, delivery.delivery_tag, delivery.redelivered) == (
        "ctag", 7, True)
    assert delivery.body == body and delivery.routing_key == "a.b"
    assert isinstance(back, Returned) and back.reply_code == 312 and back.body == b"back"
    assert back.routing_key == "q é" and back.properties.headers == {"n": 1, "s": "x"}
    cancel = server.encode_method(1, Basic.Cancel(consumer_tag="ctag", nowait=True))
    blocked = server.encode_method(0, Connection.Blocked(reason="low on memory"))
    unblocked = server.encode_method(0, Connection.Unblocked())
    assert events(client, cancel + blocked + unblocked) == [
        ConsumerCancelled(1, "ctag"), Blocked("low on memory"), Unblocked()]
    assert client.data_to_send() == b""  # nowait cancel: no cancel-ok


def test_acks_and_rpcs_encode_as_pamqp_does() -> None:
    client = opened()
    client.open_channel(2)
    events(client, server.encode_method(2, Channel.OpenOk()))
    sent(client)
    client.queue_declare(2, "q", durable=True, arguments={"x-queue-type": "quorum"})
    client.queue_bind(2, "q", "amq.topic", "a.#", {"x-match": "all"})
    client.basic_qos(2, 10)
    client.basic_consume(2, "q", "tag")
    client.ack(2, 5, multiple=True)
    client.nack(2, 6, requeue=False)
    client.reject(2, 7, requeue=True)
    methods = sent(client)
    assert [type(m) for m in methods] == [
        commands.Queue.Declare, commands.Queue.Bind, Basic.Qos, Basic.Consume, Basic.Ack,
        Basic.Nack, Basic.Reject]
    declare = methods[0]
    assert declare.arguments == {"x-queue-type": "quorum"} and declare.durable
    reference = commands.Queue.Declare(queue="q", durable=True,
                                       arguments={"x-queue-type": "quorum"})
    assert marshal(declare) == reference.marshal()
    # names pamqp's validate refuses, which RabbitMQ accepts, still encode
    ClientCodec().encode_method(1, build(commands.Queue.Declare, queue="mqtt-subscription é"))


def test_closes_both_ways() -> None:
    client = opened()
    client.open_channel(1)
    client.open_channel(2)
    events(client, server.encode_method(1, Channel.OpenOk()) +
           server.encode_method(2, Channel.OpenOk()))
    sent(client)
    close = Channel.Close(reply_code=404, reply_text="NOT_FOUND - no queue 'q'",
                          class_id=50, method_id=10)
    (event,) = events(client, server.encode_method(1, close))
    assert event == ChannelClosed(1, 404, "NOT_FOUND - no queue 'q'", True, 50, 10)
    assert [type(m) for m in sent(client)] == [Channel.CloseOk]
    client.close_channel(2)
    (ours,) = sent(client)
    assert isinstance(ours, Channel.Close) and ours.reply_code == 200
    # frames for a closing channel are dropped, then the close-ok frees it
    late = server.encode_delivery(2, "t", 1, False, "", "q", b"\x00\x00", b"late")
    assert events(client, late + server.encode_method(2, Channel.CloseOk())) == [
        ChannelClosed(2, 200, "", False)]
    client.open_channel(2)  # the number is free again
    events(client, server.encode_method(2, Channel.OpenOk()))
    forced = Connection.Close(reply_code=320, reply_text="CONNECTION_FORCED - shutdown",
                              class_id=0, method_id=0)
    (closed,) = events(client, server.encode_method(0, forced))
    assert closed == ConnectionClosed(320, "CONNECTION_FORCED - shutdown", True)
    assert [type(m) for m in sent(client)] == [Channel.Open, Connection.CloseOk]
    with pytest.raises(ClientError):
        client.publish(2, "", "q", b"x")


def test_server_violations_close_with_the_reply_code() -> None:
    client = opened()
    client.open_channel(1)
    events(client, server.encode_method(1, Channel.OpenOk()))
    sent(client)
    header_first = b"\x02\x00\x01\x00\x00\x00\x0e" + b"\x00\x3c" + bytes(12) + b"\xce"
    with pytest.raises(ProtocolError) as error:
        events(client, header_first)
    assert error.value.code == 505
    (close,) = sent(client)
    assert isinstance(close, Connection.Close) and close.reply_code == 505
    client = opened()
    with pytest.raises(ProtocolError) as error:
        events(client, b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x0a\xcd")  # bad frame end
    assert error.value.code == 501
