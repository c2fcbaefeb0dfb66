"""The STOMP connection state machine fed events alone: transitions, and the ERROR (message
and body) each refusal is answered with."""

from __future__ import annotations

import pytest

from protocols.stomp import handlers
from protocols.stomp.frames import CLIENT_COMMANDS, Command, StompError
from protocols.stomp.machine import SESSION_COMMANDS, Local, State, StompMachine


def connected() -> StompMachine:
    m = StompMachine()
    m.process(Command.CONNECT)
    m.process(Local.LOGGED_IN)
    return m


def test_connect_then_login_then_connected() -> None:
    m = StompMachine()
    assert m.state is State.CONNECTING and m.parses and m.buffers
    m.process(Command.STOMP)
    assert m.state is State.AUTHENTICATING
    assert not m.parses and m.buffers  # what arrives waits for the login
    assert m.allows(Local.CONNECT_DEADLINE) and not m.allows(Local.HEARTBEAT)
    m.process(Local.LOGGED_IN)
    assert m.state is State.CONNECTED and m.parses
    assert m.steady == SESSION_COMMANDS  # the per-frame check: one membership
    assert not m.allows(Local.CONNECT_DEADLINE) and m.allows(Local.HEARTBEAT)


@pytest.mark.parametrize("command", sorted(SESSION_COMMANDS, key=lambda c: c.value))
def test_session_commands_before_connect_are_refused(command: Command) -> None:
    m = StompMachine()
    with pytest.raises(StompError) as info:
        m.process(command)
    assert info.value.message == "Illegal command"
    assert info.value.detail == f"You must log in using CONNECT first; got {command.value}."
    assert m.state is State.CONNECTING


@pytest.mark.parametrize("command", [Command.CONNECT, Command.STOMP])
def test_a_second_connect_is_refused(command: Command) -> None:
    m = connected()
    with pytest.raises(StompError) as info:
        m.process(command)
    assert (info.value.message, info.value.detail) == (
        "Illegal command", "This connection is already connected.")


@pytest.mark.parametrize("command", [Command.MESSAGE, Command.RECEIPT, Command.ERROR,
                                     Command.CONNECTED])
def test_server_frames_from_a_client_are_refused(command: Command) -> None:
    m = connected()
    with pytest.raises(StompError) as info:
        m.process(command)
    assert info.value.detail == f"{command.value} is not a client frame."
    assert m.state is State.CONNECTED


def test_disconnect_with_a_receipt_closes_once_it_is_sent() -> None:
    m = connected()
    m.process(Command.DISCONNECT)
    assert m.state is State.CONNECTED  # the handler picks the way out
    m.process(Local.AWAIT_RECEIPT)
    assert m.state is State.DISCONNECTING
    assert not m.buffers and not m.parses and m.allows(Local.HEARTBEAT)
    assert not m.allows(Local.NOTICE)  # no server notice any more
    with pytest.raises(StompError):
        m.process(Command.SEND)
    m.process(Local.RECEIPT_SENT)
    assert m.state is State.CLOSED and not m.buffers


def test_an_error_or_finish_closes_from_every_open_state() -> None:
    for prefix in ((), (Command.CONNECT,), (Command.CONNECT, Local.LOGGED_IN),
                   (Command.CONNECT, Local.LOGGED_IN, Local.AWAIT_RECEIPT)):
        for end in (Local.SEND_ERROR, Local.FINISH):
            m = StompMachine()
            for event in prefix:
                m.process(event)
            m.process(end)
            assert m.state is State.CLOSED
            assert not m.allows(Local.SEND_ERROR)  # one ERROR at most
            m.process(Local.FINISH)  # a lost socket after it changes nothing
            assert m.state is State.CLOSED


def test_only_a_connected_client_is_told_of_server_events() -> None:
    assert not StompMachine().allows(Local.NOTICE)
    assert connected().allows(Local.NOTICE)


def test_a_login_answered_after_the_connection_went_is_ignored() -> None:
    m = StompMachine()
    m.process(Command.CONNECT)
    m.process(Local.FINISH)
    assert not m.allows(Local.LOGGED_IN)
    with pytest.raises(StompError):
        m.process(Local.LOGGED_IN)


def test_every_client_command_has_a_handler() -> None:
    assert set(handlers.TABLE) == CLIENT_COMMANDS == SESSION_COMMANDS | {
        Command.CONNECT, Command.STOMP}
