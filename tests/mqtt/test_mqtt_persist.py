"""MQTT state that outlives the broker process, driven by packets over a real DiskStore:
retained messages and the QoS 2 exchanges of persistent sessions, through restarts that
write what was pending (a clean stop) or drop it (a crash), torn writes and compaction.

`crash` closes the store without writing its pending batch: what a SIGKILL leaves behind
when the batch was not yet on disk. `sync` is one round of the server's store task.
"""

from __future__ import annotations

from pathlib import Path

import trio
from core.helpers import flush
from mqtt_helpers import MQTT_5, MQTT_311, Client, World

from gateway.server.app import Durability
from gateway.store.disk import DiskStore
from gateway.store.records import read_records as _read_records
from protocols.mqtt.frames import (
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
)


def boot(path: Path) -> World:
    w = World(DiskStore(path, fsync=False))
    w.broker.recover(w.clock.now)
    return w


def sync(w: World, *clients: Client) -> None:
    flush(w.store)
    for c in clients:
        c.session.flush_confirms()


def crash(w: World) -> None:
    w.store.take_batch()  # never written
    w.store.close()


def stop(w: World) -> None:
    flush(w.store)
    w.store.close()


def publishes(packets: list[object]) -> list[Publish]:
    return [p for p in packets if isinstance(p, Publish)]


# -- retained ------------------------------------------------------------------------------

def test_retained_messages_survive_restart_crash_and_compaction(tmp_path: Path) -> None:
    w = boot(tmp_path)
    pub = w.client(MQTT_5)
    pub.connect("pub")
    props = Properties(content_type="text/plain", user_properties=(("k", "v"),),
                       message_expiry_interval=3600)
    pub.send(Publish("a/b", b"first", 1, True, packet_id=1),
             Publish("a/b", b"latest", 1, True, packet_id=2, properties=props),
             Publish("a/c", b"soon cleared", 1, True, packet_id=3),
             Publish("a/q0", b"qos 0", 0, True),
             Publish("a/q2", b"qos 2", 2, True, packet_id=6))
    assert pub.received() == []  # PUBACK / PUBREC wait for the retained message on disk
    sync(w, pub)
    acks = pub.received()  # (0x10: no subscribers; the retained message is kept)
    assert [(type(a), a.packet_id) for a in acks] == [
        (PubAck, 1), (PubAck, 2), (PubAck, 3), (PubRec, 6)]
    pub.send(Publish("a/c", b"", 1, True, packet_id=4))  # clears a/c
    sync(w, pub)
    assert [(type(a), a.packet_id) for a in pub.received()] == [(PubAck, 4)]
    pub.send(Publish("a/lost", b"never acked", 1, True, packet_id=5))
    assert pub.received() == []
    crash(w)

    w = boot(tmp_path)
    # compaction before any MQTT client is back, then after: both keep them
    w.store.compact(w.broker.snapshot())  # type: ignore[attr-defined]
    sub = w.client(MQTT_5)
    sub.connect("sub")
    w.store.compact(w.broker.snapshot())  # type: ignore[attr-defined]
    stop(w)

    w = boot(tmp_path)
    sub = w.client(MQTT_5)
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("a/#", 1),)))
    got = {p.topic: p for p in publishes(sub.received())}
    assert sorted(got) == ["a/b", "a/q0", "a/q2"]
    latest = got["a/b"]
    assert latest.payload == b"latest" and latest.retain and latest.qos == 1
    assert latest.properties.content_type == "text/plain"
    assert latest.properties.user_properties == (("k", "v"),)
    assert 3590 <= (latest.properties.message_expiry_interval or 0) <= 3600
    assert got["a/q0"].payload == b"qos 0" and got["a/q0"].qos == 0
    assert got["a/q2"].payload == b"qos 2" and got["a/q2"].qos == 1  # granted QoS 1


