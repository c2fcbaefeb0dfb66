"""The MQTT connection state machine (protocols/mqtt/machine.py), sans-IO: events in,
states and refusals out; then the session driven by bytes to show it consults the machine
(a packet a state does not take, the AUTHENTICATING state of a slow password check)."""

from __future__ import annotations

import pytest
from mqtt_helpers import MQTT_5, MQTT_311, World

from protocols.mqtt import handlers
from protocols.mqtt.frames import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from protocols.mqtt.machine import (
    DROPPING,
    HANDSHAKE,
    READING,
    RECEIVES,
    TRANSITIONS,
    ConnectionMachine,
    ConnState,
    Local,
)
from protocols.mqtt.session import DISPATCH

CLIENT_PACKETS = (Connect, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe,
                  PingReq, Disconnect, Auth)
SERVER_PACKETS = (Connack, SubAck, UnsubAck, PingResp)


def machine_in(state: ConnState) -> ConnectionMachine:
    """A machine brought to `state` by events, as a connection gets there."""
    m = ConnectionMachine()
    path = {
        ConnState.CONNECT_WAIT: [],
        ConnState.AUTHENTICATING: [Local.PASSWORD_CHECK],
        ConnState.CONNECTED: [Local.ACCEPT],
        ConnState.CLOSING: [Local.ACCEPT, Local.DISCONNECT_SENT],
        ConnState.CLOSED: [Local.CLOSE],
    }[state]
    for event in path:
        m.apply(event)
    assert m.state is state
    return m


def test_a_new_connection_waits_for_connect() -> None:
    assert ConnectionMachine().state is ConnState.CONNECT_WAIT


def test_the_life_of_a_connection() -> None:
    m = ConnectionMachine()
    assert m.apply(Connect) is ConnState.CONNECT_WAIT  # taken: no state change yet
    assert m.apply(Local.PASSWORD_CHECK) is ConnState.CONNECT_WAIT
    assert m.state is ConnState.AUTHENTICATING
    assert m.apply(Local.ACCEPT) is ConnState.AUTHENTICATING
    assert m.state is ConnState.CONNECTED
    for kind in (Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq,
                 Disconnect):
        assert m.apply(kind) is ConnState.CONNECTED
        assert m.state is ConnState.CONNECTED
    assert m.apply(Local.DISCONNECT_SENT) is ConnState.CONNECTED
    assert m.state is ConnState.CLOSING
    assert m.apply(Local.LINGER_OVER) is ConnState.CLOSING
    assert m.state is ConnState.CLOSED


@pytest.mark.parametrize(("path", "end"), [
    ([Local.ACCEPT], ConnState.CONNECTED),  # a fast login: no AUTHENTICATING
    ([Local.REFUSE], ConnState.CLOSED),  # CONNACK refused, no CONNECT, handshake timeout
    ([Local.PASSWORD_CHECK, Local.REFUSE], ConnState.CLOSED),  # bad password
    ([Local.PASSWORD_CHECK, Local.CLOSE], ConnState.CLOSED),  # lost during the check
    ([Local.ACCEPT, Local.CLOSE], ConnState.CLOSED),  # client DISCONNECT, 3.1.1 close
    ([Local.ACCEPT, Local.DISCONNECT_SENT, Local.CLOSE], ConnState.CLOSED),  # shutdown
    ([Local.CLOSE, Local.CLOSE], ConnState.CLOSED),  # lost after closing: still closed
])
def test_transitions(path: list[Local], end: ConnState) -> None:
    m = ConnectionMachine()
    for event in path:
        m.apply(event)
    assert m.state is end


def test_the_first_packet_must_be_connect() -> None:
    """[MQTT-3.1.0-1]: in CONNECT_WAIT anything but CONNECT is a protocol error."""
    for kind in CLIENT_PACKETS + SERVER_PACKETS:
        if kind is Connect:
            continue
        m = ConnectionMachine()
        with pytest.raises(ProtocolError) as err:
            m.apply(kind)
        assert err.value.reason is ReasonCode.PROTOCOL_ERROR
        assert "MQTT-3.1.0-1" in err.value.text
        assert m.state is ConnState.CONNECT_WAIT  # refusing does not move the machine


def test_a_second_connect_is_a_protocol_error() -> None:
    m = machine_in(ConnState.CONNECTED)
    with pytest.raises(ProtocolError) as err:
        m.apply(Connect)
    assert err.value.reason is ReasonCode.PROTOCOL_ERROR
    assert "MQTT-3.1.0-2" in err.value.text
    assert m.state is ConnState.CONNECTED


def test_auth_is_refused_no_enhanced_authentication() -> None:
    m = machine_in(ConnState.CONNECTED)
    with pytest.raises(ProtocolError) as err:
        m.apply(Auth)
    assert err.value.reason is ReasonCode.PROTOCOL_ERROR
    assert "MQTT-4.12.0-1" in err.value.text


@pytest.mark.parametrize("kind", SERVER_PACKETS)
def test_packets_only_a_server_sends_are_refused(kind: type) -> None:
    m = machine_in(ConnState.CONNECTED)
    with pytest.raises(ProtocolError) as err:
        m.apply(kind)
    assert err.value.reason is ReasonCode.PROTOCOL_ERROR
    assert err.value.text == f"unexpected {kind.__name__} from a client"


