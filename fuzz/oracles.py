"""Fuzz oracles: arbitrary input into the real sans-IO sessions, and what may come out.

One function per codec, shared by the hypothesis tests (``tests/fuzz/``) and the atheris
targets (``fuzz/fuzz_*.py``), so both hold the codecs to the same property:

- feeding any bytes (or, for WAMP, any message) never raises out of the session;
- the only exception the codec raises is its documented protocol error (AMQP
  ``ProtocolError``, MQTT ``ProtocolError``, STOMP ``StompProtocolError``, WAMP
  ``ProtocolViolation``), and when it does the session answers in that protocol's way:
  AMQP ``connection.close`` with the error's reply code and method ids (or the protocol
  header back for a bad greeting), MQTT 5 ``DISCONNECT`` with the reason code (3.1.1: the
  connection just closes; a bad CONNECT level gets CONNACK 0x01), STOMP ``ERROR`` with the
  error's ``message`` header, WAMP ``ABORT wamp.error.protocol_violation``;
- everything the session wrote is well-formed for a client of that protocol;
- afterwards the session's timer and the loss of its transport raise nothing, and the
  broker is left with no consumer and no exclusive queue of the gone connection.

The codec's ``next_event`` (WAMP: ``decode``) is wrapped per session to record the first
protocol error it raises and the session state at that moment; nothing else is replaced.
Input sizes are bounded by the callers (hypothesis strategies, atheris ``-max_len``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import msgpack
from pamqp import commands
from pamqp import frame as pamqp_frame

from gateway.auth import service as auth_service
from gateway.auth.passwords import hash_password_sha256
from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.base import MemoryStore
from protocols.amqp.frames import PROTOCOL_HEADER, BadProtocolHeader
from protocols.amqp.frames import ProtocolError as AMQPError
from protocols.amqp.session import AMQPSession
from protocols.amqp.session import State as AMQPState
from protocols.mqtt.codec import MQTTCodec, encode_packet
from protocols.mqtt.frames import MQTT_5, MQTT_311, NEED_DATA, Connect, Disconnect, Properties
from protocols.mqtt.frames import ProtocolError as MQTTError
from protocols.mqtt.machine import ConnState as MQTTState
from protocols.mqtt.persist import take_over
from protocols.mqtt.registry import MQTTRegistry as MQTTBrokerState
from protocols.mqtt.session import MQTTSession
from protocols.stomp.codec import StompCodec, encode_frame
from protocols.stomp.frames import NEED_DATA as STOMP_NEED_DATA
from protocols.stomp.frames import Command, Frame, StompProtocolError
from protocols.stomp.session import State as StompState
from protocols.stomp.session import StompSession
from protocols.wamp.codec import Serializer, from_list
from protocols.wamp.frames import Abort, ProtocolViolation
from protocols.wamp.router import WampRouter
from protocols.wamp.session import State as WampState
from protocols.wamp.session import WampSession

CONFIG = load_config()
PEER = ("127.0.0.1", 5555)


def fuzz_auth() -> AuthService:
    """The real auth service, one per process (its only state an input could change is
    the failed-login count, and loopback is exempt from it)."""
    return AuthService(CONFIG.auth)


# An unknown user's password is checked against a decoy scrypt hash (so that it costs as
# much as a wrong password), ~0.1 s a login; fuzzed logins as unknown users are common, so
# the decoy here is a SHA-256 one. Still refused: no user, no match.
auth_service.DECOY_HASH = hash_password_sha256("")
AUTH = fuzz_auth()
WAMP_AUTH = fuzz_auth()  # attached to each WAMP world's broker in turn


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Wraps one codec method: records the first exception it raises and the session's
    state at that moment, then re-raises it unchanged."""

    def __init__(self, method: Callable[..., Any], state: Callable[[], Any]) -> None:
        self.method = method
        self.state = state
        self.error: BaseException | None = None
        self.state_at_error: Any = None

    def __call__(self, *args: Any) -> Any:
        try:
            return self.method(*args)
        except BaseException as exc:
            if self.error is None:
                self.error = exc
                self.state_at_error = self.state()
            raise


class _ErrorLog(logging.Handler):
    """Keeps the error records (a `log.exception` of a connection that failed) of the
    project's loggers: the I/O layer logs and swallows exceptions to keep the broker up,
    so the oracle has to look there too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ERROR_LOG = _ErrorLog()
logging.getLogger("gateway").addHandler(ERROR_LOG)


def forget_logged_errors() -> None:
    """Called as a run starts: what was logged before is not this input's doing."""
    ERROR_LOG.records.clear()


def check_no_errors_logged() -> None:
    records, ERROR_LOG.records = ERROR_LOG.records, []
    assert not records, "logged: " + "; ".join(
        f"{r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage()
        for r in records)


