"""Random broker histories on the real DiskStore: whatever the interleaving of publishes,
acks, rejects, requeues, deletes, flushes and compactions, a restart recovers exactly the
durable state the broker had when it stopped."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from core.helpers import flush, open_disk_broker, publish, restart
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.core.broker import Broker
from gateway.core.queue import Entry
from gateway.store.base import Recovered
from gateway.store.disk import DiskStore

QUEUES = ("q0", "q1", "q2")

publishes = st.tuples(st.just("publish"), st.sampled_from(("", "fan", "amq.topic")),
                      st.sampled_from(QUEUES + ("k.a", "k.b")), st.booleans(),
                      st.integers(0, 3))
ops = st.lists(
    st.one_of(
        publishes, publishes, publishes, publishes,
        st.tuples(st.just("get"), st.sampled_from(QUEUES), st.booleans()),
        st.tuples(st.just("get"), st.sampled_from(QUEUES), st.just(False)),
        st.tuples(st.just("settle"), st.integers(0, 50), st.sampled_from(
            ("ack", "reject", "requeue"))),
        st.tuples(st.just("purge"), st.sampled_from(QUEUES)),
        st.tuples(st.just("recreate"), st.sampled_from(QUEUES)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("compact")),
        st.tuples(st.just("restart")),
    ),
    min_size=8,
    max_size=60,
)


def _declare(broker: Broker) -> None:
    vh = broker.vhost("/")
    vh.declare_exchange("fan", "fanout", durable=True)
    vh.declare_exchange("dlx", "direct", durable=True)
    for i, name in enumerate(QUEUES):
        args: dict[str, Any] = {"x-dead-letter-exchange": "dlx",
                                "x-dead-letter-routing-key": QUEUES[(i + 1) % 3]}
        if name == "q2":
            args["x-max-length"] = 3
        q = vh.declare_queue(name, durable=name != "q1", arguments=args)
        vh.bind(q, "fan", "")
        vh.bind(q, "amq.topic", f"k.{'ab'[i % 2]}")
        vh.bind(q, "dlx", name)


def _norm(s: Recovered) -> Any:
    return (
        sorted(map(repr, s.exchanges)), sorted(map(repr, s.queues)),
        sorted(map(repr, s.bindings)),
        {k: [(seq, repr(m)) for seq, m in v] for k, v in s.messages.items() if v},
    )


def _finish_compaction(broker: Broker, snapshot: Recovered, deferred: list[Any]) -> None:
    """Write the snapshot as the new log, then the batches taken since, in order."""
    store = broker.store
    assert isinstance(store, DiskStore)
    store.compact(snapshot)
    for batch in deferred:
        store.write_batch(batch)
        store.committed(batch)
    deferred.clear()


@settings(max_examples=300, deadline=None)
@given(ops)
def test_restart_recovers_the_durable_state(history: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        broker = open_disk_broker(path)
        _declare(broker)
        held: list[Entry] = []
        pending_snapshot: Recovered | None = None
        deferred: list[Any] = []
        for op in history:
            vh = broker.vhost("/")
            kind = op[0]
            if kind == "publish":
                _, exchange, key, persistent, prio = op
                publish(vh, exchange, key, f"m{len(history)}-{key}".encode(),
                        delivery_mode=2 if persistent else 1, priority=prio)
            elif kind == "get":
                q = vh.queues.get(op[1])
                if q is not None:
                    e = q.get(op[2], 0.0)
                    if e is not None and not op[2]:
                        held.append(e)
            elif kind == "settle" and held:
                e = held.pop(op[1] % len(held))
                if op[2] == "ack":
                    e.queue.ack(e)
                elif op[2] == "reject":
                    e.queue.reject(e, 0.0)
                else:
                    e.queue.requeue([e], 0.0)
            elif kind == "purge":
                if op[1] in vh.queues:
                    vh.purge_queue(op[1])
            elif kind == "recreate":
                vh.delete_queue(op[1])
                held = [e for e in held if e.queue.name != op[1]]
                _declare(broker)
            elif kind == "flush":
                if pending_snapshot is None:
                    flush(broker.store)
                else:
                    # the store task is busy compacting: batches wait for it
                    batch = broker.store.take_batch()
                    if batch is not None:
                        deferred.append(batch)
            elif kind == "compact":
                # snapshot now, compact at the next step: what happens between must survive
                if pending_snapshot is None:
                    flush(broker.store)
                    pending_snapshot = broker.snapshot()
                else:
                    _finish_compaction(broker, pending_snapshot, deferred)
                    pending_snapshot = None
            elif kind == "restart":
                if pending_snapshot is not None:
                    continue
                before = broker.snapshot()
                broker = restart(broker, path)
                held = []
                after = broker.snapshot()
                # unacked messages come back as ready ones; the durable state is the same
                assert _norm(before) == _norm(after)
                event(f"recovered {sum(map(len, after.messages.values()))} messages")
                _declare(broker)  # clients declare again what they use
        if pending_snapshot is not None:
            _finish_compaction(broker, pending_snapshot, deferred)
        before = broker.snapshot()
        broker = restart(broker, path)
        assert _norm(before) == _norm(broker.snapshot())
        n = sum(map(len, before.messages.values()))
        event(f"finally recovered {'none' if not n else 'some' if n < 5 else 'many'}")
        # and the recovered queues hold the snapshot's messages, in order, as ready ones
        for (_, qname), entries in broker.snapshot().messages.items():
            q = broker.vhost("/").queues[qname]
            assert sorted(e.seq for e in q.iter_ready()) == [seq for seq, _ in entries]
        broker.store.close()
