"""The AMQP 0-9-1 connection and channel state machines: every state, the events each
state accepts and where each leads, as tables. Nothing else decides what a state allows.

Theory of operation
-------------------
A connection has one `ConnectionMachine`, each open channel one `ChannelMachine`. An event
is either a frame received from the client, named by its pamqp method class (or
`ProtocolHeaderReceived`, `CHANNEL_FRAME` for any frame on a channel other than 0,
`CONTENT` for a basic.publish with its content), or something the server does itself
(`Local`, `ChannelLocal`). `process(event)` looks the event up in the row of the current
state: found, the machine moves to the state it names and answers True (handle it); not
found, the state's `otherwise` rule either discards it (False: after we sent close, spec
0-9-1 section 4.2.4 and 2.3.6 "discard all frames until close-ok") or raises the
`BrokerError` the client is closed with (503 COMMAND_INVALID, 504 CHANNEL_ERROR), exactly as
RabbitMQ answers them. The session and the handlers do the work an event asks for; the
machine only says whether it may happen and what state follows.

Connection states, in order (spec 2.2.4)::

    HEADER --protocol header--> START_OK --start-ok--> START_OK (the login runs)
    START_OK --LOGGED_IN (we sent connection.tune)--> TUNE_OK --tune-ok--> OPEN_WAIT
    OPEN_WAIT --connection.open--> OPEN
    any open --SEND_CLOSE (we sent connection.close)--> CLOSING --close or close-ok--> CLOSED
    any open --the client's connection.close (we answer close-ok)--> CLOSED
    any --FINISH (socket lost, bad header, protocol error, missed heartbeats)--> CLOSED

Channel states: CLOSED (no channel by that number) --channel.open--> OPEN;
OPEN <--FLOW_STOP / FLOW_RESUME (the client's channel.flow)--> FLOW_STOPPED (no deliveries);
OPEN or FLOW_STOPPED --channel.close--> CLOSED, --SEND_CLOSE (we sent channel.close)-->
CLOSING --close or close-ok--> CLOSED. The server answers channel.open at once, so there is
no "opening" state.

The per-frame check is one frozenset membership: each machine keeps `steady`, the events its
current state handles without changing state (every channel method and content while the
connection and the channel are open), and calls `process` only for the others.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final, TypeVar

from pamqp import commands

from gateway.core.errors import BrokerError, ReplyCode
from protocols.amqp.frames import ProtocolHeaderReceived

C = commands.Connection
Ch = commands.Channel


class State(Enum):
    """The connection's state."""

    HEADER = auto()  # the protocol header is awaited
    START_OK = auto()  # connection.start sent; start-ok (and the login it carries) awaited
    TUNE_OK = auto()  # connection.tune sent; tune-ok awaited
    OPEN_WAIT = auto()  # connection.open awaited
    OPEN = auto()
    CLOSING = auto()  # connection.close sent; close-ok awaited
    CLOSED = auto()


class Local(Enum):
    """What the server does to a connection on its own."""

    LOGGED_IN = auto()  # start-ok's login succeeded: connection.tune is sent
    SEND_CLOSE = auto()  # connection.close is sent (an error, shutdown, an operator)
    FINISH = auto()  # the connection ends without a close handshake
    SHUTDOWN = auto()  # the broker stops: a close handshake when open, else finish
    HEARTBEAT = auto()  # the heartbeat clock runs (sends and expects heartbeats)
    CHANNEL_TIMERS = auto()  # channels' consumer timeouts are checked
    BLOCK = auto()  # connection.blocked: a publish may pause reading under the alarm


class ChannelLocal(Enum):
    """What the server does to a channel on its own."""

    FLOW_STOP = auto()  # channel.flow(active=false) handled
    FLOW_RESUME = auto()  # channel.flow(active=true) handled
    SEND_CLOSE = auto()  # channel.close sent (a soft error, a consumer timeout)
    RELEASE = auto()  # the connection is closing: the channel ends with it


class ChannelFrame(Enum):
    """Received frame kinds that are no pamqp method class."""

    CHANNEL_FRAME = auto()  # any method or content on a channel other than 0
    CONTENT = auto()  # a basic.publish with its content (also one over the size limit)


CHANNEL_FRAME: Final = ChannelFrame.CHANNEL_FRAME
CONTENT: Final = ChannelFrame.CONTENT

Event = type | Local | ChannelLocal | ChannelFrame
S = TypeVar("S", bound=Enum)

# -- the connection ------------------------------------------------------------------------

