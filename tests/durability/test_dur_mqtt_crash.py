"""MQTT crash tests: a broker process killed with SIGKILL while paho clients publish QoS 1
and QoS 2 messages to a persistent session, then restarted on the same data directory.

A PUBACK (QoS 1) or PUBCOMP (QoS 2) tells the publisher the broker owns the message. After
every restart the subscriber reconnects with the same client id and without a clean start:

- QoS 1: every message the publisher had a PUBACK for arrives (again, if it had been
  delivered and not acknowledged, then with DUP set); a message the subscriber had already
  acknowledged may come back too (at-least-once), nothing nobody sent ever does.
- QoS 2: every message the publisher had a PUBCOMP for reaches the subscriber's application
  exactly once over the whole run, kills included (the subscriber is offline at each kill;
  with the subscriber online, see `test_dur_mqtt_qos2_online.py`).

The kill falls at different points: in the middle of a stream of publishes, right after the
last PUBACK, right after a restart (before any client is back), and (QoS 1) while the
subscriber is online and acknowledging slowly. Every wait is a bounded deadline loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from conftest import Broker

from durability.mqtt_crash_peers import V5, V311, Got, Peer, Stream, mqtt_port, wait_for


@dataclass
class Ledger:
    sent: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)  # the subscriber sent PUBACK / got PUBREL
    held: set[str] = field(default_factory=set)  # delivered, not acknowledged, at a kill
    delivered: Counter[str] = field(default_factory=Counter)  # all deliveries, all rounds
    lost: int = 0
    redelivered_dup: int = 0
    duplicates: int = 0
    kills: int = 0


def kill_and_restart(broker: Broker, ledger: Ledger, *peers: Peer) -> None:
    """SIGKILL the broker, let the clients notice, start it again on the same data."""
    broker.stop(kill=True)
    ledger.kills += 1
    for peer in peers:
        peer.close(graceful=False)
    broker.start()


def note_stream(ledger: Ledger, stream: Stream) -> None:
    ledger.sent |= stream.sent()
    ledger.confirmed |= stream.confirmed()


def note_subscriber(ledger: Ledger, sub: Peer, qos: int) -> None:
    """What the subscriber's application got from one connection."""
    with sub.lock:
        got = list(sub.got)
        unacked = dict(sub.unacked)
    for g in got:
        ledger.delivered[g.payload] += 1
    if qos == 1:
        ledger.acked |= {g.payload for g in got} - set(unacked)
        ledger.held = set(unacked)
    else:
        ledger.acked |= {g.payload for g in got}


# -- QoS 1 ---------------------------------------------------------------------------------

SUB1 = "dur-q1-sub"
TOPIC1 = "dur/q1/orders"


def drain_q1(broker: Broker, ledger: Ledger, ack: Callable[[Got], bool]) -> Peer:
    """Resume the subscriber's session after a restart and check what comes back: every
    confirmed message not yet acknowledged, DUP set on those it had held; returns the
    subscriber, still connected (acking with `ack` from now on)."""
    sub = Peer(mqtt_port(broker), SUB1, V311, clean=False, ack=ack)
    assert sub.open(), "the persistent session did not survive the restart"
    must = ledger.confirmed - ledger.acked
    wait_for(lambda: must <= set(sub.payloads()))
    with sub.lock:
        got = list(sub.got)
    seen = {g.payload: g for g in got}
    missing = must - set(seen)
    ledger.lost += len(missing)
    assert not missing, f"lost {len(missing)} PUBACKed messages: {sorted(missing)[:5]}"
    unknown = set(seen) - ledger.sent
    assert not unknown, f"messages nobody sent: {sorted(unknown)[:5]}"
    for payload in ledger.held:
        if payload in seen:
            assert seen[payload].dup, f"{payload} redelivered without DUP"
            ledger.redelivered_dup += 1
    return sub


