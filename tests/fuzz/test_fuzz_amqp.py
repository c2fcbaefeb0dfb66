"""AMQP 0-9-1 fuzzed through the real session (codec, channels, core): random bytes from the
first byte on and after a full handshake, frames with valid headers around random payloads,
method frames with real and random method ids, and byte edits of a valid conversation.
Codec-only fuzzing is in tests/amqp/test_codec.py; the oracle is fuzz/oracles.py."""

from __future__ import annotations

from fuzz_profile import EDIT, fuzz, mutate
from hypothesis import given
from hypothesis import strategies as st
from oracles import (
    AMQP_HANDSHAKE,
    AMQP_METHOD_INDEXES,
    amqp_frame,
    amqp_marshal,
    amqp_output,
    check_amqp,
    run_amqp,
)
from pamqp import commands
from seeds import AMQP_METHODS, amqp_publish

from protocols.amqp.session import State

CONVERSATION = b"".join(amqp_marshal(c, m) for c, m in AMQP_METHODS[:-3]) + amqp_publish(
    1, "q", b"body" * 10)
FRAME_TYPES = st.sampled_from([1, 1, 2, 3, 8]) | st.integers(0, 255)


@fuzz(300)
@given(st.binary(max_size=600), st.sampled_from([None, 1, 7]))
def test_random_bytes_from_the_first_byte(data: bytes, chunk: int | None) -> None:
    run_amqp(data, chunk)


@fuzz(300)
@given(st.binary(max_size=600), st.sampled_from([None, 1, 7]))
def test_random_bytes_after_the_handshake(data: bytes, chunk: int | None) -> None:
    run_amqp(AMQP_HANDSHAKE + data, chunk)


@fuzz(300)
@given(st.lists(st.tuples(FRAME_TYPES, st.integers(0, 3), st.binary(max_size=80)),
                min_size=1, max_size=8))
def test_valid_frame_headers_with_random_payloads(frames: list[tuple[int, int, bytes]]
                                                  ) -> None:
    run_amqp(AMQP_HANDSHAKE + b"".join(amqp_frame(t, c, p) for t, c, p in frames))


@fuzz(300)
@given(st.lists(st.tuples(st.sampled_from(AMQP_METHOD_INDEXES) | st.integers(0, 2**32 - 1),
                          st.integers(0, 2), st.binary(max_size=60)), min_size=1, max_size=6))
def test_method_frames_with_random_method_ids_and_arguments(
        methods: list[tuple[int, int, bytes]]) -> None:
    run_amqp(AMQP_HANDSHAKE + b"".join(
        amqp_frame(1, channel, index.to_bytes(4, "big") + args)
        for index, channel, args in methods))


@fuzz(300)
@given(st.lists(EDIT, min_size=1, max_size=5), st.sampled_from([None, 5]))
def test_edits_of_a_valid_conversation(edits: list[tuple[str, int, int]],
                                       chunk: int | None) -> None:
    run_amqp(AMQP_HANDSHAKE + mutate(CONVERSATION, edits), chunk)


@fuzz(200)
@given(st.binary(min_size=1, max_size=400))
def test_the_atheris_entry_reads_any_input(data: bytes) -> None:
    check_amqp(data)


# -- crashes found by fuzz/fuzz_amqp.py, as regression tests -----------------------------------

# queue.declare of a queue named "'" after the seeds' exchange.declare: pamqp's validation of
# queue.declare-ok (names must match ^[a-zA-Z0-9-_.:@#,/+ ]*$) raised ValueError out of the
# session, so the connection died with no close; RabbitMQ accepts any UTF-8 name
CRASH_QUEUE_NAME = bytes.fromhex(
    "010100010000002d0028000a0000017805746f706963020000001a12616c7465726e6174652d65786368616e"
    "676553000000026165ce010001000000860032000a00000127020000007916782d646561642d6c6574746572"
    "2d65786368616e676553000000017809782d657870697265737313880c782d6d61782d6c656e677468620a0e"
    "782d6d61782d7072696f7269747962050d782d6d6573736167652d74746c7303e80a782d6f766572666c6f77"
    "530000000e72656a6563742d7075626c697368ce0100010000000c0032000a0000000400000000ce01000100"
    "0000130032001400000171017803612e23000000006c00012f792d160063ce28001e0000017809616d712e74"
    "6f01000100000004005a0014ce01000100000009003c00460000017100ce0100010000000d003c0050000000"
    "000000000101ce")


def test_crash_queue_named_outside_the_spec_pattern_gets_declare_ok() -> None:
    check_amqp(CRASH_QUEUE_NAME)
    session = run_amqp(AMQP_HANDSHAKE + CRASH_QUEUE_NAME[1:])
    assert session.closed  # run_amqp ends with the connection lost


def test_names_outside_pamqps_pattern_work_for_declare_get_and_return() -> None:
    """What the crash needs, spelled out: declare-ok, get-ok and basic.return for names
    pamqp would refuse ("é q", a 200-character exchange)."""
    from oracles import AUTH, CONFIG, PEER, Clock
    from pamqp import body as pbody
    from pamqp import frame, header

    from gateway.core.broker import Broker
    from gateway.store.base import MemoryStore
    from protocols.amqp.session import AMQPSession

    session = AMQPSession(Broker(MemoryStore(), CONFIG.auth.vhosts), AUTH,
                          peer=PEER, loopback=True, clock=Clock())
    session.receive_data(AMQP_HANDSHAKE)
    session.data_to_send()

    def method(cls: type, **fields: object) -> bytes:
        m = cls.__new__(cls)
        for name in cls.attributes():
            setattr(m, name, fields.get(name))
        m.validate = lambda: None  # pamqp's client-side name rules: not the broker's
        return frame.marshal(m, 1)

    ex = "x" * 200
    props = commands.Basic.Properties()
    session.receive_data(
        method(commands.Exchange.Declare, ticket=0, exchange=ex, exchange_type="fanout",
               passive=False, durable=False, auto_delete=False, internal=False, nowait=False,
               arguments={})
        + method(commands.Queue.Declare, ticket=0, queue="é q", passive=False, durable=False,
                 exclusive=False, auto_delete=False, nowait=False, arguments={})
        + method(commands.Queue.Bind, ticket=0, queue="é q", exchange=ex, routing_key="",
                 nowait=False, arguments={})
        + method(commands.Basic.Publish, ticket=0, exchange=ex, routing_key="",
                 mandatory=False, immediate=False)
        + frame.marshal(header.ContentHeader(0, 2, props), 1)
        + frame.marshal(pbody.ContentBody(b"hi"), 1)
        + method(commands.Basic.Get, ticket=0, queue="é q", no_ack=True)
        + method(commands.Queue.Unbind, ticket=0, queue="é q", exchange=ex, routing_key="",
                 arguments={})
        + method(commands.Basic.Publish, ticket=0, exchange=ex, routing_key="k",
                 mandatory=True, immediate=False)
        + frame.marshal(header.ContentHeader(0, 0, props), 1))
    out = [value for _, value in amqp_output(session.data_to_send())]
    assert session.state is State.OPEN
    declare_ok = next(m for m in out if isinstance(m, commands.Queue.DeclareOk))
    assert declare_ok.queue == "é q"
    get_ok = next(m for m in out if isinstance(m, commands.Basic.GetOk))
    assert get_ok.exchange == ex
    returned = next(m for m in out if isinstance(m, commands.Basic.Return))
    assert (returned.reply_code, returned.exchange) == (312, ex)
