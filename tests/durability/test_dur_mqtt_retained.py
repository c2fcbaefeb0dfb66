"""Retained messages through kill -9: a paho publisher sets and clears retained messages on
a set of topics (QoS 1, each PUBACK seen only once the broker has the message on disk), the
broker is killed with SIGKILL and restarted on the same data directory, and a new
subscriber then gets, for every topic, exactly one retained message: the latest one whose
PUBACK the publisher saw, or one sent after it (which may have reached the disk without its
PUBACK reaching the publisher), and nothing for a topic whose latest state is cleared.

The kill falls in the middle of a stream, right after the last PUBACK, and right after a
restart (the start rewrites the log as a compact snapshot, so that kill checks the snapshot
kept them), with clears (empty payloads) mixed in.
"""

from __future__ import annotations

from collections import Counter

from conftest import Broker

from durability.mqtt_crash_peers import V311, Peer, mqtt_port, wait_for

TOPICS = [f"dur/ret/{i}" for i in range(24)]
MARKER = "dur/ret-marker"  # not retained: arrives after every retained message


class History:
    """What was published to each topic, in order, and which of it was PUBACKed."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {t: [] for t in TOPICS}  # payload ("" clears)
        self.acked: dict[str, int] = {}  # topic -> index of its latest PUBACKed publish
        self.exact = 0  # topic checks that found exactly the latest PUBACKed state
        self.later = 0  # ... found a later one (sent, PUBACK not seen before the kill)
        self.lost = 0  # ... found an older state, or none where one was confirmed
        self.confirmed = 0  # PUBACKs seen

    def publish(self, peer: Peer, count: int, tag: str, clear_every: int = 0
                ) -> dict[int, tuple[str, int]]:
        mids: dict[int, tuple[str, int]] = {}
        for n in range(count):
            topic = TOPICS[n % len(TOPICS)]
            payload = "" if clear_every and n % clear_every == clear_every - 1 else f"{tag}-{n}"
            mids[peer.publish(topic, payload.encode(), 1, retain=True)] = (
                topic, len(self.sent[topic]))
            self.sent[topic].append(payload)
        return mids

    def note_acks(self, peer: Peer, mids: dict[int, tuple[str, int]]) -> None:
        with peer.lock:
            acked = [mids[m] for m in peer.puback_mids if m in mids]
        self.confirmed += len(acked)
        for topic, index in acked:
            self.acked[topic] = max(self.acked.get(topic, -1), index)

    def check(self, retained: dict[str, str]) -> list[str]:
        """Count what a reader found; returns the topics found in a state they must not be
        in (older than the latest PUBACKed one, or never sent)."""
        wrong: list[str] = []
        for topic in TOPICS:
            history = self.sent[topic]
            first = self.acked.get(topic)
            if first is None:
                continue  # nothing confirmed yet: any state it was ever in would do
            now = retained.get(topic, "")  # "": no retained message (cleared)
            if now == history[first]:
                self.exact += 1
            elif now in history[first + 1:]:
                self.later += 1
            else:
                self.lost += 1
                wrong.append(f"{topic}: {now!r}, latest PUBACKed {history[first]!r}")
        return wrong


def read_retained(broker: Broker) -> dict[str, str]:
    """A new subscriber's view: topic -> retained payload (one message per topic)."""
    sub = Peer(mqtt_port(broker), "dur-ret-reader", V311, clean=True)
    sub.open()
    sub.subscribe("dur/#", 1)
    sub.publish(MARKER, b"end", 1)
    assert wait_for(lambda: MARKER in [g.topic for g in sub.snapshot()]), "no marker"
    got = sub.snapshot()
    sub.close()
    retained = [g for g in got if g.retain]
    assert all(g.topic != MARKER for g in retained)
    counts = Counter(g.topic for g in retained)
    assert all(n == 1 for n in counts.values()), f"retained sent twice: {counts}"
    return {g.topic: g.payload for g in retained}


def test_retained_messages_survive_kill_9(fresh_broker: Broker) -> None:
    history = History()
    kills = 0
    # (messages, clear every n-th (0: none), PUBACKs to wait for before the kill: None = all)
    rounds: list[tuple[int, int, int | None]] = [
        (600, 0, 150), (240, 5, None), (0, 0, None), (480, 7, 120)]
    for r, (count, clear_every, point) in enumerate(rounds):
        pub = Peer(mqtt_port(fresh_broker), f"dur-ret-pub-{r}", V311, clean=True)
        pub.open()
        mids = history.publish(pub, count, f"r{r}", clear_every)
        want = count if point is None else point

        def reached(peer: Peer = pub, want: int = want) -> bool:
            with peer.lock:
                return len(peer.puback_mids) >= want

        assert wait_for(reached), f"round {r}: publisher made no progress"
        fresh_broker.stop(kill=True)
        kills += 1
        pub.close(graceful=False)
        history.note_acks(pub, mids)
        fresh_broker.start()
        later = history.later
        wrong = history.check(read_retained(fresh_broker))
        assert not wrong, f"round {r}: retained state lost: {wrong[:5]}"
        if point is None:  # every PUBACK was seen before the kill: exactly those states
            assert history.later == later
    assert len(history.acked) == len(TOPICS) and history.lost == 0
    published = sum(len(sent) for sent in history.sent.values())
    print(f"\nMQTT retained crash test: {kills} kills, {published} retained publishes, "
          f"{history.confirmed} PUBACKed, "
          f"{history.exact + history.later} topic checks, {history.lost} lost "
          f"({history.exact} exactly the latest PUBACKed, {history.later} a later one)")
