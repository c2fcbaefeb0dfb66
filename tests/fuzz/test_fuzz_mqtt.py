"""MQTT fuzzed through the real session, for 3.1.1 and 5.0 (clean and persistent): random
bytes before and after CONNECT, packets with a well-formed fixed header around a random
body, and byte edits of valid packets. Codec-only fuzzing is in
tests/mqtt/test_mqtt_codec.py; the oracle is fuzz/oracles.py."""

from __future__ import annotations

from fuzz_profile import EDIT, fuzz, mutate
from hypothesis import given
from hypothesis import strategies as st
from oracles import check_mqtt, mqtt_connect, run_mqtt
from seeds import mqtt_packets

from protocols.mqtt.codec import encode_packet
from protocols.mqtt.frames import MQTT_5, MQTT_311, Disconnect
from protocols.mqtt.wire import encode_varint

VERSIONS = st.sampled_from([(MQTT_311, True), (MQTT_311, False), (MQTT_5, True),
                            (MQTT_5, False)])
# the fixed-header flags each packet type must carry (PUBLISH: any)
FLAGS = {3: None, 6: 2, 8: 2, 10: 2}


@fuzz(300)
@given(st.binary(max_size=400), st.sampled_from([None, 1, 5]))
def test_random_bytes_before_connect(data: bytes, chunk: int | None) -> None:
    run_mqtt(data, chunk)


@fuzz(300)
@given(VERSIONS, st.binary(max_size=400), st.sampled_from([None, 1, 5]))
def test_random_bytes_after_connect(version: tuple[int, bool], data: bytes,
                                    chunk: int | None) -> None:
    run_mqtt(mqtt_connect(*version) + data, chunk)


@st.composite
def packet(draw: st.DrawFn) -> bytes:
    """A fixed header that is right for its packet type, then a random body."""
    ptype = draw(st.integers(0, 15))
    flags = FLAGS.get(ptype, 0)
    if flags is None or draw(st.integers(0, 9)) == 0:
        flags = draw(st.integers(0, 15))
    body = draw(st.binary(max_size=120))
    return bytes([ptype << 4 | flags]) + encode_varint(len(body)) + body


@fuzz(300)
@given(VERSIONS, st.lists(packet(), min_size=1, max_size=8))
def test_well_framed_packets_with_random_bodies(version: tuple[int, bool],
                                                packets: list[bytes]) -> None:
    run_mqtt(mqtt_connect(*version) + b"".join(packets))


@fuzz(300)
@given(VERSIONS, st.data())
def test_edits_of_valid_packets(version: tuple[int, bool], data: st.DataObject) -> None:
    level = version[0]
    pkts = [encode_packet(p, level) for p in mqtt_packets(level)]
    chosen = data.draw(st.lists(st.sampled_from(pkts), min_size=1, max_size=6))
    edits = data.draw(st.lists(EDIT, min_size=1, max_size=4))
    run_mqtt(mqtt_connect(*version) + mutate(b"".join(chosen), edits))


@fuzz(200)
@given(st.binary(max_size=200), st.lists(EDIT, max_size=3))
def test_edits_of_connect(tail: bytes, edits: list[tuple[str, int, int]]) -> None:
    for level in (MQTT_311, MQTT_5):
        run_mqtt(mutate(mqtt_connect(level, clean=False), edits) + tail)


@fuzz(200)
@given(st.binary(min_size=1, max_size=400))
def test_the_atheris_entry_reads_any_input(data: bytes) -> None:
    check_mqtt(data)


# -- crashes found by fuzz/fuzz_mqtt.py, as regression tests -----------------------------------

