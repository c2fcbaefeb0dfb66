"""Policies (`rabbitmqctl set_policy`): queue settings by name pattern, merged under the
queue's own arguments, applied to existing and future queues at once, and persisted."""

from __future__ import annotations

from pathlib import Path

import pytest
from core.helpers import CreditConsumer, new_vhost, publish, ready_bodies

from durability.helpers_dur import restart, start, stop
from gateway.core.errors import NotFound, PreconditionFailed


def test_policy_applies_to_future_and_existing_queues() -> None:
    vh = new_vhost()
    old = vh.declare_queue("jobs.old")
    other = vh.declare_queue("mail")
    vh.set_policy("limit", r"^jobs\.", {"max-length": 2, "overflow": "reject-publish"})
    new = vh.declare_queue("jobs.new")
    for q in (old, new):
        assert q.policy is not None and q.policy.name == "limit"
        assert q.args.max_length == 2 and q.args.overflow == "reject-publish"
        for n in range(3):
            res = publish(vh, "", q.name, f"m{n}")
        assert res.rejected and ready_bodies(q) == [b"m0", b"m1"]
    assert other.policy is None and other.args.max_length is None


def test_arguments_win_over_the_policy() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", arguments={"x-max-length": 10})
    vh.set_policy("p", ".*", {"max-length": 1, "message-ttl": 5000})
    assert q.args.max_length == 10 and q.args.message_ttl == 5000
    assert q.arguments == {"x-max-length": 10}  # the queue's own arguments are unchanged


def test_highest_priority_policy_alone_applies() -> None:
    vh = new_vhost()
    q = vh.declare_queue("orders")
    vh.set_policy("low", ".*", {"max-length": 1}, priority=0)
    vh.set_policy("high", "^ord", {"message-ttl": 100}, priority=5)
    assert q.policy is not None and q.policy.name == "high"
    assert q.args.max_length is None and q.args.message_ttl == 100
    vh.clear_policy("high")
    assert q.policy is not None and q.policy.name == "low" and q.args.max_length == 1
    vh.clear_policy("low")
    assert q.policy is None and q.args.max_length is None
    with pytest.raises(NotFound):
        vh.clear_policy("low")


def test_new_max_length_drops_heads_to_the_dead_letter_exchange() -> None:
    vh = new_vhost()
    dlq = vh.declare_queue("dlq")
    vh.declare_exchange("dlx", "fanout")
    vh.bind(dlq, "dlx", "")
    q = vh.declare_queue("work")
    for n in range(4):
        publish(vh, "", "work", f"m{n}")
    vh.set_policy("cap", "^work$", {"max-length": 1, "dead-letter-exchange": "dlx"})
    assert ready_bodies(q) == [b"m3"]
    assert ready_bodies(dlq) == [b"m0", b"m1", b"m2"]
    death = next(iter(dlq.iter_ready())).message.properties.headers["x-death"][0]
    assert death["reason"] == "maxlen" and death["queue"] == "work"


def test_policy_ttl_and_dead_lettering_on_reject() -> None:
    vh = new_vhost()
    dlq = vh.declare_queue("dead")
    vh.set_policy("dl", "^in$", {"dead-letter-exchange": "",
                                 "dead-letter-routing-key": "dead", "message-ttl": 1000})
    q = vh.declare_queue("in")
    publish(vh, "", "in", "late", now=0.0)
    vh.tick(2.0)
    assert ready_bodies(q) == [] and ready_bodies(dlq) == [b"late"]
    publish(vh, "", "in", "bad", now=2.0)
    c = CreditConsumer()
    vh.consume(q, c, exclusive=False, now=2.0)
    q.reject(c.received[0], 2.0)
    assert ready_bodies(dlq) == [b"late", b"bad"]
    reasons = [e.message.properties.headers["x-death"][0]["reason"] for e in dlq.iter_ready()]
    assert reasons == ["expired", "rejected"]


def test_expires_policy_deletes_unused_queue() -> None:
    vh = new_vhost()
    vh.declare_queue("idle", now=0.0)
    vh.set_policy("gc", "^idle$", {"expires": 1000})
    vh.tick(0.5)
    assert "idle" in vh.queues
    vh.tick(1.5)
    assert "idle" not in vh.queues


def test_alternate_exchange_policy_for_exchanges() -> None:
    vh = new_vhost()
    vh.declare_exchange("in", "direct")
    vh.declare_exchange("ae", "fanout")
    unrouted = vh.declare_queue("unrouted")
    vh.bind(unrouted, "ae", "")
    vh.set_policy("ae", "^in$", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert publish(vh, "in", "nowhere", "x").routed
    assert ready_bodies(unrouted) == [b"x"]
    # a queue-only policy does not touch exchanges, nor an exchange policy queues
    q = vh.declare_queue("in")
    assert q.policy is None


def test_invalid_policies_are_refused() -> None:
    vh = new_vhost()
    for definition in ({"max-length": -1}, {"overflow": "nope"}, {"max-priority": 5},
                       {"unheard-of": 1}, {}, {"message-ttl": "soon"}):
        with pytest.raises(PreconditionFailed):
            vh.set_policy("bad", ".*", definition)
    with pytest.raises(PreconditionFailed):
        vh.set_policy("bad", "(", {"max-length": 1})
    with pytest.raises(PreconditionFailed):
        vh.set_policy("bad", ".*", {"max-length": 1}, apply_to="nothing")
    assert vh.policies == {}
    vh.set_policy("ha", ".*", {"ha-mode": "all"})  # RabbitMQ-only keys are accepted
    assert vh.declare_queue("q").args.max_length is None


def test_policies_persist(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    vh = broker.vhost("/")
    vh.set_policy("cap", "^capped", {"max-length": 3}, priority=2, apply_to="queues")
    vh.set_policy("gone", ".*", {"message-ttl": 1})
    vh.clear_policy("gone")
    vh.declare_queue("capped-1", durable=True)
    broker, auth = restart(broker, tmp_path)
    vh = broker.vhost("/")
    assert list(vh.policies) == ["cap"]
    pol = vh.policies["cap"]
    assert (pol.pattern, pol.definition, pol.priority, pol.apply_to) == (
        "^capped", {"max-length": 3}, 2, "queues")
    assert vh.queues["capped-1"].args.max_length == 3
    stop(broker)