_ENDS: Final[dict[Event, State]] = {
    C.Close: State.CLOSED,  # answered with close-ok
    C.CloseOk: State.CLOSED,
    Local.SEND_CLOSE: State.CLOSING,
    Local.FINISH: State.CLOSED,
}
_HANDSHAKE: Final[dict[Event, State]] = {**_ENDS, Local.SHUTDOWN: State.CLOSED}

TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    State.HEADER: {ProtocolHeaderReceived: State.START_OK, **_HANDSHAKE},
    State.START_OK: {C.StartOk: State.START_OK, Local.LOGGED_IN: State.TUNE_OK,
                     C.UpdateSecret: State.START_OK, **_HANDSHAKE},
    State.TUNE_OK: {C.TuneOk: State.OPEN_WAIT, C.UpdateSecret: State.TUNE_OK, **_HANDSHAKE},
    State.OPEN_WAIT: {C.Open: State.OPEN, C.UpdateSecret: State.OPEN_WAIT,
                      Local.HEARTBEAT: State.OPEN_WAIT, **_HANDSHAKE},
    State.OPEN: {CHANNEL_FRAME: State.OPEN, C.UpdateSecret: State.OPEN,
                 Local.HEARTBEAT: State.OPEN, Local.CHANNEL_TIMERS: State.OPEN,
                 Local.BLOCK: State.OPEN, **_ENDS, Local.SHUTDOWN: State.CLOSING},
    State.CLOSING: {C.Close: State.CLOSED, C.CloseOk: State.CLOSED,
                    Local.HEARTBEAT: State.CLOSING, Local.FINISH: State.CLOSED},
    State.CLOSED: {Local.FINISH: State.CLOSED},
}

# what a state does with a received frame its row does not name: the reply to refuse it
# with, by event (`None`: any other), or nothing at all (discard it)
_NOT_OPEN: Final[dict[Event | None, tuple[ReplyCode, str]]] = {
    CHANNEL_FRAME: (ReplyCode.COMMAND_INVALID, "COMMAND_INVALID - connection not open"),
    None: (ReplyCode.COMMAND_INVALID, "COMMAND_INVALID - unexpected method {name} on "
                                      "channel 0"),
}
OTHERWISE: Final[dict[State, dict[Event | None, tuple[ReplyCode, str]] | None]] = {
    State.HEADER: _NOT_OPEN,
    State.START_OK: _NOT_OPEN,
    State.TUNE_OK: _NOT_OPEN,
    State.OPEN_WAIT: _NOT_OPEN,
    State.OPEN: {None: _NOT_OPEN[None]},
    State.CLOSING: None,  # after our connection.close: discard all but close and close-ok
    State.CLOSED: None,  # nothing is read any more
}


def _steady(table: dict[S, dict[Event, S]]) -> dict[S, frozenset[Event]]:
    """Per state, the received events it handles without leaving it."""
    return {state: frozenset(e for e, to in row.items()
                             if to is state and isinstance(e, type | ChannelFrame))
            for state, row in table.items()}


def _refusal(rule: tuple[ReplyCode, str], event: Event, state: Enum) -> BrokerError:
    code, text = rule
    name = getattr(event, "name", str(event))
    return BrokerError(text.format(name=name, state=state.name), code)


STEADY: Final = _steady(TRANSITIONS)


class ConnectionMachine:
    """One connection's state; `process` applies an event or refuses it."""

    __slots__ = ("state", "steady")

    def __init__(self) -> None:
        self.state = State.HEADER
        self.steady = STEADY[State.HEADER]

    def allows(self, event: Event) -> bool:
        return event in TRANSITIONS[self.state]

    def target(self, event: Event) -> State | None:
        """The state `event` would lead to, or None when this state does not take it."""
        return TRANSITIONS[self.state].get(event)

    def process(self, event: Event) -> bool:
        """Apply `event`: True when it is to be handled, False when it is discarded;
        a `BrokerError` (the connection.close reply) when this state refuses it."""
        state = self.state
        to = TRANSITIONS[state].get(event)
        if to is None:
            if isinstance(event, Local):
                raise BrokerError(f"INTERNAL_ERROR - {event.name} in state {state.name}",
                                  ReplyCode.INTERNAL_ERROR)
            rules = OTHERWISE[state]
            if rules is None:
                return False
            raise _refusal(rules.get(event) or rules[None], event, state)
        if to is not state:
            self.state = to
            self.steady = STEADY[to]
        return True

# -- channels ------------------------------------------------------------------------------


class ChannelState(Enum):
    CLOSED = auto()  # no channel by that number: never opened, or closed
    OPEN = auto()
    FLOW_STOPPED = auto()  # the client sent channel.flow(active=false): no deliveries
    CLOSING = auto()  # we sent channel.close; close-ok awaited


