"""The broker's durability as protocols see it (`Broker.durable`) and the one confirms
tracker: store positions a publish reports, answers released in order once the disk has
them, only the waiting sessions woken after a group commit, keyed values through the core.
Over a real DiskStore; `flush` is one round of the server's store task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.helpers import flush, open_disk_broker, publish, restart
from gateway.core.broker import Broker
from gateway.core.confirms import Confirms


class Session:
    """What the store task wakes: a session keeping its answers in trackers."""

    def __init__(self, broker: Broker, trackers: int = 1) -> None:
        self.trackers: list[Confirms[str]] = [
            Confirms(broker.durable, self) for _ in range(trackers)]
        self.sent: list[str] = []
        self.pending_output = 0
        self.wake: Callable[[], None] = lambda: None  # (its connection's, in the server)

    def flush_confirms(self) -> None:
        for tracker in self.trackers:
            self.sent.extend(tracker.confirm())


def durable_queue(broker: Broker, name: str = "q") -> None:
    broker.vhost("/").declare_queue(name, durable=True)
    flush(broker.store)


def persistent(broker: Broker, body: str = "m", queue: str = "q") -> int:
    """Publish a persistent message to `queue`; the position its confirm waits for."""
    durable = broker.durable
    mark = durable.position
    publish(broker.vhost("/"), "", queue, body, delivery_mode=2)
    return durable.since(mark)


def test_publish_reports_the_position_its_result_waits_for(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    position = persistent(broker)
    assert position == broker.durable.position > broker.durable.reached()
    assert not broker.durable.is_durable(position)
    mark = broker.durable.position
    publish(broker.vhost("/"), "", "q", "transient")  # writes nothing: nothing to wait for
    publish(broker.vhost("/"), "", "nowhere", "x", delivery_mode=2)  # unrouted
    assert broker.durable.since(mark) == 0
    flush(broker.store)
    assert broker.durable.reached() >= position and broker.durable.is_durable(position)


def test_answers_go_in_order_once_their_positions_are_durable(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    s = Session(broker)
    tracker = s.trackers[0]
    tracker.insert(0, "before")  # nothing written: due at once
    tracker.insert(persistent(broker, "p1"), "p1")
    tracker.insert(0, "t1")  # nothing written, but behind p1
    assert list(tracker.confirm()) == ["before"]
    assert list(tracker.confirm()) == [] and len(tracker) == 2
    flush(broker.store)
    assert list(tracker.confirm()) == ["p1", "t1"] and len(tracker) == 0


def test_acked_before_written_is_confirmed_without_the_store_task(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    tracker = Session(broker).trackers[0]
    tracker.insert(persistent(broker), "p")
    q = broker.vhost("/").queues["q"]
    entry = q.get(False, 0.0)
    assert entry is not None
    q.ack(entry)  # settled while its records were pending: nothing left to write
    assert list(tracker.confirm()) == ["p"]


def test_only_the_sessions_waiting_for_what_became_durable_are_due(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    first, later, idle = Session(broker, trackers=2), Session(broker), Session(broker)
    assert broker.durable.due() == []
    first.trackers[0].insert(persistent(broker, "a"), "a")
    first.trackers[1].insert(persistent(broker, "b"), "b")  # another channel, same session
    batch = broker.store.take_batch()  # the store task is writing this batch...
    later.trackers[0].insert(persistent(broker, "c"), "c")  # ...when this one arrives
    broker.store.write_batch(batch)
    broker.store.committed(batch)
    due = broker.durable.due()
    assert due == [first]  # once, though two of its trackers waited; not later, not idle
    for session in due:
        session.flush_confirms()
    assert first.sent == ["a", "b"] and later.sent == [] and idle.sent == []
    assert broker.durable.due() == []
    flush(broker.store)
    assert broker.durable.due() == [later]
    later.flush_confirms()
    assert later.sent == ["c"] and broker.durable.waiting == 0


def test_a_batch_of_publishes_registers_its_tracker_once(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    s = Session(broker)
    for i in range(100):
        s.trackers[0].insert(persistent(broker, str(i)), str(i))
    assert broker.durable.waiting == 1
    flush(broker.store)
    assert broker.durable.due() == [s]
    s.flush_confirms()
    assert s.sent == [str(i) for i in range(100)] and broker.durable.waiting == 0


def test_a_tracker_left_waiting_registers_again_for_what_remains(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable_queue(broker)
    s = Session(broker)
    tracker = s.trackers[0]
    tracker.insert(persistent(broker, "a"), "a")
    batch = broker.store.take_batch()
    tracker.insert(persistent(broker, "b"), "b")
    broker.store.write_batch(batch)
    broker.store.committed(batch)
    assert broker.durable.due() == [s]
    s.flush_confirms()
    assert s.sent == ["a"] and broker.durable.waiting == 1  # for "b", now
    flush(broker.store)
    assert broker.durable.due() == [s]
    s.flush_confirms()
    assert s.sent == ["a", "b"]


def test_keyed_values_are_kept_through_the_core(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    durable = broker.durable
    durable.put_value("owned", ("/", "k"), 1)
    durable.put_value("owned", ("/", "gone"), 2)
    durable.put_value("left", ("/", "x"), "kept as read")
    durable.put_value("left", ("other", "y"), "dropped with its vhost")
    durable.delete_value("owned", ("/", "gone"))
    broker = restart(broker, tmp_path)
    broker.add_vhost("other")  # (the auth service keeps vhosts; here the test makes it)
    live = {("/", "k"): 1}
    assert broker.durable.claim_values("owned", lambda: dict(live)) == {("/", "k"): 1}
    live[("/", "new")] = 3  # the owner's state now, written by it
    broker.durable.put_value("owned", ("/", "new"), 3)
    broker.delete_vhost("other")
    snapshot = broker.snapshot()
    assert snapshot.values == {"owned": live, "left": {("/", "x"): "kept as read"}}
    broker.store.compact(snapshot)  # type: ignore[attr-defined]
    broker = restart(broker, tmp_path)
    assert broker.durable.claim_values("owned") == live
    assert broker.durable.claim_values("left") == {("/", "x"): "kept as read"}
