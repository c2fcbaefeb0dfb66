"""What of MQTT's own state the store keeps: retained messages and the QoS 2 exchanges of
persistent sessions.

The core keeps a persistent session's messages (its durable queue) and subscriptions (the
queue's bindings). What it cannot keep is where each QoS 2 exchange stands, which is what
exactly-once needs after a restart [MQTT-4.4.0-1]. These are keyed value records in the
store (space `mqtt.session`, key `(vhost, client id, direction, packet id)`):

- `out`, `[0, seq]`: a QoS 2 PUBLISH of the queue entry `seq` went out with this packet id
  and no PUBREC came back yet. Written before the PUBLISH leaves: the PUBLISH waits in the
  session's store-ordered output until the record is durable, so a client never holds a
  packet id the broker could forget. After a restart the entry is taken back out of the
  queue and sent again with DUP and the same packet id.
- `out`, `[1, seq]`: the client's PUBREC came; PUBREL is owed until PUBCOMP. Written before
  the queue entry is acked and before the PUBREL leaves (the PUBREL waits for it). After a
  restart PUBREL is sent again; were the ack lost with a torn write, `seq` is settled then.
- `in`, `0`: a QoS 2 PUBLISH from the client was taken and PUBREC'd, PUBREL not yet seen.
  Written after the message's own records, and the PUBREC waits for both: a repeat of the
  PUBLISH after a restart is answered, not routed again [MQTT-4.3.3-9]. The PUBREL deletes it,
  and the PUBCOMP waits for that, so a reused packet id is never taken for a repeat.

PUBCOMP deletes the `out` record. A session ended for good (clean start, expiry, a clean
session's end) deletes all of its records. Only sessions with an expiry (persistent ones)
write records, and `out` records only for entries persisted in the session's durable queue;
QoS 1 needs none (a message not PUBACKed is simply redelivered, with a new packet id and
DUP). A retained message sent at QoS 2 on SUBSCRIBE is not recorded: after a restart the
client gets it again by subscribing.

A persistent session's owner, the user who made it, is kept too (space `mqtt.owner`, key
`(vhost, client id)`, value the user name), so that after a restart as before it only
that user resumes the session; another user reusing the client id gets a fresh one.

Retained messages (space `mqtt.retained`) are written by `RetainedStore` itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from protocols.mqtt import retain
from protocols.mqtt.frames import MQTT_5, NO_PROPERTIES, Publish
from protocols.mqtt.mapping import from_core, routing_key_to_topic, topic_matches
from protocols.mqtt.session_state import Outgoing

if TYPE_CHECKING:
    from gateway.core.broker import Broker
    from gateway.core.queue import Entry, Queue
    from protocols.mqtt.connection import Connection
    from protocols.mqtt.registry import MQTTRegistry
    from protocols.mqtt.session_state import SessionState

SPACE = "mqtt.session"
OWNER_SPACE = "mqtt.owner"
OUT = "out"
IN = "in"
SENT = 0
RELEASED = 1


def take_over(registry: MQTTRegistry, broker: Broker) -> None:
    """Load what the store read back at start and keep it in every later snapshot."""
    values = broker.durable
    for (vhost, topic), value in values.claim_values(
            retain.SPACE, lambda: retained_values(registry)).items():
        registry.retained(vhost).load(retain.from_value(topic, value))
    for (vhost, client_id, direction, pid), value in values.claim_values(
            SPACE, lambda: session_values(registry)).items():
        registry.dormant.setdefault((vhost, client_id), {})[(direction, pid)] = value
    for (vhost, client_id), user in values.claim_values(
            OWNER_SPACE, lambda: dict(registry.owners)).items():
        if isinstance(user, str):
            registry.owners[(vhost, client_id)] = user
    broker.on_vhost_deleted.append(registry.vhost_deleted)


def retained_values(registry: MQTTRegistry) -> dict[tuple[Any, ...], Any]:
    """Every retained message, as a snapshot keeps it."""
    retained: dict[tuple[Any, ...], Any] = {}
    for store in registry.retained_stores():
        for m in store.all():
            retained[(store.vhost, m.topic)] = retain.to_value(m)
    return retained


def session_values(registry: MQTTRegistry) -> dict[tuple[Any, ...], Any]:
    """Every session record, as a snapshot keeps it."""
    sessions: dict[tuple[Any, ...], Any] = {}
    for (vhost, client_id), records in registry.dormant.items():
        for (direction, pid), value in records.items():
            sessions[(vhost, client_id, direction, pid)] = value
    for (vhost, client_id), st in registry.sessions.items():
        if not st.recorded:
            continue
        for pid, out in st.outgoing.items():
            if out.durable:
                stage = [RELEASED, None] if out.released else [SENT, _seq(out)]
                sessions[(vhost, client_id, OUT, pid)] = stage
        for pid in st.incoming_qos2:
            sessions[(vhost, client_id, IN, pid)] = 0
    return sessions


def _seq(out: Outgoing) -> int | None:
    return out.entry.seq if out.entry is not None else None


def _key(st: SessionState, direction: str, pid: int) -> tuple[str, str, str, int]:
    return (st.vhost, st.client_id, direction, pid)


# -- outgoing QoS 2 ------------------------------------------------------------------------

def recorded(s: Connection, qos: int, entry: Entry | None) -> bool:
    """Whether a PUBLISH of `entry` at `qos` is recorded (`sent`) before it goes out."""
    st = s.st
    return (qos == 2 and st is not None and st.expiry > 0 and entry is not None
            and entry.persisted and entry.queue.durable)


def sent(s: Connection, pid: int, out: Outgoing) -> int:
    """Record a QoS 2 PUBLISH about to go out (`recorded` said so). Returns the store
    position the PUBLISH must wait for."""
    st = s.st
    assert st is not None and out.entry is not None
    out.durable = True
    st.recorded = True
    durable = s.broker.durable
    durable.put_value(SPACE, _key(st, OUT, pid), [SENT, out.entry.seq])
    return durable.position


def released(s: Connection, pid: int, out: Outgoing) -> int:
    """PUBREC came: record that PUBREL is owed (before the entry's ack is written).
    Returns the position the PUBREL must wait for (0: none)."""
    st = s.st
    if not out.durable or st is None:
        return 0
    durable = s.broker.durable
    durable.put_value(SPACE, _key(st, OUT, pid), [RELEASED, _seq(out)])
    return durable.position


def completed(s: Connection, pid: int, out: Outgoing) -> None:
    st = s.st
    if out.durable and st is not None:
        s.broker.durable.delete_value(SPACE, _key(st, OUT, pid))


# -- incoming QoS 2 ------------------------------------------------------------------------

def received(s: Connection, pid: int) -> int:
    """A QoS 2 PUBLISH was taken: record its packet id (after the message's own records).
    Returns the position the PUBREC must wait for (0: none)."""
    st = s.st
    if st is None or not st.expiry:
        return 0
    st.recorded = True
    durable = s.broker.durable
    durable.put_value(SPACE, _key(st, IN, pid), 0)
    return durable.position


def incoming_released(s: Connection, pid: int) -> int:
    """PUBREL came: forget the packet id. Returns the position the PUBCOMP must wait for."""
    st = s.st
    if st is None or not st.recorded:
        return 0
    durable = s.broker.durable
    durable.delete_value(SPACE, _key(st, IN, pid))
    return durable.position


# -- a session's life ----------------------------------------------------------------------

def own(registry: MQTTRegistry, st: SessionState) -> None:
    """Record the owner of a persistent session (nothing for a clean one)."""
    key = (st.vhost, st.client_id)
    if st.expiry > 0 and registry.owners.get(key) != st.owner:
        registry.owners[key] = st.owner
        registry.durable.put_value(OWNER_SPACE, key, st.owner)


def _forget_owner(registry: MQTTRegistry, key: tuple[str, str]) -> None:
    if registry.owners.pop(key, None) is not None:
        registry.durable.delete_value(OWNER_SPACE, key)


def forget(registry: MQTTRegistry, st: SessionState) -> None:
    """The session ends for good: delete its records."""
    key = (st.vhost, st.client_id)
    _forget_owner(registry, key)
    records = registry.dormant.pop(key, None)
    if not st.recorded and not records:
        return
    durable = registry.durable
    pids = {(OUT, pid) for pid, out in st.outgoing.items() if out.durable}
    pids |= {(IN, pid) for pid in st.incoming_qos2}
    pids |= set(records or ())
    for direction, pid in sorted(pids):
        durable.delete_value(SPACE, (*key, direction, pid))
    st.recorded = False


def forget_dormant(registry: MQTTRegistry, vhost: str, client_id: str) -> None:
    """A clean start for a client whose session was read back at start."""
    _forget_owner(registry, (vhost, client_id))
    records = registry.dormant.pop((vhost, client_id), None)
    for direction, pid in sorted(records or ()):
        registry.durable.delete_value(SPACE, (vhost, client_id, direction, pid))


def resume(s: Connection, st: SessionState, queue: Queue | None,
           records: dict[tuple[str, int], Any]) -> None:
    """After a restart: rebuild the session's QoS 2 exchanges from its records. Entries
    sent before are taken out of the queue again (to go out with their packet ids)."""
    durable = s.broker.durable
    st.recorded = True
    pending: dict[int, int] = {}  # queue seq -> packet id, PUBLISH sent
    owed: list[int] = []
    for (direction, pid), value in records.items():
        if direction == IN:
            st.incoming_qos2.add(pid)
            continue
        stage, seq = value
        if stage == SENT and seq is not None:
            pending[seq] = pid
        else:
            owed.append(pid)
            if seq is not None:
                pending[seq] = -pid  # a torn write lost the entry's ack: settle it now
    taken = queue.take(set(pending)) if queue is not None else []
    for pid in sorted(owed):
        st.outgoing[pid] = Outgoing(Publish("", b"", 2, packet_id=pid), None, released=True,
                                    durable=True)
    for entry in taken:
        pid = pending.pop(entry.seq)
        if pid < 0:
            entry.queue.ack(entry)
            continue
        st.outgoing[pid] = Outgoing(_packet(s, st, entry, pid), entry, durable=True)
    for pid in pending.values():
        if pid > 0:  # its message is gone (acked, expired, or on a page not searched)
            durable.delete_value(SPACE, _key(st, OUT, pid))
    if st.outgoing:
        st.next_packet_id = max(st.outgoing) % 65535 + 1


def _packet(s: Connection, st: SessionState, entry: Entry, pid: int) -> Publish:
    """The PUBLISH of an entry that was in flight before a restart (sent again with DUP)."""
    msg = entry.message
    topic = routing_key_to_topic(msg.routing_key)
    props = NO_PROPERTIES
    if s.version == MQTT_5:
        ids = tuple(o.subscription_id for f, o in st.subscriptions.items()
                    if o.subscription_id is not None and topic_matches(f, topic))
        props = replace(from_core(msg), subscription_identifiers=ids)
    return Publish(topic, msg.body, 2, False, True, pid, props)