def test_retained_clear_and_expiry_are_durable(tmp_path: Path) -> None:
    w = boot(tmp_path)
    pub = w.client(MQTT_5)
    pub.connect("pub")
    pub.send(Publish("x", b"1", 0, True),
             Publish("y", b"2", 0, True, properties=Properties(message_expiry_interval=5)))
    sync(w)
    w.clock.now += 10
    sub = w.client(MQTT_5)
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("y", 0),)))
    assert publishes(sub.received()) == []  # expired: dropped from the store as well
    pub.send(Publish("x", b"", 0, True))
    stop(w)
    w = boot(tmp_path)
    w.clock.now = 0  # were y still on disk, it would look alive now
    sub = w.client()
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("#", 0),)))
    assert publishes(sub.received()) == []


# -- QoS 2 to a persistent session ---------------------------------------------------------

def subscriber(w: World, version: int = MQTT_311) -> Client:
    sub = w.client(version)
    if version == MQTT_5:
        sub.connect("sub", clean=False, properties=Properties(session_expiry_interval=600))
    else:
        sub.connect("sub", clean=False)
    return sub


def test_qos2_in_flight_survives_a_crash(tmp_path: Path) -> None:
    w = boot(tmp_path)
    sub = subscriber(w)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    sub.received()
    pub = w.client()
    pub.connect("pub")
    pub.send(*(Publish("t", f"m{i}".encode(), 1, packet_id=i) for i in (1, 2, 3)))
    sync(w, pub, sub)
    first = publishes(sub.received())
    assert [p.payload for p in first] == [b"m1", b"m2", b"m3"]
    # QoS 1 published, QoS 2 granted: delivered at QoS 1 ...
    assert {p.qos for p in first} == {1}
    sub.send(*(PubAck(p.packet_id or 0) for p in first))

    pub.send(*(Publish("t", f"n{i}".encode(), 2, packet_id=i) for i in (1, 2, 3)))
    # ... QoS 2: the PUBLISH leaves only once its packet id is on disk
    assert publishes(sub.received()) == []
    sync(w, pub, sub)
    n1, n2, n3 = publishes(sub.received())
    assert [n1.payload, n2.payload, n3.payload] == [b"n1", b"n2", b"n3"]
    sub.send(PubRec(n1.packet_id or 0))
    assert sub.received() == []  # PUBREL waits for its record too
    sync(w, sub)
    assert sub.received() == [PubRel(n1.packet_id or 0)]
    sub.send(PubRec(n2.packet_id or 0))  # the record of this one is lost in the crash
    crash(w)

    w = boot(tmp_path)
    sub = subscriber(w)
    again = sub.received()
    assert again == [PubRel(n1.packet_id or 0),
                     Publish("t", b"n2", 2, False, True, n2.packet_id),
                     Publish("t", b"n3", 2, False, True, n3.packet_id)]
    sub.send(PubComp(n1.packet_id or 0), PubRec(n2.packet_id or 0))
    sync(w, sub)
    assert sub.received() == [PubRel(n2.packet_id or 0)]
    sub.send(PubComp(n2.packet_id or 0))
    stop(w)

    w = boot(tmp_path)
    sub = subscriber(w)
    # n1 and n2 completed; n3 still waits for its PUBREC, and nothing else comes
    assert sub.received() == [Publish("t", b"n3", 2, False, True, n3.packet_id)]
    sub.send(PubRec(n3.packet_id or 0))
    sync(w, sub)
    sub.send(PubComp(n3.packet_id or 0))
    stop(w)
    w = boot(tmp_path)
    assert subscriber(w).received() == []


def test_torn_write_between_pubrel_record_and_ack(tmp_path: Path) -> None:
    """The PUBREL-owed record is written before the entry's ack; a crash that keeps the one
    and tears off the other still settles the entry after the restart."""
    w = boot(tmp_path)
    sub = subscriber(w, MQTT_5)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("t", b"once", 2, packet_id=9), PubRel(9))
    sync(w, pub, sub)
    (p,) = publishes(sub.received())
    sub.send(PubRec(p.packet_id or 0))
    batch = w.store.take_batch()  # type: ignore[attr-defined]
    records, _ = _read_records(batch.data)
    assert [kind for kind, _ in records] == [19, 9]  # PUT_VALUE (PUBREL owed), then ACK
    first_len = int.from_bytes(batch.data[:4], "big") + 8
    w.store.write_batch(type(batch)(batch.data[:first_len + 5], batch.upto))  # type: ignore[attr-defined]
    w.store.close()

    w = boot(tmp_path)
    sub = subscriber(w, MQTT_5)
    sync(w, sub)  # (the resent PUBREL waits behind the ack written at the restart)
    assert sub.received() == [PubRel(p.packet_id or 0)]
    sub.send(PubComp(p.packet_id or 0))
    stop(w)
    w = boot(tmp_path)
    assert subscriber(w, MQTT_5).received() == []


