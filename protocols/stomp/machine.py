"""The STOMP connection state machine: every state, the frames and server events each state
takes and where each leads, as tables. Nothing else decides what a state allows.

Theory of operation
-------------------
An event is a client frame's `Command` or something the server does itself (`Local`).
`StompMachine.process(event)` looks it up in the row of the current state: found, the
machine moves to the state it names; not found, it raises the `StompError` that the session
answers with an ERROR frame before it closes (spec 1.2 "ERROR": the server closes after
it), with RabbitMQ's message and an explanation (`OTHERWISE`). The session and the handlers
do the work an event asks for; the machine says whether it may happen and what follows.

    CONNECTING --CONNECT/STOMP--> AUTHENTICATING --LOGGED_IN (CONNECTED sent)--> CONNECTED
    CONNECTED --DISCONNECT without receipt (FINISH)--> CLOSED
    CONNECTED --DISCONNECT with a receipt (AWAIT_RECEIPT)--> DISCONNECTING
    DISCONNECTING --RECEIPT_SENT (that receipt went out after all before it)--> CLOSED
    CONNECTING, AUTHENTICATING --CONNECT_DEADLINE--> CLOSED
    any --SEND_ERROR (an ERROR then close), FINISH (socket lost, heart-beats missed)--> CLOSED

Frames are parsed only in CONNECTING and CONNECTED (`parses`): while a login is checked
(AUTHENTICATING) what arrives waits in the codec's buffer, and after a DISCONNECT with a
receipt nothing is read at all (`buffers` is false). The per-frame check is one frozenset
membership (`steady`: the commands the current state handles without leaving it).
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from protocols.stomp.frames import Command, StompError


class State(Enum):
    CONNECTING = auto()  # CONNECT (or STOMP) awaited
    AUTHENTICATING = auto()  # CONNECT received; its login is being checked
    CONNECTED = auto()
    DISCONNECTING = auto()  # DISCONNECT with a receipt: closing once that RECEIPT is out
    CLOSED = auto()


class Local(Enum):
    """What the server does on its own."""

    LOGGED_IN = auto()  # the CONNECT's login and vhost were accepted: CONNECTED is sent
    AWAIT_RECEIPT = auto()  # DISCONNECT with a receipt: close once the RECEIPT is out
    RECEIPT_SENT = auto()  # that RECEIPT went out
    SEND_ERROR = auto()  # an ERROR frame, then close
    FINISH = auto()  # close without a frame
    CONNECT_DEADLINE = auto()  # the time for CONNECT runs
    HEARTBEAT = auto()  # heart-beats are sent and expected
    NOTICE = auto()  # the client is told of a server-side event by a frame (shutdown,
    # a deleted vhost, a cancelled subscription)


Event = Command | Local

SESSION_COMMANDS: Final = frozenset({
    Command.SEND, Command.SUBSCRIBE, Command.UNSUBSCRIBE, Command.ACK, Command.NACK,
    Command.BEGIN, Command.COMMIT, Command.ABORT, Command.DISCONNECT,
})
_ENDS: Final[dict[Event, State]] = {Local.SEND_ERROR: State.CLOSED, Local.FINISH: State.CLOSED}
_BEFORE_LOGIN: Final[dict[Event, State]] = {**_ENDS, Local.CONNECT_DEADLINE: State.CLOSED}

TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    State.CONNECTING: {Command.CONNECT: State.AUTHENTICATING,
                       Command.STOMP: State.AUTHENTICATING, **_BEFORE_LOGIN},
    State.AUTHENTICATING: {Local.LOGGED_IN: State.CONNECTED, **_BEFORE_LOGIN},
    State.CONNECTED: {**{c: State.CONNECTED for c in SESSION_COMMANDS},
                      Local.AWAIT_RECEIPT: State.DISCONNECTING, Local.HEARTBEAT: State.CONNECTED,
                      Local.NOTICE: State.CONNECTED, **_ENDS},
    State.DISCONNECTING: {Local.RECEIPT_SENT: State.CLOSED, Local.HEARTBEAT: State.DISCONNECTING,
                          **_ENDS},
    State.CLOSED: {Local.FINISH: State.CLOSED},
}

# what a state answers a command its row does not name: the ERROR's message and body, by
# command (`None`: any other)
_LOGIN_FIRST: Final[dict[Command | None, tuple[str, str]]] = {
    None: ("Illegal command", "You must log in using CONNECT first; got {command}."),
}
OTHERWISE: Final[dict[State, dict[Command | None, tuple[str, str]]]] = {
    State.CONNECTING: _LOGIN_FIRST,
    State.AUTHENTICATING: _LOGIN_FIRST,
    State.CONNECTED: {
        Command.CONNECT: ("Illegal command", "This connection is already connected."),
        Command.STOMP: ("Illegal command", "This connection is already connected."),
        None: ("Illegal command", "{command} is not a client frame."),
    },
    State.DISCONNECTING: {None: ("Illegal command", "The connection is closing; got "
                                 "{command}.")},
    State.CLOSED: {None: ("Illegal command", "The connection is closed; got {command}.")},
}
PARSES: Final = frozenset({State.CONNECTING, State.CONNECTED})  # frames are read and handled
BUFFERS: Final = frozenset({State.CONNECTING, State.AUTHENTICATING, State.CONNECTED})
STEADY: Final[dict[State, frozenset[Command]]] = {
    state: frozenset(e for e, to in row.items() if to is state and isinstance(e, Command))
    for state, row in TRANSITIONS.items()
}


class StompMachine:
    """One connection's state; `process` applies an event or refuses it."""

    __slots__ = ("state", "steady", "parses", "buffers")

    def __init__(self) -> None:
        self._enter(State.CONNECTING)

    def _enter(self, state: State) -> None:
        self.state = state
        self.steady = STEADY[state]
        self.parses = state in PARSES
        self.buffers = state in BUFFERS

    def allows(self, event: Event) -> bool:
        return event in TRANSITIONS[self.state]

    def process(self, event: Event) -> None:
        """Apply `event`, or raise the `StompError` its refusal is answered with."""
        state = self.state
        to = TRANSITIONS[state].get(event)
        if to is None:
            if isinstance(event, Local):
                raise StompError("Internal error", f"{event.name} in state {state.name}")
            rules = OTHERWISE[state]
            message, detail = rules.get(event) or rules[None]
            raise StompError(message, detail.format(command=event.value))
        if to is not state:
            self._enter(to)