def check_broker_released(broker: Broker) -> None:
    """After the connection is gone: no consumer left, no exclusive queue left."""
    for vh in broker.vhosts.values():
        for q in vh.queues.values():
            assert not q.consumers, f"consumer left on {q.name!r}"
            assert q.exclusive_owner is None, f"exclusive queue {q.name!r} left"


def _chunks(data: bytes, size: int | None) -> Iterable[bytes]:
    if not size:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i:i + size]


def drive(session: Any, stream: bytes, chunk: int | None) -> tuple[Recorder, bytes]:
    """Feed a stream session (in pieces of `chunk` bytes), recording its codec's first
    error; returns the recorder and everything the session wrote."""
    forget_logged_errors()
    recorder = Recorder(session.codec.next_event, lambda: session.state)
    session.codec.next_event = recorder
    out = bytearray()
    for piece in _chunks(stream, chunk):
        session.receive_data(piece)
        out += session.data_to_send()
    return recorder, bytes(out)


def finish(session: Any, broker: Broker, clock: Clock, parse: Callable[[bytes], Any]) -> None:
    """Much later, then the transport lost: nothing raises, what is written still parses,
    nothing of the connection stays in the broker, nothing was logged as an error."""
    clock.now += 10_000
    session.timer(clock.now)
    parse(session.data_to_send())
    session.connection_lost()
    check_broker_released(broker)
    check_no_errors_logged()


# -- AMQP 0-9-1 -------------------------------------------------------------------------------

AMQP_FRAME_MAX = 4096
AMQP_MAX_MESSAGE = 2048


def amqp_marshal(channel: int, *methods: Any) -> bytes:
    return b"".join(pamqp_frame.marshal(m, channel) for m in methods)


AMQP_HANDSHAKE = PROTOCOL_HEADER + amqp_marshal(
    0,
    commands.Connection.StartOk(client_properties={"capabilities": {
        "consumer_cancel_notify": True, "connection.blocked": True}},
        mechanism="PLAIN", response="\0guest\0guest"),
    commands.Connection.TuneOk(16, AMQP_FRAME_MAX, 0),
    commands.Connection.Open(virtual_host="/"),
) + amqp_marshal(1, commands.Channel.Open())
# every method a client may send, by its wire index (class << 16 | method)
AMQP_METHOD_INDEXES = sorted(commands.INDEX_MAPPING)