def test_qos1_persistent_session_survives_kill_9(fresh_broker: Broker) -> None:
    ledger = Ledger()
    # the subscriber's session: persistent, subscribed at QoS 1, then offline
    sub = Peer(mqtt_port(fresh_broker), SUB1, V311, clean=False, ack=lambda g: True)
    sub.open()
    sub.subscribe("dur/q1/#", 1)
    sub.close()

    # round 1: subscriber offline, kill in the middle of the stream
    pub = Stream(fresh_broker, "q1-r1", V311, TOPIC1, 1)
    pub.send(600)
    assert wait_for(lambda: len(pub.confirmed()) >= 150), "publisher made no progress"
    kill_and_restart(fresh_broker, ledger, pub.peer)
    note_stream(ledger, pub)
    assert len(ledger.sent) > len(ledger.confirmed) >= 150

    # round 2: the subscriber comes back and acks every other message only (slow); more
    # messages flow to it while it holds those; kill right after the last PUBACK
    sub = drain_q1(fresh_broker, ledger, ack=lambda g: int(g.payload.rsplit("-", 1)[1]) % 2 == 0)
    pub = Stream(fresh_broker, "q1-r2", V311, TOPIC1, 1)
    pub.send(200)
    assert wait_for(lambda: len(pub.confirmed()) == 200), "not every publish confirmed"
    kill_and_restart(fresh_broker, ledger, pub.peer, sub)
    note_stream(ledger, pub)
    note_subscriber(ledger, sub, 1)
    assert ledger.held, "the slow subscriber held nothing at the kill"

    # round 3: kill right after the restart, before any client is back
    held_before = set(ledger.held)
    kill_and_restart(fresh_broker, ledger)

    # round 4: the subscriber is back, acks everything; a stream runs and is killed midway
    sub = drain_q1(fresh_broker, ledger, ack=lambda g: True)
    assert held_before and ledger.redelivered_dup >= len(held_before)
    pub = Stream(fresh_broker, "q1-r4", V311, TOPIC1, 1)
    pub.send(400)
    assert wait_for(lambda: len(pub.confirmed()) >= 100), "publisher made no progress"
    kill_and_restart(fresh_broker, ledger, pub.peer, sub)
    note_stream(ledger, pub)
    note_subscriber(ledger, sub, 1)

    # final: everything confirmed and not acknowledged comes back
    sub = drain_q1(fresh_broker, ledger, ack=lambda g: True)
    note_subscriber(ledger, sub, 1)
    sub.close()
    never = ledger.confirmed - set(ledger.delivered)
    assert not never, f"confirmed but never delivered: {sorted(never)[:5]}"
    assert ledger.lost == 0
    print(f"\nMQTT QoS 1 crash test: {ledger.kills} kills, {len(ledger.sent)} sent, "
          f"{len(ledger.confirmed)} confirmed, {ledger.lost} lost, "
          f"{ledger.redelivered_dup} held messages redelivered with DUP, "
          f"{sum(ledger.delivered.values()) - len(ledger.delivered)} deliveries beyond one")


# -- QoS 2 ---------------------------------------------------------------------------------

SUB2 = "dur-q2-sub"
TOPIC2 = "dur/q2/payments"


def drain_q2(broker: Broker, ledger: Ledger) -> Peer:
    """Resume the MQTT 5 session after a restart: every confirmed message not yet received
    arrives, none that was received arrives again."""
    sub = Peer(mqtt_port(broker), SUB2, V5, clean=False)
    assert sub.open(), "the persistent session did not survive the restart"
    must = ledger.confirmed - set(ledger.delivered)
    wait_for(lambda: must <= set(sub.payloads()))
    return sub


def check_q2(ledger: Ledger, sub: Peer) -> None:
    before = Counter(ledger.delivered)
    note_subscriber(ledger, sub, 2)
    now = set(ledger.delivered)
    missing = ledger.confirmed - now
    ledger.lost = len(missing)
    twice = sorted(p for p, n in ledger.delivered.items() if n > 1)
    ledger.duplicates = len(twice)
    assert not twice, (f"QoS 2 messages delivered more than once: {twice[:5]} "
                       f"(before this connection: {[before[p] for p in twice[:5]]})")
    unknown = now - ledger.sent
    assert not unknown, f"messages nobody sent: {sorted(unknown)[:5]}"


def test_qos2_exactly_once_offline_subscriber_through_kill_9(fresh_broker: Broker) -> None:
    """QoS 2 with the subscriber offline at every kill (it drains after each restart and
    leaves cleanly): exactly once."""
    ledger = Ledger()
    sub = Peer(mqtt_port(fresh_broker), SUB2, V5, clean=False)
    sub.open()
    sub.subscribe("dur/q2/#", 2)
    sub.close()
    # (messages to send, PUBCOMPs to wait for before the kill: None = all of them)
    rounds: list[tuple[int, int | None]] = [(500, 120), (200, None), (0, 0), (400, 100)]
    for r, (count, point) in enumerate(rounds):
        pub = Stream(fresh_broker, f"q2-r{r}", V5, TOPIC2, 2)
        pub.send(count)
        target = count if point is None else point

        def reached(stream: Stream = pub, want: int = target) -> bool:
            return len(stream.confirmed()) >= want

        assert wait_for(reached), "publisher made no progress"
        kill_and_restart(fresh_broker, ledger, pub.peer)
        note_stream(ledger, pub)
        sub = drain_q2(fresh_broker, ledger)
        sub.close()
        check_q2(ledger, sub)
        assert ledger.lost == 0, f"round {r}: lost {ledger.lost} PUBCOMPed messages"
    assert ledger.duplicates == 0
    assert len(ledger.confirmed) >= 420
    print(f"\nMQTT QoS 2 crash test: {ledger.kills} kills, {len(ledger.sent)} sent, "
          f"{len(ledger.confirmed)} confirmed, {ledger.lost} lost, "
          f"{ledger.duplicates} delivered twice")
