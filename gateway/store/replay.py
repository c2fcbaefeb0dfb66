"""Recovery: the state a log's records build (`replay`), and the recovered queues' message
lists, which read each message from the log only when the broker takes it
(`RecoveredEntries`; `gateway.store.disk` explains why recovery streams).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from gateway.store.base import (
    PROPERTY_FIELDS,
    BindingRecord,
    DelayedRecord,
    ExchangeRecord,
    LimitsRecord,
    MessageRecord,
    PermissionRecord,
    PolicyRecord,
    QueueRecord,
    Recovered,
    TopicPermissionRecord,
    UserRecord,
)
from gateway.store.records import (
    ACK,
    DEL_BINDING,
    DEL_DELAYED,
    DEL_EXCHANGE,
    DEL_LIMITS,
    DEL_PERMISSION,
    DEL_POLICY,
    DEL_QUEUE,
    DEL_TOPIC_PERMISSION,
    DEL_USER,
    DEL_VALUE,
    DEL_VHOST,
    DELIVERED,
    ENQUEUE,
    MESSAGE,
    PUT_BINDING,
    PUT_DELAYED,
    PUT_EXCHANGE,
    PUT_LIMITS,
    PUT_PERMISSION,
    PUT_POLICY,
    PUT_QUEUE,
    PUT_TOPIC_PERMISSION,
    PUT_USER,
    PUT_VALUE,
    PUT_VHOST,
    SEEDED,
    pread_all,
)
from gateway.store.serial import decode


class RecoveredEntries(Sequence[tuple[int, MessageRecord]]):
    """One queue's recovered messages, (seq, message) in seq order, each read from the log
    only when asked for (see the module docstring: recovery streams)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._seqs = array("q")
        self._offsets = array("q")
        self._lengths = array("q")

    def add(self, seq: int, offset: int, length: int) -> None:
        self._seqs.append(seq)
        self._offsets.append(offset)
        self._lengths.append(length)

    def __len__(self) -> int:
        return len(self._seqs)

    def _load(self, i: int) -> tuple[int, MessageRecord]:
        frame = pread_all(self._fd, self._lengths[i], self._offsets[i])
        return self._seqs[i], _message_record(decode(frame[9:]))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._load(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._load(i)

    def __iter__(self) -> Iterator[tuple[int, MessageRecord]]:
        for i in range(len(self)):
            yield self._load(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecoveredEntries({list(self)!r})"


def _message_record(p: Any) -> MessageRecord:
    props = dict(zip(PROPERTY_FIELDS, p[3], strict=False))
    return MessageRecord(p[0], p[1], p[2], props, p[4], p[5])


def replay(records: Iterable[tuple[int, Any, int, int]]
            ) -> tuple[Recovered, dict[tuple[str, str], dict[int, int]],
                       dict[int, tuple[int, int]]]:
    """The state a log's records build, without messages; and, apart, each live queue's
    entries (seq -> message id) and where each message record lies (id -> offset, length)."""
    exchanges: dict[tuple[str, str], ExchangeRecord] = {}
    queues: dict[tuple[str, str], QueueRecord] = {}
    bindings: dict[tuple[Any, ...], BindingRecord] = {}
    located: dict[int, tuple[int, int]] = {}
    entries: dict[tuple[str, str], dict[int, int]] = {}
    marks: dict[tuple[str, str], set[int]] = {}  # delivered marks of live entries
    users: dict[str, UserRecord] = {}
    vhosts: dict[str, None] = {}
    perms: dict[tuple[str, str], PermissionRecord] = {}
    topic_perms: dict[tuple[str, str, str], TopicPermissionRecord] = {}
    limits: dict[tuple[str, str], LimitsRecord] = {}
    policies: dict[tuple[str, str], PolicyRecord] = {}
    values: dict[str, dict[tuple[Any, ...], Any]] = {}
    delayed: dict[tuple[str, int], DelayedRecord] = {}  # (vhost, message id) -> held message
    seeded = False
    max_id = 0
    for kind, p, offset, length in records:
        if kind == PUT_VALUE:
            values.setdefault(p[0], {})[tuple(p[1])] = p[2]
            continue
        if kind == DEL_VALUE:
            values.get(p[0], {}).pop(tuple(p[1]), None)
            continue
        if kind == PUT_DELAYED:
            delayed[(p[0], p[3])] = DelayedRecord(p[0], p[1], p[2], _message_record(p[3:]))
            max_id = max(max_id, p[3])
            continue
        if kind == DEL_DELAYED:
            delayed.pop((p[0], p[1]), None)
            continue
        if kind in (PUT_LIMITS, DEL_LIMITS):
            if kind == PUT_LIMITS:
                limits[(p[0], p[1])] = LimitsRecord(p[0], p[1], dict(p[2]))
            else:
                limits.pop((p[0], p[1]), None)
            continue
        if kind in (DEL_USER, DEL_VHOST):
            limits.pop(("user" if kind == DEL_USER else "vhost", p[0]), None)
        if kind == DELIVERED:
            q = entries.get((p[0], p[1]))
            if q is not None:
                seqs = struct.unpack(f">{len(p[2]) // 8}q", p[2])
                marked = marks.setdefault((p[0], p[1]), set())
                marked.update(seq for seq in seqs if seq in q)
            continue
        if kind >= PUT_USER:
            seeded = _replay_auth(kind, p, users, vhosts, (perms, topic_perms),
                                  policies) or seeded
            if kind == DEL_VHOST:
                for d in (exchanges, queues, entries, marks):
                    for key in [k for k in d if k[0] == p[0]]:
                        del d[key]
                for bkey in [k for k, b in bindings.items() if b.vhost == p[0]]:
                    del bindings[bkey]
                for space in values.values():
                    for vkey in [k for k in space if k and k[0] == p[0]]:
                        del space[vkey]
                for dkey in [k for k in delayed if k[0] == p[0]]:
                    del delayed[dkey]
            continue
        if kind == PUT_EXCHANGE:
            exchanges[(p[0], p[1])] = ExchangeRecord(p[0], p[1], p[2], p[3], p[4], p[5])
        elif kind == DEL_EXCHANGE:
            exchanges.pop((p[0], p[1]), None)
            for dkey in [k for k, d in delayed.items() if k[0] == p[0] and d.exchange == p[1]]:
                del delayed[dkey]
        elif kind == PUT_QUEUE:
            queues[(p[0], p[1])] = QueueRecord(p[0], p[1], p[2], p[3])
            entries.setdefault((p[0], p[1]), {})
        elif kind == DEL_QUEUE:
            queues.pop((p[0], p[1]), None)
            entries.pop((p[0], p[1]), None)
            marks.pop((p[0], p[1]), None)
        elif kind in (PUT_BINDING, DEL_BINDING):
            rec = BindingRecord(p[0], p[1], p[2], p[3], p[4], p[5])
            if kind == PUT_BINDING:
                bindings[rec.key()] = rec
            else:
                bindings.pop(rec.key(), None)
        elif kind == MESSAGE:
            located[p[0]] = (offset, length)
            max_id = max(max_id, p[0])
        elif kind == ENQUEUE:
            q = entries.get((p[0], p[1]))
            if q is not None:
                q[p[2]] = p[3]
        elif kind == ACK:
            q = entries.get((p[0], p[1]))
            if q is not None:
                q.pop(p[2], None)
                m = marks.get((p[0], p[1]))
                if m is not None:
                    m.discard(p[2])
    state = Recovered(max_message_id=max_id, seeded=seeded)
    state.values = {space: d for space, d in values.items() if d}
    state.users = list(users.values())
    state.vhosts = list(vhosts)
    state.permissions = list(perms.values())
    state.topic_permissions = list(topic_perms.values())
    state.limits = list(limits.values())
    state.policies = list(policies.values())
    state.exchanges = list(exchanges.values())
    state.delayed = list(delayed.values())
    state.queues = list(queues.values())
    live_x = {(x.vhost, x.name) for x in state.exchanges}
    for b in bindings.values():
        dest_ok = ((b.vhost, b.destination) in queues if b.dest_is_queue
                   else (b.vhost, b.destination) in live_x or b.destination.startswith("amq."))
        source_ok = (b.vhost, b.source) in live_x or b.source.startswith("amq.")
        if dest_ok and source_ok:
            state.bindings.append(b)
    queued = {key: seqs for key, seqs in entries.items() if key in queues}
    state.delivered = {key: m for key, m in marks.items() if m and key in queued}
    return state, queued, located


def _replay_auth(kind: int, p: Any, users: dict[str, UserRecord], vhosts: dict[str, None],
                 all_perms: tuple[dict[tuple[str, str], PermissionRecord],
                                  dict[tuple[str, str, str], TopicPermissionRecord]],
                 policies: dict[tuple[str, str], PolicyRecord]) -> bool:
    """Apply one user/vhost/permission/policy record; True for the SEEDED marker."""
    perms, topic_perms = all_perms
    if kind == SEEDED:
        return True
    if kind == PUT_USER:  # (a 4th field, the WAMP-CRA key, was added later)
        users[p[0]] = UserRecord(p[0], p[1], list(p[2]), p[3] if len(p) > 3 else "")
    elif kind == DEL_USER:
        users.pop(p[0], None)
        for key in [k for k in perms if k[0] == p[0]]:
            del perms[key]
        for tkey in [k for k in topic_perms if k[0] == p[0]]:
            del topic_perms[tkey]
    elif kind == PUT_VHOST:
        vhosts[p[0]] = None
    elif kind == DEL_VHOST:
        vhosts.pop(p[0], None)
        for key in [k for k in perms if k[1] == p[0]]:
            del perms[key]
        for tkey in [k for k in topic_perms if k[1] == p[0]]:
            del topic_perms[tkey]
        for key in [k for k in policies if k[0] == p[0]]:
            del policies[key]
    elif kind == PUT_PERMISSION:
        perms[(p[0], p[1])] = PermissionRecord(p[0], p[1], p[2], p[3], p[4])
    elif kind == DEL_PERMISSION:
        perms.pop((p[0], p[1]), None)
    elif kind == PUT_TOPIC_PERMISSION:
        topic_perms[(p[0], p[1], p[2])] = TopicPermissionRecord(p[0], p[1], p[2], p[3], p[4])
    elif kind == DEL_TOPIC_PERMISSION:
        topic_perms.pop((p[0], p[1], p[2]), None)
    elif kind == PUT_POLICY:
        policies[(p[0], p[1])] = PolicyRecord(p[0], p[1], p[2], p[3], p[4], p[5])
    elif kind == DEL_POLICY:
        policies.pop((p[0], p[1]), None)
    return False