# MQTT 5, persistent session: SUBSCRIBE, then a PUBLISH whose topic alias is out of range
# (0x94, DISCONNECT), then more packets in the same read. The session went on handling
# them after its DISCONNECT and left a consumer on its queue once the connection was gone.
CRASH_AFTER_DISCONNECT = bytes.fromhex(
    "04821c0001000003612f2b0100012302000c2473686172652f672f732f230131330003612f6226020000001e"
    "03000a746578742f706c61696e080003722f7409000163233a01260001610001627061796c6f616432310003"
    "612f62000226020000001e03000a746578742f706c61696e080003722f740900016323000126000161000162"
    "6f6e6534310003262f62610300020000001e03000a746578742f706c61696e080003722f7409000163230001"
    "2600016100016274776f6202000340020001500200047002000531060003612f6200a20b8080808080808080"
    "8080808080808080808080808080808080808080808080808080808080808080808080808080808080808080"
    "0006000003612f2b00016c696173f00618000003230001616c696173f0061804150001782707040511000000"
    "0a")


def test_crash_packets_after_the_servers_disconnect_are_dropped() -> None:
    check_mqtt(CRASH_AFTER_DISCONNECT)
    from oracles import AUTH, CONFIG, MQTT_CONFIG, PEER, Clock, mqtt_output, mqtt_state_of

    from gateway.core.broker import Broker
    from gateway.store.base import MemoryStore
    from protocols.mqtt.machine import ConnState as State
    from protocols.mqtt.session import MQTTSession

    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = MQTTSession(broker, AUTH, MQTT_CONFIG, registry=mqtt_state_of(broker),
                          peer=PEER, loopback=True, clock=Clock())
    session.receive_data(mqtt_connect(MQTT_5, clean=False) + CRASH_AFTER_DISCONNECT[1:])
    out = mqtt_output(session.data_to_send(), MQTT_5)
    assert [type(p).__name__ for p in out] == ["Connack", "SubAck", "Disconnect"]
    assert isinstance(out[-1], Disconnect) and out[-1].reason_code == 0x94
    assert session.state is State.CLOSING
    session.connection_lost()
    # no session expiry interval: the session (and its queue) ended with the DISCONNECT
    assert not broker.vhost("/").queues


# MQTT 5: SUBSCRIBE with a shared subscription ($share/g's/#) among others, PUBLISHes that
# reach it, then a packet with bad fixed-header flags (0x81, DISCONNECT). Ending the session
# requeued the shared group's unacknowledged messages while this connection was still a
# member of the group, so one came straight back: a PUBLISH written after the DISCONNECT.
CRASH_SHARED_REQUEUE = bytes.fromhex(
    "04821c0001000003612f2b0100012302000c2473686172652f6727732f230131330003612f6226020000001e"
    "03000a746578742f706c61696e080003722f7409000163230001260001610001627061796c6f616431300003"
    "612f6200022602000100000000002fe501007a7a0005677565737400012302080c2473686172652f6727732f"
    "230133310003612f6226020000001e03000a746578740003612f62000226020001000000000075000567e501"
    "5959595959595959595959595959595959595959595959595959595959595959595959595959595959595959"
    "5959595959595959595959595959595959595959595959595959595959595959595959595959595959595959"
    "5959595959595959595959595959595959595959595959595959007578")


def test_crash_nothing_is_written_after_the_servers_disconnect() -> None:
    check_mqtt(CRASH_SHARED_REQUEUE)
    from oracles import AUTH, CONFIG, MQTT_CONFIG, PEER, Clock, mqtt_output, mqtt_state_of

    from gateway.core.broker import Broker
    from gateway.store.base import MemoryStore
    from protocols.mqtt.session import MQTTSession

    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = MQTTSession(broker, AUTH, MQTT_CONFIG, registry=mqtt_state_of(broker),
                          peer=PEER, loopback=True, clock=Clock())
    session.receive_data(mqtt_connect(MQTT_5) + CRASH_SHARED_REQUEUE[1:])
    out = mqtt_output(session.data_to_send(), MQTT_5)
    assert isinstance(out[-1], Disconnect) and out[-1].reason_code == 0x81
    session.connection_lost()
    assert session.data_to_send() == b""
