"""QoS 2 through kill -9 with the subscriber online: a paho publisher sends QoS 2 messages
(a PUBCOMP confirms one), a persistent paho subscriber (MQTT 5, session expiry, QoS 2)
receives them while the broker is killed with SIGKILL, the broker restarts on the same
data directory, and the subscriber reconnects with the same client object (which keeps its
half of the session: QoS 2 messages received and not yet released).

The broker keeps its half: which QoS 2 PUBLISHes are out and with which packet ids, and
which PUBRELs are owed. So after each restart the subscriber's application gets every
confirmed message, and each message it gets only once (paho hands a QoS 2 message over at
PUBREL). Counted over the whole run: confirmed, received, lost (must be 0), duplicates
(must be 0).

Kill points: in the middle of a stream (after some PUBCOMPs, most messages still to go);
once the subscriber is part way through a burst; with the subscriber stalled while it holds
QoS 2 messages it has PUBREC'd (it stops reading, so the PUBRELs the broker sent are never
read: the reconnect drops that socket, and only a PUBREL the broker kept and sends again
releases them; the kill waits until the publisher has had 50 more PUBCOMPs, so the
broker's acks of those deliveries are on disk by then); right after the last PUBCOMP; and
right after a restart (the subscriber not yet back). Every wait is a bounded deadline loop.
"""

from __future__ import annotations

from collections import Counter

from conftest import Broker

from durability.mqtt_crash_peers import V5, Peer, Stream, mqtt_port, wait_for

SUB = "dur-q2-online"
TOPIC = "dur/q2o/payments"
WAIT_ALL = 30.0


def test_qos2_exactly_once_subscriber_online_through_kill_9(fresh_broker: Broker) -> None:
    sub = Peer(mqtt_port(fresh_broker), SUB, V5, clean=False)
    sub.open(expiry=600)
    sub.subscribe("dur/q2o/#", 2)
    sent: set[str] = set()
    confirmed: set[str] = set()
    kills = 0
    in_flight_at_kill: list[int] = []  # confirmed or sent, not yet received, at each kill
    # (messages, the kill waits for: ("pub", n) PUBCOMPs / ("sub", n) received this round)
    held_at_kill: list[int] = []  # PUBREC'd by the subscriber, PUBREL not read
    rounds: list[tuple[int, tuple[str, int | None]]] = [
        (500, ("pub", 100)), (400, ("sub", 150)), (600, ("stall", 50)),
        (200, ("pub", None)), (0, ("pub", 0))]
    for r, (count, (who, point)) in enumerate(rounds):
        pub = Stream(fresh_broker, f"q2o-r{r}", V5, TOPIC, 2)
        before = len(sub.payloads())
        if who == "stall":
            sub.stall_when = lambda: sub.held() >= 5
        pub.send(count)
        want = count if point is None else point
        if who == "stall":
            assert sub.stalled.wait(WAIT_ALL), "the subscriber never held 5 messages"
            want = min(count, len(pub.confirmed()) + want)
            who = "pub"

        def reached(stream: Stream = pub, who: str = who, want: int = want,
                    before: int = before) -> bool:
            if who == "pub":
                return len(stream.confirmed()) >= want
            return len(sub.payloads()) - before >= want

        assert wait_for(reached, WAIT_ALL), f"round {r}: no progress"
        held_at_kill.append(sub.held())
        fresh_broker.stop(kill=True)
        kills += 1
        pub.peer.close(graceful=False)
        sent |= pub.sent()
        confirmed |= pub.confirmed()
        in_flight_at_kill.append(len(sent - set(sub.payloads())))
        fresh_broker.start()
        assert sub.reconnect(), f"round {r}: the session did not survive the restart"
    wait_for(lambda: confirmed <= set(sub.payloads()), WAIT_ALL)  # (checked below)
    sub.close()
    got = Counter(sub.payloads())
    lost = confirmed - set(got)
    duplicates = sorted(p for p, n in got.items() if n > 1)
    unknown = set(got) - sent
    print(f"\nMQTT QoS 2 crash test, subscriber online: {kills} kills, {len(sent)} sent, "
          f"{len(confirmed)} confirmed, {len(got)} received, {len(lost)} lost, "
          f"{len(duplicates)} duplicates; not yet received at each kill: {in_flight_at_kill}"
          f", held awaiting PUBREL: {held_at_kill}")
    assert not unknown, f"messages nobody sent: {sorted(unknown)[:5]}"
    assert not lost, f"lost {len(lost)} PUBCOMPed messages: {sorted(lost)[:5]}"
    assert not duplicates, f"delivered more than once: {duplicates[:5]}"
    assert len(confirmed) >= 350  # by construction: 100 + 50 + 200 at least
    assert held_at_kill[2] >= 5, "the stalled subscriber held nothing at the kill"
