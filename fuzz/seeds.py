"""Valid inputs for every fuzz target, in the layout its `check_*` entry reads (a mode byte,
then the input). `make_corpus.py` writes them as atheris seed corpora; the hypothesis tests
mutate them.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from oracles import AMQP_HANDSHAKE, amqp_marshal, mqtt_connect, stomp_connect
from pamqp import body, commands, header, heartbeat
from pamqp import frame as pamqp_frame

from protocols.mqtt.codec import encode_packet
from protocols.mqtt.frames import (
    MQTT_5,
    MQTT_311,
    Auth,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from protocols.stomp.codec import encode_frame
from protocols.stomp.frames import Command

C = commands

# -- AMQP: methods after the handshake (mode 1) ------------------------------------------------

AMQP_METHODS: list[tuple[int, Any]] = [
    (1, C.Exchange.Declare(exchange="x", exchange_type="topic", durable=True,
                           arguments={"alternate-exchange": "ae"})),
    (1, C.Queue.Declare(queue="q", durable=True, arguments={
        "x-max-length": 10, "x-message-ttl": 1000, "x-dead-letter-exchange": "x",
        "x-max-priority": 5, "x-overflow": "reject-publish", "x-expires": 5000})),
    (1, C.Queue.Declare(queue="", exclusive=True)),
    (1, C.Queue.Bind(queue="q", exchange="x", routing_key="a.#")),
    (1, C.Exchange.Bind(destination="x", source="amq.topic", routing_key="#")),
    (1, C.Basic.Qos(prefetch_count=3)),
    (1, C.Basic.Consume(queue="q", consumer_tag="c", arguments={"x-priority": 2})),
    (1, C.Confirm.Select()),
    (1, C.Tx.Select()),
    (1, C.Tx.Commit()),
    (1, C.Basic.Get(queue="q")),
    (1, C.Basic.Ack(delivery_tag=1, multiple=True)),
    (1, C.Basic.Nack(delivery_tag=1, requeue=True)),
    (1, C.Basic.Reject(delivery_tag=1, requeue=False)),
    (1, C.Basic.Recover(requeue=True)),
    (1, C.Basic.Cancel(consumer_tag="c")),
    (1, C.Queue.Purge(queue="q")),
    (1, C.Queue.Unbind(queue="q", exchange="x", routing_key="a.#")),
    (1, C.Queue.Delete(queue="q")),
    (1, C.Exchange.Delete(exchange="x")),
    (1, C.Channel.Flow(active=False)),
    (1, C.Channel.Close(200, "bye", 0, 0)),
    (2, C.Channel.Open()),
    (0, C.Connection.Close(200, "bye", 0, 0)),
]


def amqp_publish(channel: int, routing_key: str, payload: bytes,
                 props: C.Basic.Properties | None = None) -> bytes:
    props = props or C.Basic.Properties(content_type="text/plain", delivery_mode=2,
                                        headers={"k": "v", "n": 1, "a": [1, "x"]},
                                        priority=3, expiration="1000", message_id="m")
    return (pamqp_frame.marshal(C.Basic.Publish(exchange="", routing_key=routing_key),
                                channel)
            + pamqp_frame.marshal(header.ContentHeader(0, len(payload), props), channel)
            + pamqp_frame.marshal(body.ContentBody(payload), channel))


def amqp_seeds() -> list[bytes]:
    seeds = [b"\x00" + AMQP_HANDSHAKE, b"\x00" + AMQP_HANDSHAKE[:20]]
    for channel, method in AMQP_METHODS:
        seeds.append(b"\x01" + amqp_marshal(channel, method))
    seeds.append(b"\x01" + b"".join(amqp_marshal(c, m) for c, m in AMQP_METHODS[:12]))
    seeds.append(b"\x01" + amqp_marshal(1, AMQP_METHODS[1][1]) + amqp_publish(1, "q", b"hi"))
    seeds.append(b"\x05" + amqp_publish(1, "q", b"x" * 3000))
    seeds.append(b"\x01" + pamqp_frame.marshal(heartbeat.Heartbeat(), 0))
    # structured mode: (kind, channel, length, payload) records
    seeds.append(b"\x02" + bytes([0x80 | 5, 1, 4]) + b"\x00\x00\x00\x00")
    seeds.append(b"\x02" + bytes([0x82, 1, 2, 0, 0, 3, 1, 1]) + b"z")
    return seeds


# -- MQTT: packets after CONNECT (modes 1-4), or a CONNECT of its own (mode 0) -----------------

def mqtt_packets(version: int) -> list[Any]:
    v5 = version == MQTT_5
    props = Properties(content_type="text/plain", response_topic="r/t",
                       correlation_data=b"c", user_properties=(("a", "b"),),
                       message_expiry_interval=30, topic_alias=1) if v5 else Properties()
    out: list[Any] = [
        Subscribe(1, (Subscription("a/+", 1), Subscription("#", 2),
                      Subscription("$share/g/s/#", 1))),
        Publish("a/b", b"payload", 0, True, False, None, props),
        Publish("a/b", b"one", 1, False, False, 2, props),
        Publish("a/b", b"two", 2, False, False, 3, props),
        PubRel(3), PubAck(1), PubRec(4), PubComp(5),
        Publish("a/b", b"", 0, True, False, None),
        Unsubscribe(6, ("a/+", "#")),
        PingReq(),
        Disconnect(),
    ]
    if v5:
        out += [Publish("", b"alias", 0, False, False, None, Properties(topic_alias=1)),
                Auth(0x18, Properties(authentication_method="x")),
                Disconnect(0x04, Properties(session_expiry_interval=10))]
    return out


def mqtt_seeds() -> list[bytes]:
    seeds = [b"\x00" + mqtt_connect(MQTT_311), b"\x00" + mqtt_connect(MQTT_5, clean=False)]
    for mode, version in ((1, MQTT_311), (2, MQTT_311), (3, MQTT_5), (4, MQTT_5)):
        pkts = mqtt_packets(version)
        seeds += [bytes([mode]) + encode_packet(p, version) for p in pkts]
        seeds.append(bytes([mode]) + b"".join(encode_packet(p, version) for p in pkts))
    return seeds


# -- STOMP: frames after CONNECT (modes 1-3), or a CONNECT of its own (mode 0) -----------------

def stomp_frames() -> list[tuple[Command, list[tuple[str, str]], bytes]]:
    return [
        (Command.SUBSCRIBE, [("destination", "/queue/q"), ("id", "1"), ("ack", "client")], b""),
        (Command.SUBSCRIBE, [("destination", "/topic/a.b"), ("id", "2"),
                             ("ack", "client-individual")], b""),
        (Command.SEND, [("destination", "/queue/q"), ("persistent", "true"),
                        ("receipt", "r1"), ("content-type", "text/plain")], b"hello"),
        (Command.SEND, [("destination", "/exchange/amq.topic/a.b"), ("x-h", "v")], b"\x00\x01"),
        (Command.SEND, [("destination", "/temp-queue/t"), ("reply-to", "/temp-queue/r")], b""),
        (Command.ACK, [("id", "1"), ("message-id", "T_1@@session@@1")], b""),
        (Command.NACK, [("id", "1"), ("requeue", "false")], b""),
        (Command.BEGIN, [("transaction", "t")], b""),
        (Command.SEND, [("destination", "/queue/q"), ("transaction", "t")], b"tx"),
        (Command.COMMIT, [("transaction", "t")], b""),
        (Command.ABORT, [("transaction", "t")], b""),
        (Command.UNSUBSCRIBE, [("id", "1")], b""),
        (Command.DISCONNECT, [("receipt", "bye")], b""),
    ]


def stomp_seeds() -> list[bytes]:
    seeds = [b"\x00" + stomp_connect("1.2"), b"\x00STOMP\naccept-version:1.1\n\n\x00"]
    for mode in (1, 2, 3):
        frames = [encode_frame(c, h, b, None) for c, h, b in stomp_frames()]
        seeds += [bytes([mode]) + f for f in frames]
        seeds.append(bytes([mode]) + b"\n".join(frames))
    seeds.append(b"\x03SEND\ndestination:/queue/a\\cb\nk\\r:v\\n\n\nbody\x00\r\n")
    return seeds


# -- WAMP: messages after HELLO (bit 0 of the mode), JSON or MessagePack (bit 1) ---------

WAMP_MESSAGES: list[list[Any]] = [
    [32, 1, {}, "com.a"],
    [32, 2, {"match": "wildcard"}, "com..b"],
    [16, 3, {"acknowledge": True, "exclude_me": False}, "com.a", [1, "x"], {"k": {"n": None}}],
    [34, 1, 1],
    [64, 4, {"invoke": "roundrobin"}, "com.p"],
    [48, 5, {"timeout": 100, "receive_progress": True}, "com.p", [1]],
    [49, 5, {"mode": "kill"}],
    [70, 1, {"progress": True}, ["r"]],
    [8, 68, 1, {}, "com.error", ["e"]],
    [66, 6, 1],
    [6, {}, "wamp.close.normal"],
    [3, {}, "wamp.error.abort"],
]


def wamp_seeds(binary: bool) -> list[bytes]:
    def wire(items: Any) -> bytes:
        if binary:
            return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]
        return json.dumps(items).encode()

    mode = 2 if binary else 0  # check_wamp_any: bit 1 is MessagePack, bit 0 HELLO first
    seeds = [bytes([mode]) + wire([1, "/", {"roles": {"caller": {}}}])]
    seeds += [bytes([mode | 1]) + wire(m) for m in WAMP_MESSAGES]
    seeds.append(bytes([mode | 1]) + b"\xff\xfe".join(wire(m) for m in WAMP_MESSAGES))
    return seeds
