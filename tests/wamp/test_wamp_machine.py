"""The WAMP session state machine fed events alone: transitions, what is dropped, and the
protocol violation each refusal is aborted with."""

from __future__ import annotations

import pytest

from protocols.wamp import handlers
from protocols.wamp.frames import MessageType, ProtocolViolation
from protocols.wamp.machine import SESSION_MESSAGES, Local, State, WampMachine

T = MessageType


def established() -> WampMachine:
    m = WampMachine()
    m.process(T.HELLO)
    m.process(Local.WELCOME)
    return m


def test_hello_then_welcome_establishes() -> None:
    m = WampMachine()
    assert m.process(T.HELLO) is True and m.state is State.HANDSHAKE
    m.process(Local.WELCOME)
    assert m.state is State.ESTABLISHED
    assert m.steady == SESSION_MESSAGES  # the per-message check: one membership
    assert m.allows(Local.CALL_TIMEOUTS) and not m.allows(Local.HELLO_DEADLINE)


def test_a_challenge_then_authenticate() -> None:
    m = WampMachine()
    m.process(T.HELLO)
    m.process(Local.CHALLENGE)
    assert m.state is State.CHALLENGED and m.allows(Local.HELLO_DEADLINE)
    assert m.process(T.AUTHENTICATE) is True and m.state is State.CHALLENGED
    with pytest.raises(ProtocolViolation) as info:
        m.process(T.HELLO)
    assert info.value.text == "HELLO is not allowed in state CHALLENGED"
    m.process(Local.WELCOME)
    assert m.state is State.ESTABLISHED


@pytest.mark.parametrize("kind", [T.PUBLISH, T.GOODBYE, T.CALL, T.AUTHENTICATE, T.YIELD])
def test_messages_before_hello_are_violations(kind: MessageType) -> None:
    m = WampMachine()
    with pytest.raises(ProtocolViolation) as info:
        m.process(kind)
    assert info.value.text == f"{kind.name} is not allowed in state HANDSHAKE"
    assert m.state is State.HANDSHAKE


@pytest.mark.parametrize("kind", [T.HELLO, T.WELCOME, T.EVENT, T.RESULT, T.INVOCATION,
                                  T.AUTHENTICATE])
def test_router_messages_and_a_second_hello_in_a_session_are_violations(
        kind: MessageType) -> None:
    m = established()
    with pytest.raises(ProtocolViolation):
        m.process(kind)
    assert m.state is State.ESTABLISHED


def test_the_clients_goodbye_returns_to_the_handshake() -> None:
    m = established()
    assert m.process(T.GOODBYE) is True
    assert m.state is State.HANDSHAKE and T.HELLO in m.steady


def test_after_our_goodbye_only_the_clients_goodbye_or_abort_counts() -> None:
    for last in (T.GOODBYE, T.ABORT):
        m = established()
        m.process(Local.SEND_GOODBYE)
        assert m.state is State.CLOSING
        assert m.process(T.PUBLISH) is False and m.process(T.CALL) is False  # dropped
        with pytest.raises(ProtocolViolation):
            m.process(T.HELLO)
        assert m.process(last) is True and m.state is State.CLOSED


def test_abort_and_loss_close_every_state() -> None:
    for prefix in ((), (T.HELLO, Local.CHALLENGE), (T.HELLO, Local.WELCOME)):
        for end in (T.ABORT, Local.SEND_ABORT, Local.LOST):
            m = WampMachine()
            for event in prefix:
                m.process(event)
            m.process(end)
            assert m.state is State.CLOSED
            assert not m.allows(Local.SEND_ABORT) and not m.allows(Local.LOST)


def test_shutdown_says_goodbye_to_a_session_and_aborts_a_handshake() -> None:
    assert WampMachine().target(Local.SHUTDOWN) is State.CLOSED
    assert established().target(Local.SHUTDOWN) is State.CLOSING
    m = established()
    m.process(Local.SEND_GOODBYE)
    assert m.target(Local.SHUTDOWN) is None


def test_a_login_answered_after_the_transport_went_is_ignored() -> None:
    m = WampMachine()
    m.process(T.HELLO)
    m.process(Local.CHALLENGE)
    m.process(Local.LOST)
    assert not m.allows(Local.WELCOME)


def test_every_session_message_has_a_handler() -> None:
    assert set(handlers.TABLE) == SESSION_MESSAGES
