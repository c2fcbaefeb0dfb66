"""The WAMP session state machine: every state, the messages and router events each state
takes and where each leads, as tables. Nothing else decides what a state allows.

Theory of operation
-------------------
An event is a received message's `MessageType` or something the router does itself
(`Local`). `WampMachine.process(event)` looks it up in the row of the current state:
found, the machine moves to the state it names and answers True (handle it); not found, it
answers False for a message the state drops (after our GOODBYE only the client's GOODBYE
matters) and otherwise raises the `ProtocolViolation` that the session answers with ABORT
`wamp.error.protocol_violation` (spec "Protocol Errors"). The session and the handlers do
the work an event asks for; the machine says whether it may happen and what follows.

    HANDSHAKE --HELLO, no auth (WELCOME sent)--> ESTABLISHED
    HANDSHAKE --HELLO, ticket or wampcra (CHALLENGE sent)--> CHALLENGED
    CHALLENGED --AUTHENTICATE accepted (WELCOME sent)--> ESTABLISHED
    ESTABLISHED --the client's GOODBYE (we answer goodbye_and_out)--> HANDSHAKE
    ESTABLISHED --SEND_GOODBYE (shutdown, realm deleted)--> CLOSING --GOODBYE--> CLOSED
    any --ABORT either way, a protocol violation (SEND_ABORT), the transport lost--> CLOSED

The per-message check is one frozenset membership (`steady`: the messages the current
state handles without leaving it).
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from protocols.wamp.frames import MessageType, ProtocolViolation

T = MessageType


class State(Enum):
    HANDSHAKE = auto()  # HELLO awaited (again after a GOODBYE: the transport may carry more)
    CHALLENGED = auto()  # CHALLENGE sent (ticket, WAMP-CRA); AUTHENTICATE awaited
    ESTABLISHED = auto()
    CLOSING = auto()  # our GOODBYE sent; the client's awaited
    CLOSED = auto()


class Local(Enum):
    """What the router does on its own."""

    CHALLENGE = auto()  # a CHALLENGE is sent
    WELCOME = auto()  # the login and realm were accepted: WELCOME is sent
    SEND_GOODBYE = auto()  # our GOODBYE (shutdown, the realm deleted)
    SHUTDOWN = auto()  # the broker stops: GOODBYE when established, else ABORT
    SEND_ABORT = auto()  # an ABORT, then the transport closes
    LOST = auto()  # the transport is gone
    HELLO_DEADLINE = auto()  # the time to establish a session runs
    CALL_TIMEOUTS = auto()  # the session's calls may time out


Event = MessageType | Local

SESSION_MESSAGES: Final = frozenset({
    T.PUBLISH, T.SUBSCRIBE, T.UNSUBSCRIBE, T.CALL, T.CANCEL, T.REGISTER, T.UNREGISTER,
    T.YIELD, T.ERROR,
})
_ENDS: Final[dict[Event, State]] = {
    T.ABORT: State.CLOSED, Local.SEND_ABORT: State.CLOSED, Local.LOST: State.CLOSED,
}
_JOINING: Final[dict[Event, State]] = {
    Local.WELCOME: State.ESTABLISHED, Local.SHUTDOWN: State.CLOSED,
    Local.HELLO_DEADLINE: State.CLOSED, **_ENDS,
}

TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    State.HANDSHAKE: {T.HELLO: State.HANDSHAKE, Local.CHALLENGE: State.CHALLENGED, **_JOINING},
    State.CHALLENGED: {T.AUTHENTICATE: State.CHALLENGED, **_JOINING},
    State.ESTABLISHED: {**{t: State.ESTABLISHED for t in SESSION_MESSAGES},
                        T.GOODBYE: State.HANDSHAKE, Local.SEND_GOODBYE: State.CLOSING,
                        Local.SHUTDOWN: State.CLOSING, Local.CALL_TIMEOUTS: State.ESTABLISHED,
                        **_ENDS},
    State.CLOSING: {T.GOODBYE: State.CLOSED, **_ENDS},
    State.CLOSED: {},
}
# messages a state takes and drops: after our GOODBYE, the session's own traffic
DROPS: Final[dict[State, frozenset[MessageType]]] = {
    State.CLOSING: SESSION_MESSAGES,
}
STEADY: Final[dict[State, frozenset[MessageType]]] = {
    state: frozenset(e for e, to in row.items() if to is state and isinstance(e, MessageType))
    for state, row in TRANSITIONS.items()
}
_NOTHING: Final[frozenset[MessageType]] = frozenset()


class WampMachine:
    """One session's state; `process` applies an event or refuses it."""

    __slots__ = ("state", "steady")

    def __init__(self) -> None:
        self.state = State.HANDSHAKE
        self.steady = STEADY[State.HANDSHAKE]

    def allows(self, event: Event) -> bool:
        return event in TRANSITIONS[self.state]

    def target(self, event: Event) -> State | None:
        """The state `event` would lead to, or None when this state does not take it."""
        return TRANSITIONS[self.state].get(event)

    def process(self, event: Event) -> bool:
        """Apply `event`: True when it is to be handled, False when it is dropped; the
        `ProtocolViolation` to ABORT with when this state refuses it."""
        state = self.state
        to = TRANSITIONS[state].get(event)
        if to is None:
            if isinstance(event, MessageType) and event in DROPS.get(state, _NOTHING):
                return False
            name = event.name
            raise ProtocolViolation(f"{name} is not allowed in state {state.name}")
        if to is not state:
            self.state = to
            self.steady = STEADY[to]
        return True