def test_incoming_qos2_from_a_persistent_session_is_not_routed_twice(tmp_path: Path) -> None:
    w = boot(tmp_path)
    sub = subscriber(w)
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    pub = w.client()
    pub.connect("pub", clean=False)
    pub.send(Publish("t", b"exactly once", 2, packet_id=7))
    sync(w, pub)
    assert pub.received() == [PubRec(7)]
    crash(w)  # before the publisher's PUBREL

    w = boot(tmp_path)
    pub = w.client()
    assert pub.connect("pub", clean=False).session_present
    pub.send(Publish("t", b"exactly once", 2, dup=True, packet_id=7))
    sync(w, pub)
    assert pub.received() == [PubRec(7)]  # answered, not routed again
    pub.send(PubRel(7))
    assert pub.received() == []  # the PUBCOMP waits for the packet id to be forgotten
    sync(w, pub)
    assert pub.received() == [PubComp(7)]
    stop(w)

    w = boot(tmp_path)
    pub = w.client()
    pub.connect("pub", clean=False)
    pub.send(Publish("t", b"new one, same id", 2, packet_id=7), PubRel(7))
    sync(w, pub)
    sub = subscriber(w)
    assert [p.payload for p in publishes(sub.received())] == [b"exactly once",
                                                              b"new one, same id"]


def test_clean_start_after_a_restart_ends_the_old_session(tmp_path: Path) -> None:
    w = boot(tmp_path)
    sub = subscriber(w)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    pub = w.client()
    pub.connect("pub")
    pub.send(Publish("t", b"old", 2, packet_id=1), PubRel(1))
    sync(w, pub, sub)
    assert len(publishes(sub.received())) == 1
    stop(w)

    w = boot(tmp_path)
    fresh = w.client()
    assert not fresh.connect("sub", clean=True).session_present
    fresh.send(Subscribe(1, (Subscription("t", 2),)))
    assert publishes(fresh.received()) == []
    stop(w)
    w = boot(tmp_path)
    assert not w.client().connect("sub", clean=False).session_present


# -- the store task wakes the sessions that wait -------------------------------------------

def store_task(w: World) -> None:
    """One round of the server's store task itself: write, then wake who waited."""
    trio.run(Durability(w.store, w.broker).flush)


def test_the_store_task_wakes_the_sessions_waiting_for_the_disk(tmp_path: Path) -> None:
    w = boot(tmp_path)
    sub = subscriber(w)
    sub.send(Subscribe(1, (Subscription("t", 2),)))
    sub.received()
    idle = w.client()
    idle.connect("idle")
    pub = w.client()
    pub.connect("pub")
    store_task(w)
    pub.send(Publish("t", b"q1", 1, packet_id=1))
    assert pub.received() == [] and w.broker.durable.waiting == 1  # pub's tracker only
    store_task(w)  # no session flushes by hand from here on
    assert pub.received() == [PubAck(1)]
    assert [p.payload for p in publishes(sub.received())] == [b"q1"]
    sub.send(PubAck(1))
    # QoS 2 to the persistent session: its PUBLISH waits for the packet id's record, put
    # in the subscriber's tracker by the publisher's input, not by the subscriber's own
    pub.send(Publish("t", b"q2", 2, packet_id=2))
    assert sub.received() == [] and pub.received() == []
    store_task(w)
    assert pub.received() == [PubRec(2)]
    (out,) = publishes(sub.received())
    assert out.payload == b"q2" and out.qos == 2
    sub.send(PubRec(out.packet_id or 0))
    assert sub.received() == []  # the PUBREL waits for its record
    store_task(w)
    assert sub.received() == [PubRel(out.packet_id or 0)]
    assert idle.received() == [] and w.broker.durable.waiting == 0
    stop(w)