def amqp_frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """One frame with a valid header and frame-end around any payload."""
    return (bytes([frame_type]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big")
            + payload + b"\xce")


def amqp_structured(data: bytes) -> bytes:
    """Frames with valid headers built from `data`: records of (kind, channel, length,
    payload); a method record's payload starts with a real method index."""
    out = bytearray()
    i = 0
    while i + 3 <= len(data):
        kind, channel, length = data[i], data[i + 1] % 3, data[i + 2]
        payload = data[i + 3:i + 3 + length]
        i += 3 + length
        frame_type = (1, 1, 2, 3, 8)[kind % 5]
        if frame_type == 1 and kind & 0x80:
            index = AMQP_METHOD_INDEXES[kind % len(AMQP_METHOD_INDEXES)]
            payload = index.to_bytes(4, "big") + payload
        elif frame_type == 2 and kind & 0x80:  # a plausible content header prefix
            payload = b"\x00\x3c\x00\x00" + bytes(8) + payload
        out += amqp_frame(frame_type, channel, payload)
    return bytes(out)


def amqp_output(data: bytes) -> list[tuple[int, Any]]:
    """What the session wrote, as frames; anything unparsable fails the oracle."""
    frames: list[tuple[int, Any]] = []
    if data.startswith(PROTOCOL_HEADER):
        frames.append((0, PROTOCOL_HEADER))
        data = data[len(PROTOCOL_HEADER):]
    while data:
        consumed, channel, value = pamqp_frame.unmarshal(data)
        assert consumed > 0
        frames.append((channel, value))
        data = data[consumed:]
    return frames


def run_amqp(stream: bytes, chunk: int | None = None) -> AMQPSession:
    """Feed `stream` to a fresh AMQP session (in pieces of `chunk` bytes) and check it."""
    clock = Clock()
    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = AMQPSession(broker, AUTH, peer=PEER, loopback=True,
                          clock=clock, frame_max=AMQP_FRAME_MAX,
                          max_message_size=AMQP_MAX_MESSAGE, high_water=1 << 16)
    recorder, out = drive(session, stream, chunk)
    frames = amqp_output(out)
    error = recorder.error
    if error is not None:
        assert isinstance(error, AMQPError), f"codec raised {error!r}"
        assert 501 <= error.code <= 505, error
        if isinstance(error, BadProtocolHeader):
            assert frames == [(0, PROTOCOL_HEADER)] and session.closed
        else:
            assert session.closed
            if recorder.state_at_error is not AMQPState.CLOSING:
                channel, close = frames[-1]
                assert channel == 0 and isinstance(close, commands.Connection.Close), frames
                assert (close.reply_code, close.class_id, close.method_id) == (
                    error.code, error.class_id, error.method_id)
    finish(session, broker, clock, amqp_output)
    return session


def check_amqp(data: bytes) -> None:
    """Atheris entry: the first byte picks raw input, input after the handshake, or
    structured frames after it; bit 2 feeds it in 7-byte pieces."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    kind = mode & 3
    if kind == 0:
        stream = rest
    elif kind == 1:
        stream = AMQP_HANDSHAKE + rest
    else:
        stream = AMQP_HANDSHAKE + amqp_structured(rest)
    run_amqp(stream, 7 if mode & 4 else None)


# -- MQTT 3.1.1 and 5.0 -----------------------------------------------------------------------

MQTT_MAX_PACKET = 4096
MQTT_CONFIG = replace(CONFIG.mqtt, max_packet_size=MQTT_MAX_PACKET)


def mqtt_connect(version: int, clean: bool = True) -> bytes:
    props = Properties(topic_alias_maximum=4, receive_maximum=8) if version == MQTT_5 \
        else Properties()
    return encode_packet(Connect("fuzz", version, clean, 60, None, "guest", b"guest", props),
                         version)


def mqtt_output(data: bytes, version: int | None) -> list[Any]:
    reader = MQTTCodec(version=version or MQTT_311, server=False)
    reader.receive_data(data)
    packets = []
    while (packet := reader.next_event()) is not NEED_DATA:
        packets.append(packet)
    assert reader.buffered == 0, "a partial packet was written"
    return packets


def mqtt_state_of(broker: Broker) -> MQTTBrokerState:
    """The MQTT state of a fresh broker, made as the server makes it (one per broker)."""
    state = MQTTBrokerState(broker.durable, MQTT_CONFIG.retained_max_messages,
                            MQTT_CONFIG.retained_max_bytes)
    take_over(state, broker)
    return state


def run_mqtt(stream: bytes, chunk: int | None = None) -> MQTTSession:
    clock = Clock()
    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = MQTTSession(broker, AUTH, MQTT_CONFIG, registry=mqtt_state_of(broker), peer=PEER,
                          loopback=True, loopback_users=CONFIG.auth.loopback_users,
                          clock=clock, high_water=1 << 16)
    recorder, out = drive(session, stream, chunk)
    packets = mqtt_output(out, session.version)
    error = recorder.error
    if error is not None:
        assert isinstance(error, MQTTError), f"codec raised {error!r}"
        assert session.state in (MQTTState.CLOSED, MQTTState.CLOSING)
        if recorder.state_at_error is MQTTState.CONNECT_WAIT:
            expected = b"\x20\x02\x00\x01" if error.reason == 0x84 else b""
            assert out == expected, (error, out)
        elif recorder.state_at_error is MQTTState.CONNECTED and session.version == MQTT_5:
            last = packets[-1]
            assert isinstance(last, Disconnect) and last.reason_code == error.reason, packets
    finish(session, broker, clock, lambda data: mqtt_output(data, session.version))
    return session


def check_mqtt(data: bytes) -> None:
    """Atheris entry: the first byte picks raw input, or input after a 3.1.1 or a 5.0
    CONNECT (clean or persistent); bit 3 feeds it in 5-byte pieces."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    kind = mode % 5
    if kind == 0:
        stream = rest
    else:
        version = MQTT_311 if kind in (1, 2) else MQTT_5
        stream = mqtt_connect(version, clean=kind in (1, 3)) + rest
    run_mqtt(stream, 5 if mode & 8 else None)


# -- STOMP 1.0 / 1.1 / 1.2 --------------------------------------------------------------------

STOMP_LIMITS = {"max_frame_size": 4096, "max_headers": 16, "max_header_length": 256}


def stomp_connect(version: str) -> bytes:
    return encode_frame(Command.CONNECT, [("accept-version", version), ("host", "/"),
                                          ("login", "guest"), ("passcode", "guest"),
                                          ("heart-beat", "0,0")], b"", None)


def stomp_output(data: bytes) -> list[Frame]:
    reader = StompCodec(accept=frozenset(Command), max_frame_size=1 << 20)
    reader.receive_data(data)
    frames = []
    while (event := reader.next_event()) is not STOMP_NEED_DATA:
        if isinstance(event, Frame):
            frames.append(event)
    assert reader.buffered == 0, "a partial frame was written"
    return frames


def run_stomp(stream: bytes, chunk: int | None = None) -> StompSession:
    clock = Clock()
    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = StompSession(broker, AUTH, peer=PEER, loopback=True,
                           clock=clock, high_water=1 << 16, **STOMP_LIMITS)
    recorder, out = drive(session, stream, chunk)
    frames = stomp_output(out)
    error = recorder.error
    if error is not None:
        assert isinstance(error, StompProtocolError), f"codec raised {error!r}"
        assert session.closed
        if recorder.state_at_error in (StompState.CONNECTING, StompState.CONNECTED):
            last = frames[-1]
            assert last.command is Command.ERROR, frames
            assert last.headers.get("message") == error.message, (last, error)
    finish(session, broker, clock, stomp_output)
    return session


def check_stomp(data: bytes) -> None:
    """Atheris entry: the first byte picks raw input or input after a CONNECT of STOMP
    1.0, 1.1 or 1.2; bit 2 feeds it in 3-byte pieces."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    kind = mode & 3
    stream = rest if kind == 0 else stomp_connect(("1.0", "1.1", "1.2")[kind - 1]) + rest
    run_stomp(stream, 3 if mode & 4 else None)


# -- WAMP (JSON and MessagePack) --------------------------------------------------------------

WAMP_HELLO = [1, "/", {"roles": {"publisher": {}, "subscriber": {}, "caller": {},
                                 "callee": {}}}]


def wamp_wire(serializer: Serializer, items: Any) -> bytes | str:
    if serializer is Serializer.JSON:
        return json.dumps(items)
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


def wamp_output(serializer: Serializer, messages: list[bytes | str]) -> list[Any]:
    """Each message the router sent must decode, with the serializer of its transport."""
    out = []
    for m in messages:
        if serializer is Serializer.JSON:
            assert isinstance(m, str)
            out.append(from_list(json.loads(m)))
        else:
            assert isinstance(m, bytes)
            out.append(from_list(msgpack.unpackb(m, raw=False, strict_map_key=False)))
    return out


class WampWorld:
    """One broker and router; peers join it, as the WebSocket layer makes them."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.broker = Broker(MemoryStore())
        self.auth = WAMP_AUTH
        self.auth.attach(None, self.broker)
        self.router = WampRouter()

    def session(self, serializer: Serializer) -> WampSession:
        # peers join with an anonymous HELLO, so this broker allows anonymous WAMP
        return WampSession(self.broker, self.auth, self.router, serializer, peer=PEER,
                           loopback=True, clock=self.clock, max_message_size=4096,
                           high_water=1 << 16, allow_anonymous=True)


def run_wamp(serializer: Serializer, messages: list[bytes | str], *, join: bool) -> None:
    """Messages into one session of a fresh world (after HELLO when `join`), beside a
    second, joined session that subscribes and registers, so routing has someone to
    reach; then the checks above."""
    forget_logged_errors()
    world = WampWorld()
    other = world.session(serializer)
    for items in (WAMP_HELLO, [32, 1, {"match": "prefix"}, "com"], [64, 2, {}, "com.p"]):
        other.receive_message(wamp_wire(serializer, items))
    session = world.session(serializer)
    recorder = Recorder(session.codec.decode, lambda: session.state)
    session.codec.decode = recorder  # type: ignore[method-assign]
    if join:
        session.receive_message(wamp_wire(serializer, WAMP_HELLO))
    for m in messages:
        recorder.error = None
        session.receive_message(m)
        sent = wamp_output(serializer, session.messages_to_send())
        error = recorder.error
        if error is not None:
            assert isinstance(error, ProtocolViolation), f"codec raised {error!r}"
            assert session.closed
            if recorder.state_at_error is not WampState.CLOSED:
                last = sent[-1]
                assert isinstance(last, Abort), sent
                assert last.reason == "wamp.error.protocol_violation"
        wamp_output(serializer, other.messages_to_send())
    world.clock.now += 1000
    for s in (session, other):
        s.timer(world.clock.now)
        wamp_output(serializer, s.messages_to_send())
        s.connection_lost()
    check_broker_released(world.broker)
    check_no_errors_logged()
    assert not world.router.realm("/").registrations


def wamp_split(serializer: Serializer, data: bytes) -> list[bytes | str]:
    """Raw input as transport messages: split at 0xFF 0xFE (JSON: each part as text, as a
    WebSocket text message would be)."""
    parts = data.split(b"\xff\xfe")[:16]
    if serializer is Serializer.MSGPACK:
        return list(parts)
    return [p.decode("utf-8", "replace") for p in parts]


def check_wamp(data: bytes, serializer: Serializer) -> None:
    """Bit 0 of the first byte says whether HELLO comes first; the rest is split
    into messages."""
    if not data:
        return
    run_wamp(serializer, wamp_split(serializer, data[1:]), join=bool(data[0] & 1))


def check_wamp_any(data: bytes) -> None:
    """Atheris entry for both serializers: bit 1 of the first byte picks MessagePack."""
    if data:
        check_wamp(data, Serializer.MSGPACK if data[0] & 2 else Serializer.JSON)