@pytest.mark.parametrize("state", [ConnState.AUTHENTICATING, ConnState.CLOSING,
                                   ConnState.CLOSED])
def test_states_that_take_no_packet(state: ConnState) -> None:
    m = machine_in(state)
    for kind in CLIENT_PACKETS:
        with pytest.raises(ProtocolError):
            m.apply(kind)
        assert m.state is state


def test_every_event_not_in_the_table_is_refused() -> None:
    """Each (state, local event) pair not in TRANSITIONS raises and leaves the state as it
    was; each pair in it leads where the table says."""
    refused = 0
    for state in ConnState:
        for event in Local:
            m = machine_in(state)
            nxt = TRANSITIONS[state].get(event)
            if nxt is None:
                refused += 1
                with pytest.raises(ProtocolError) as err:
                    m.apply(event)
                assert err.value.reason is ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
                assert m.state is state
            else:
                assert m.apply(event) is state and m.state is nxt
    # e.g. no ACCEPT once connected, no DISCONNECT_SENT before CONNACK, no way back from
    # CLOSED but CLOSE itself
    assert refused == len(ConnState) * len(Local) - sum(len(t) for t in TRANSITIONS.values())
    assert set(TRANSITIONS[ConnState.CLOSED]) == {Local.CLOSE}


def test_the_tables_cover_every_state() -> None:
    assert set(RECEIVES) == set(ConnState) == set(TRANSITIONS)
    assert READING == {s for s, kinds in RECEIVES.items() if kinds}
    assert HANDSHAKE == {s for s, t in TRANSITIONS.items() if Local.ACCEPT in t}
    assert not DROPPING & READING
    # the packet handlers are exactly what CONNECTED takes; the session's dispatch is the
    # machine's table, state by state
    assert set(handlers.TABLE) == RECEIVES[ConnState.CONNECTED]
    assert {s: set(d) for s, d in DISPATCH.items()} == {s: set(k) for s, k in RECEIVES.items()}


# -- the session consults it ---------------------------------------------------------------

def test_session_refuses_a_second_connect_with_the_machines_reason() -> None:
    c = World().client(MQTT_5)
    c.connect()
    c.send(Connect("c1", MQTT_5, True, 0, None, None, None))
    out = c.received()
    assert isinstance(out[-1], Disconnect) and out[-1].reason_code == ReasonCode.PROTOCOL_ERROR
    assert "MQTT-3.1.0-2" in (out[-1].properties.reason_string or "")
    assert c.session.state is ConnState.CLOSING


def test_session_closes_when_the_first_packet_is_not_connect() -> None:
    c = World().client(MQTT_311)
    c.send(PingReq())
    assert c.session.state is ConnState.CLOSED and c.session.data_to_send() == b""


def test_session_is_authenticating_while_a_password_check_runs() -> None:
    """A slow password check: the connection reads nothing more until it answers, then
    handles what waited (the SUBSCRIBE sent with the CONNECT) in order."""
    world = World()
    world.auth.inline_checks = False  # as the server: slow checks go to a worker thread
    c = world.client(MQTT_5)
    c.send(Connect("c1", MQTT_5, True, 0, None, "guest", b"guest"),
           Subscribe(1, (Subscription("a/b", 1),)))
    s = c.session
    check = s.password_check
    assert check is not None and s.state is ConnState.AUTHENTICATING
    assert s.data_to_send() == b""
    c.raw(b"")  # more input while the check runs is kept, not handled
    assert s.state is ConnState.AUTHENTICATING
    s.password_check = None  # what the I/O layer does (settle_password_check)
    check.finish(check.verify())
    s.resume_input()
    assert s.state is ConnState.CONNECTED
    out = c.received()
    assert [type(p) for p in out] == [Connack, SubAck] and out[0].reason_code == 0


def test_session_refused_after_a_slow_password_check() -> None:
    world = World()
    world.auth.inline_checks = False
    c = world.client(MQTT_5)
    c.send(Connect("c1", MQTT_5, True, 0, None, "guest", b"wrong"))
    s = c.session
    check = s.password_check
    assert check is not None and s.state is ConnState.AUTHENTICATING
    s.password_check = None
    check.finish(check.verify())
    s.resume_input()
    assert s.state is ConnState.CLOSED
    out = c.received()
    assert isinstance(out[0], Connack)
    assert out[0].reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


def test_connection_lost_during_the_password_check() -> None:
    world = World()
    world.auth.inline_checks = False
    c = world.client(MQTT_5)
    c.send(Connect("c1", MQTT_5, True, 0, None, "guest", b"guest"))
    s = c.session
    check = s.password_check
    assert check is not None
    s.connection_lost()
    assert s.state is ConnState.CLOSED
    s.password_check = None
    check.finish(check.verify())  # the answer comes to a closed connection: ignored
    assert s.state is ConnState.CLOSED and s.data_to_send() == b""
    assert not world.mqtt_state.active
