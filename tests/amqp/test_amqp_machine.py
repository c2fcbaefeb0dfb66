"""The AMQP connection and channel state machines fed events alone: transitions, what is
discarded, and the reply code each refusal closes with."""

from __future__ import annotations

import pytest
from pamqp import commands as C

from gateway.core.errors import BrokerError, ReplyCode
from protocols.amqp import handlers
from protocols.amqp.frames import ProtocolHeaderReceived
from protocols.amqp.machine import (
    CHANNEL_FRAME,
    CHANNEL_METHODS,
    CONTENT,
    ChannelLocal,
    ChannelMachine,
    ChannelState,
    ConnectionMachine,
    Local,
    State,
)


def opened() -> ConnectionMachine:
    m = ConnectionMachine()
    for event in (ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN,
                  C.Connection.TuneOk, C.Connection.Open):
        assert m.process(event) is True
    return m


def test_the_handshake_in_order() -> None:
    m = ConnectionMachine()
    seen = [m.state]
    for event in (ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN,
                  C.Connection.TuneOk, C.Connection.Open):
        m.process(event)
        seen.append(m.state)
    assert seen == [State.HEADER, State.START_OK, State.START_OK, State.TUNE_OK,
                    State.OPEN_WAIT, State.OPEN]
    assert CHANNEL_FRAME in m.steady  # the per-frame check while open


@pytest.mark.parametrize(("events", "refused"), [
    ((ProtocolHeaderReceived,), C.Connection.TuneOk),
    ((ProtocolHeaderReceived,), C.Connection.Open),
    ((ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN), C.Connection.Open),
    ((ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN, C.Connection.TuneOk),
     C.Connection.StartOk),
])
def test_a_method_out_of_order_on_channel_0_is_503(events: tuple[object, ...],
                                                     refused: type) -> None:
    m = ConnectionMachine()
    for event in events:
        m.process(event)
    before = m.state
    with pytest.raises(BrokerError) as info:
        m.process(refused)
    assert info.value.code is ReplyCode.COMMAND_INVALID
    assert info.value.text == (f"COMMAND_INVALID - unexpected method {refused.name} on "
                               "channel 0")
    assert m.state is before


@pytest.mark.parametrize("state_events", [
    (ProtocolHeaderReceived,),
    (ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN),
    (ProtocolHeaderReceived, C.Connection.StartOk, Local.LOGGED_IN, C.Connection.TuneOk),
])
def test_a_channel_frame_before_open_is_503_connection_not_open(
        state_events: tuple[object, ...]) -> None:
    m = ConnectionMachine()
    for event in state_events:
        m.process(event)
    with pytest.raises(BrokerError) as info:
        m.process(CHANNEL_FRAME)
    assert info.value.code is ReplyCode.COMMAND_INVALID
    assert info.value.text == "COMMAND_INVALID - connection not open"


def test_after_our_close_only_close_and_close_ok_count() -> None:
    m = opened()
    m.process(Local.SEND_CLOSE)
    assert m.state is State.CLOSING
    assert not m.allows(Local.SEND_CLOSE)  # a second close is not sent
    for other in (CHANNEL_FRAME, C.Connection.Open, C.Connection.UpdateSecret):
        assert m.process(other) is False  # discarded
        assert m.state is State.CLOSING
    assert m.allows(Local.HEARTBEAT)
    assert m.process(C.Connection.CloseOk) is True
    assert m.state is State.CLOSED
    assert not m.allows(Local.HEARTBEAT) and m.process(CHANNEL_FRAME) is False


def test_the_clients_close_ends_any_state_after_the_header() -> None:
    for events in ((ProtocolHeaderReceived,), (ProtocolHeaderReceived, C.Connection.StartOk,
                                               Local.LOGGED_IN)):
        m = ConnectionMachine()
        for event in events:
            m.process(event)
        assert m.process(C.Connection.Close) is True
        assert m.state is State.CLOSED
    m = opened()
    m.process(C.Connection.Close)
    assert m.state is State.CLOSED


def test_local_events_by_state() -> None:
    m = ConnectionMachine()
    assert m.target(Local.SHUTDOWN) is State.CLOSED  # before open: no close handshake
    assert not m.allows(Local.HEARTBEAT) and not m.allows(Local.LOGGED_IN)
    with pytest.raises(BrokerError) as info:
        m.process(Local.LOGGED_IN)
    assert info.value.code is ReplyCode.INTERNAL_ERROR
    m = opened()
    assert m.target(Local.SHUTDOWN) is State.CLOSING
    assert m.allows(Local.BLOCK) and m.allows(Local.CHANNEL_TIMERS)
    m.process(Local.FINISH)
    assert m.state is State.CLOSED and m.target(Local.SHUTDOWN) is None


def test_a_channel_opens_only_with_channel_open() -> None:
    for event in (CONTENT, C.Basic.Ack, C.Channel.Close):
        with pytest.raises(BrokerError) as info:
            ChannelMachine().process(event)
        assert info.value.code is ReplyCode.CHANNEL_ERROR
        assert info.value.text == "CHANNEL_ERROR - expected 'channel.open'"
    ch = ChannelMachine()
    assert ch.process(C.Channel.Open) and ch.state is ChannelState.OPEN and ch.delivers
    with pytest.raises(BrokerError) as second:
        ch.process(C.Channel.Open)
    assert second.value.code is ReplyCode.CHANNEL_ERROR
    assert second.value.text == "CHANNEL_ERROR - second 'channel.open' seen"


def test_an_open_channel_takes_every_handled_method_and_content_as_is() -> None:
    ch = ChannelMachine()
    ch.process(C.Channel.Open)
    assert CHANNEL_METHODS | {CONTENT} <= ch.steady
    assert set(handlers.TABLE) == CHANNEL_METHODS
    with pytest.raises(BrokerError) as info:
        ch.process(C.Connection.Open)
    assert info.value.code is ReplyCode.COMMAND_INVALID


def test_flow_stops_and_resumes_deliveries() -> None:
    ch = ChannelMachine()
    ch.process(C.Channel.Open)
    ch.process(ChannelLocal.FLOW_STOP)
    assert ch.state is ChannelState.FLOW_STOPPED and not ch.delivers
    assert {C.Basic.Ack, CONTENT} <= ch.steady  # it still publishes and acks
    ch.process(ChannelLocal.FLOW_RESUME)
    assert ch.state is ChannelState.OPEN and ch.delivers


def test_a_channel_we_closed_discards_all_but_close_and_close_ok() -> None:
    for last in (C.Channel.Close, C.Channel.CloseOk):
        ch = ChannelMachine()
        ch.process(C.Channel.Open)
        ch.process(ChannelLocal.SEND_CLOSE)
        assert ch.state is ChannelState.CLOSING and ch.closing and not ch.delivers
        assert not ch.allows(ChannelLocal.SEND_CLOSE)
        assert ch.process(CONTENT) is False and ch.process(C.Basic.Ack) is False
        with pytest.raises(BrokerError):
            ch.process(C.Channel.Open)
        assert ch.process(last) is True and ch.state is ChannelState.CLOSED


def test_the_clients_channel_close_and_release() -> None:
    ch = ChannelMachine()
    ch.process(C.Channel.Open)
    ch.process(C.Channel.Close)
    assert ch.state is ChannelState.CLOSED
    ch = ChannelMachine()
    ch.process(C.Channel.Open)
    ch.process(ChannelLocal.RELEASE)
    assert ch.state is ChannelState.CLOSED and ch.closing