# every channel method a handler in `handlers.TABLE` serves while the channel is open
CHANNEL_METHODS: Final[frozenset[type]] = frozenset({
    Ch.Flow, Ch.FlowOk, Ch.CloseOk,
    commands.Exchange.Declare, commands.Exchange.Delete, commands.Exchange.Bind,
    commands.Exchange.Unbind,
    commands.Queue.Declare, commands.Queue.Bind, commands.Queue.Unbind, commands.Queue.Purge,
    commands.Queue.Delete,
    commands.Basic.Qos, commands.Basic.Consume, commands.Basic.Cancel, commands.Basic.Get,
    commands.Basic.Ack, commands.Basic.Nack, commands.Basic.Reject, commands.Basic.Recover,
    commands.Basic.RecoverAsync,
    commands.Confirm.Select, commands.Tx.Select, commands.Tx.Commit, commands.Tx.Rollback,
})


def _open_row(state: ChannelState) -> dict[Event, ChannelState]:
    return {
        **{m: state for m in CHANNEL_METHODS}, CONTENT: state,
        Ch.Close: ChannelState.CLOSED,  # answered with close-ok
        ChannelLocal.FLOW_STOP: ChannelState.FLOW_STOPPED,
        ChannelLocal.FLOW_RESUME: ChannelState.OPEN,
        ChannelLocal.SEND_CLOSE: ChannelState.CLOSING,
        ChannelLocal.RELEASE: ChannelState.CLOSED,
    }


CHANNEL_TRANSITIONS: Final[dict[ChannelState, dict[Event, ChannelState]]] = {
    ChannelState.CLOSED: {Ch.Open: ChannelState.OPEN, ChannelLocal.RELEASE: ChannelState.CLOSED},
    ChannelState.OPEN: _open_row(ChannelState.OPEN),
    ChannelState.FLOW_STOPPED: _open_row(ChannelState.FLOW_STOPPED),
    ChannelState.CLOSING: {Ch.Close: ChannelState.CLOSED, Ch.CloseOk: ChannelState.CLOSED,
                           ChannelLocal.RELEASE: ChannelState.CLOSED},
}
_SECOND_OPEN: Final = (ReplyCode.CHANNEL_ERROR, "CHANNEL_ERROR - second 'channel.open' seen")
CHANNEL_OTHERWISE: Final[dict[ChannelState, dict[Event | None, tuple[ReplyCode, str]]]] = {
    ChannelState.CLOSED: {None: (ReplyCode.CHANNEL_ERROR,
                                 "CHANNEL_ERROR - expected 'channel.open'")},
    ChannelState.OPEN: {Ch.Open: _SECOND_OPEN,
                        None: (ReplyCode.COMMAND_INVALID,
                               "COMMAND_INVALID - unexpected method {name}")},
    # after our channel.close: discard all but close and close-ok (spec 2.3.6)
    ChannelState.CLOSING: {Ch.Open: _SECOND_OPEN},
}
CHANNEL_OTHERWISE[ChannelState.FLOW_STOPPED] = CHANNEL_OTHERWISE[ChannelState.OPEN]
CHANNEL_STEADY: Final = _steady(CHANNEL_TRANSITIONS)
DELIVERS: Final = frozenset({ChannelState.OPEN})  # consumers may take messages


class ChannelMachine:
    """One channel's state (CLOSED until channel.open); `process` applies an event or
    refuses it. `delivers` says whether its consumers may take messages."""

    __slots__ = ("state", "steady", "delivers")

    def __init__(self) -> None:
        self.state = ChannelState.CLOSED
        self.steady = CHANNEL_STEADY[ChannelState.CLOSED]
        self.delivers = False

    def allows(self, event: Event) -> bool:
        return event in CHANNEL_TRANSITIONS[self.state]

    @property
    def closing(self) -> bool:
        """Closing or closed: nothing more is sent on it."""
        return self.state is ChannelState.CLOSING or self.state is ChannelState.CLOSED

    def process(self, event: Event) -> bool:
        """Apply `event`: True when it is to be handled, False when it is discarded; a
        `BrokerError` (channel or connection close) when this state refuses it."""
        state = self.state
        to = CHANNEL_TRANSITIONS[state].get(event)
        if to is None:
            if isinstance(event, ChannelLocal):
                raise BrokerError(f"INTERNAL_ERROR - {event.name} on a channel in state "
                                  f"{state.name}", ReplyCode.INTERNAL_ERROR)
            rules = CHANNEL_OTHERWISE[state]
            rule = rules.get(event) or rules.get(None)
            if rule is None:
                return False
            raise _refusal(rule, event, state)
        if to is not state:
            self.state = to
            self.steady = CHANNEL_STEADY[to]
            self.delivers = to in DELIVERS
        return True
