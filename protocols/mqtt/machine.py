"""MQTT's connection state machine: the states of one connection, the packets each state
takes from the client, and the local events that move it from state to state.

Theory of operation
-------------------
Everything that decides what a state allows lives here, as tables (data, not ifs): the
session (``session.py``) looks up every packet it reads in `RECEIVES` and tells `apply`
every decision it takes (a CONNECT accepted or refused, a password check handed to a
worker thread, a DISCONNECT sent, the connection closed or lost). `apply` moves the
machine to the next state, or raises `ProtocolError` with the reason code MQTT gives the
mistake. Nothing here does I/O, reads a clock or touches the core: tests feed events.

    CONNECT_WAIT --PASSWORD_CHECK--> AUTHENTICATING
    CONNECT_WAIT, AUTHENTICATING --ACCEPT (CONNACK 0)--> CONNECTED
    CONNECT_WAIT, AUTHENTICATING --REFUSE--> CLOSED
    CONNECTED --DISCONNECT_SENT (MQTT 5)--> CLOSING --LINGER_OVER--> CLOSED
    any state --CLOSE--> CLOSED

Packets. CONNECT_WAIT takes CONNECT and nothing else [MQTT-3.1.0-1]. AUTHENTICATING reads
nothing: the client's input waits until the password check answers. CONNECTED takes every
packet a client may send except CONNECT (a second one is a protocol error [MQTT-3.1.0-2])
and AUTH: no enhanced authentication method is offered (a CONNECT naming one is refused
with 0x8C), so there is no AUTH exchange and no state for one [MQTT-4.12.0-1]. CLOSING
(our DISCONNECT is sent) reads the client's input and drops it for a moment, so that the
client reads the DISCONNECT rather than a connection reset; CLOSED reads nothing.

Leaving CONNECTED ends the MQTT session (``connect.end``); the session does that when
`apply` says which state it left.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import TypeAlias

from protocols.mqtt.frames import (
    Auth,
    Connect,
    Disconnect,
    PingReq,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    Subscribe,
    Unsubscribe,
)


class ConnState(Enum):
    CONNECT_WAIT = auto()  # a new connection: its first packet must be CONNECT
    AUTHENTICATING = auto()  # CONNECT read; a slow password check is running
    CONNECTED = auto()  # CONNACK 0 sent: the session is open
    CLOSING = auto()  # our DISCONNECT sent: input is read and dropped for a moment
    CLOSED = auto()


class Local(Enum):
    """What the session decided (the events that are not packets from the client)."""

    PASSWORD_CHECK = auto()  # the login waits for a password check in a worker thread
    ACCEPT = auto()  # CONNACK 0 sent
    REFUSE = auto()  # no session: CONNECT refused, first packet not CONNECT, no CONNECT in time
    DISCONNECT_SENT = auto()  # MQTT 5: our DISCONNECT with its reason code is sent
    LINGER_OVER = auto()  # the moment of reading after our DISCONNECT is over
    CLOSE = auto()  # the connection ends now: client DISCONNECT, closed, lost, shutdown


Event: TypeAlias = "Local | type"  # a local event, or the type of a packet from the client

_AFTER_CONNECT = frozenset({
    Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq, Disconnect,
})

# the packets each state takes from the client; any other is a protocol error
RECEIVES: dict[ConnState, frozenset[type]] = {
    ConnState.CONNECT_WAIT: frozenset({Connect}),
    ConnState.AUTHENTICATING: frozenset(),
    ConnState.CONNECTED: _AFTER_CONNECT,
    ConnState.CLOSING: frozenset(),
    ConnState.CLOSED: frozenset(),
}

# the local events each state allows, and where they lead
TRANSITIONS: dict[ConnState, dict[Local, ConnState]] = {
    ConnState.CONNECT_WAIT: {
        Local.PASSWORD_CHECK: ConnState.AUTHENTICATING,
        Local.ACCEPT: ConnState.CONNECTED,
        Local.REFUSE: ConnState.CLOSED,
        Local.CLOSE: ConnState.CLOSED,
    },
    ConnState.AUTHENTICATING: {
        Local.ACCEPT: ConnState.CONNECTED,
        Local.REFUSE: ConnState.CLOSED,
        Local.CLOSE: ConnState.CLOSED,
    },
    ConnState.CONNECTED: {
        Local.DISCONNECT_SENT: ConnState.CLOSING,
        Local.CLOSE: ConnState.CLOSED,
    },
    ConnState.CLOSING: {
        Local.LINGER_OVER: ConnState.CLOSED,
        Local.CLOSE: ConnState.CLOSED,
    },
    ConnState.CLOSED: {
        Local.CLOSE: ConnState.CLOSED,
    },
}

# what each state does with the client's bytes
READING = frozenset({ConnState.CONNECT_WAIT, ConnState.CONNECTED})  # packets are handled
DROPPING = frozenset({ConnState.CLOSING, ConnState.CLOSED})  # bytes are not even decoded
HANDSHAKE = frozenset({ConnState.CONNECT_WAIT, ConnState.AUTHENTICATING})  # before CONNACK

# why a packet is refused, where the spec says more than "not in this state"
_REFUSALS: dict[tuple[ConnState, type], str] = {
    (ConnState.CONNECTED, Connect): "a second CONNECT [MQTT-3.1.0-2]",
    (ConnState.CONNECTED, Auth): "AUTH without an authentication method [MQTT-4.12.0-1]",
}


class ConnectionMachine:
    """The state of one MQTT connection; `apply` is the only way to change it."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = ConnState.CONNECT_WAIT

    def apply(self, event: Event) -> ConnState:
        """Apply a local event (move to its next state) or a packet from the client (taken
        in this state or not). Returns the state the machine was in; raises
        `ProtocolError` for a packet this state does not take (the reason code the
        DISCONNECT carries) or an event it does not allow."""
        state = self.state
        if isinstance(event, Local):
            nxt = TRANSITIONS[state].get(event)
            if nxt is None:
                raise ProtocolError(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                                    f"{event.name} in state {state.name}")
            self.state = nxt
            return state
        if event not in RECEIVES[state]:
            raise self.refusal(event)
        return state

    def refusal(self, kind: type) -> ProtocolError:
        """The error for a packet of type `kind` that this state does not take."""
        state = self.state
        text = _REFUSALS.get((state, kind))
        if text is None:
            text = ("first packet is not CONNECT [MQTT-3.1.0-1]"
                    if state is ConnState.CONNECT_WAIT
                    else f"unexpected {kind.__name__} from a client")
        return ProtocolError(ReasonCode.PROTOCOL_ERROR, text)
