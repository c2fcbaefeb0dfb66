"""Dead-lettering: reasons, the `x-death` history, routing keys and cycles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.helpers import CreditConsumer, new_vhost, publish, ready_bodies
from gateway.core.queue import Entry, Queue
from gateway.core.vhost import VirtualHost


def _setup(**args: Any) -> tuple[VirtualHost, Queue, Queue]:
    """Queue `work` dead-letters to exchange `dlx` (fanout), which feeds queue `dead`."""
    vh = new_vhost()
    vh.declare_exchange("dlx", "fanout")
    dead = vh.declare_queue("dead")
    vh.bind(dead, "dlx", "")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx", **args})
    return vh, work, dead


def _only(q: Queue) -> Entry:
    entries = list(q.iter_ready())
    assert len(entries) == 1, entries
    return entries[0]


def _headers(e: Entry) -> dict[str, Any]:
    h = e.message.properties.headers
    assert h is not None
    return h


def test_reject_dead_letters_with_x_death() -> None:
    vh, work, dead = _setup()
    vh.bind(work, "amq.direct", "jobs")
    publish(vh, "amq.direct", "jobs", b"payload", now=1000.7, content_type="text/plain",
            headers={"app": "x"}, correlation_id="c1")
    e = work.get(False, 1000.7)
    assert e is not None
    work.reject(e, 1234.5)
    assert work.message_count == 0 and work.unacked == {}
    d = _only(dead)
    m = d.message
    assert m.body == b"payload"
    assert m.body is e.message.body  # the body is shared, not copied
    assert m.id != e.message.id
    assert (m.exchange, m.routing_key) == ("dlx", "jobs")
    assert m.properties.content_type == "text/plain"
    assert m.properties.correlation_id == "c1"
    h = _headers(d)
    assert h["app"] == "x"
    assert h["x-death"] == [{
        "count": 1,
        "reason": "rejected",
        "queue": "work",
        "time": datetime.fromtimestamp(1234, UTC),
        "exchange": "amq.direct",
        "routing-keys": ["jobs"],
    }]
    assert (h["x-first-death-reason"], h["x-first-death-queue"],
            h["x-first-death-exchange"]) == ("rejected", "work", "amq.direct")
    assert (h["x-last-death-reason"], h["x-last-death-queue"],
            h["x-last-death-exchange"]) == ("rejected", "work", "amq.direct")
    # the original message is untouched
    assert e.message.properties.headers == {"app": "x"}


def test_dead_letter_routing_key_override_and_cc() -> None:
    vh = new_vhost()
    vh.declare_exchange("dlx", "direct")
    parked = vh.declare_queue("parked")
    vh.bind(parked, "dlx", "park")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx",
                                               "x-dead-letter-routing-key": "park"})
    vh.bind(work, "amq.direct", "a")
    publish(vh, "amq.direct", "a", b"m", headers={"CC": ["b"]})
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 0)
    d = _only(parked)
    assert d.message.routing_key == "park"
    assert _headers(d)["x-death"][0]["routing-keys"] == ["a", "b"]
    assert "CC" not in _headers(d)  # the override drops CC, as RabbitMQ does


def test_dead_letter_without_override_uses_all_original_keys() -> None:
    vh = new_vhost()
    vh.declare_exchange("dlx", "direct")
    by_a = vh.declare_queue("by-a")
    by_b = vh.declare_queue("by-b")
    vh.bind(by_a, "dlx", "a")
    vh.bind(by_b, "dlx", "b")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    vh.bind(work, "amq.direct", "a")
    publish(vh, "amq.direct", "a", b"m", headers={"CC": ["b"]})
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 0)
    da, db = _only(by_a), _only(by_b)
    assert da.message is db.message
    assert da.message.routing_key == "a"
    assert _headers(da)["CC"] == ["b"]


def test_expired_message_dead_letters_with_original_expiration() -> None:
    vh, work, dead = _setup()
    publish(vh, "", "work", b"m", now=0.0, expiration="500")
    vh.tick(0.4)
    assert work.message_count == 1
    vh.tick(0.5)
    assert work.message_count == 0
    d = _only(dead)
    assert d.message.properties.expiration is None  # would expire again otherwise
    death = _headers(d)["x-death"][0]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "500"
    assert death["exchange"] == ""
    assert death["routing-keys"] == ["work"]


def test_queue_ttl_expiry_while_consumer_has_no_credit() -> None:
    vh, work, dead = _setup(**{"x-message-ttl": 100})
    c = CreditConsumer(credit=0)
    vh.consume(work, c, exclusive=False, now=0)
    publish(vh, "", "work", b"m", now=0.0)
    c.credit = 1
    work.dispatch(1.0)
    assert c.received == []
    assert _headers(_only(dead))["x-death"][0]["reason"] == "expired"
    assert "original-expiration" not in _headers(_only(dead))["x-death"][0]


def test_max_length_drop_head_dead_letters_as_maxlen() -> None:
    vh, work, dead = _setup(**{"x-max-length": 1})
    publish(vh, "", "work", b"old")
    publish(vh, "", "work", b"new")
    assert ready_bodies(work) == [b"new"]
    assert ready_bodies(dead) == [b"old"]
    assert _headers(_only(dead))["x-death"][0]["reason"] == "maxlen"


def test_oversized_message_itself_dead_letters_under_drop_head() -> None:
    vh, work, dead = _setup(**{"x-max-length-bytes": 4})
    res = publish(vh, "", "work", b"far too long")
    assert res.routed and not res.rejected
    assert ready_bodies(dead) == [b"far too long"]
    assert _headers(_only(dead))["x-death"][0]["reason"] == "maxlen"


def test_reject_publish_dlx_dead_letters_the_refused_message() -> None:
    vh, work, dead = _setup(**{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    assert not publish(vh, "", "work", b"1").rejected
    res = publish(vh, "", "work", b"2")
    assert res.rejected
    assert ready_bodies(work) == [b"1"]
    assert ready_bodies(dead) == [b"2"]
    assert _headers(_only(dead))["x-death"][0]["reason"] == "maxlen"


def test_reject_publish_does_not_dead_letter() -> None:
    vh, work, dead = _setup(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    publish(vh, "", "work", b"1")
    assert publish(vh, "", "work", b"2").rejected
    assert dead.message_count == 0


def test_ack_and_purge_do_not_dead_letter() -> None:
    vh, work, dead = _setup()
    publish(vh, "", "work", b"1")
    publish(vh, "", "work", b"2")
    e = work.get(False, 0)
    assert e is not None
    work.ack(e)
    work.reject(e, 0)  # already settled: nothing happens
    assert vh.purge_queue("work") == 1
    assert dead.message_count == 0


def test_missing_dlx_drops() -> None:
    vh = new_vhost()
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "gone"})
    publish(vh, "", "work", b"1")
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 0)
    assert sum(q.message_count for q in vh.queues.values()) == 0


def test_dead_letter_through_default_exchange() -> None:
    vh = new_vhost()
    retry = vh.declare_queue("retry")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "",
                                               "x-dead-letter-routing-key": "retry"})
    publish(vh, "", "work", b"1")
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 0)
    assert ready_bodies(retry) == [b"1"]


def test_repeated_rejection_counts_up_and_keeps_first_death() -> None:
    """A queue that dead-letters rejected messages back to itself: allowed (a rejection is
    in the cycle), and the one x-death entry for (queue, reason) counts up."""
    vh = new_vhost()
    vh.declare_exchange("dlx", "fanout")
    q = vh.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    vh.bind(q, "dlx", "")
    publish(vh, "", "q", b"m")
    for n in range(1, 4):
        e = q.get(False, float(n))
        assert e is not None
        q.reject(e, float(n))
        h = _headers(_only(q))
        assert len(h["x-death"]) == 1
        assert h["x-death"][0]["count"] == n
        assert h["x-death"][0]["reason"] == "rejected"
    assert h["x-first-death-exchange"] == ""
    assert h["x-death"][0]["exchange"] == ""  # the first death's exchange is kept


def test_x_death_newest_first_with_different_reasons() -> None:
    vh = new_vhost()
    vh.declare_exchange("to-b", "fanout")
    vh.declare_exchange("to-c", "fanout")
    a = vh.declare_queue("a", arguments={"x-dead-letter-exchange": "to-b"})
    b = vh.declare_queue("b", arguments={"x-dead-letter-exchange": "to-c",
                                         "x-message-ttl": 10})
    c = vh.declare_queue("c")
    vh.bind(b, "to-b", "")
    vh.bind(c, "to-c", "")
    publish(vh, "", "a", b"m", now=0)
    e = a.get(False, 0)
    assert e is not None
    a.reject(e, 0)
    vh.tick(1.0)
    h = _headers(_only(c))
    assert [(d["queue"], d["reason"], d["exchange"]) for d in h["x-death"]] == [
        ("b", "expired", "to-b"), ("a", "rejected", "")]
    assert (h["x-first-death-queue"], h["x-first-death-reason"]) == ("a", "rejected")
    assert (h["x-last-death-queue"], h["x-last-death-reason"]) == ("b", "expired")


def test_automatic_cycle_is_dropped() -> None:
    """q1 -(expired)-> q2 -(expired)-> q1 would loop forever: RabbitMQ drops it."""
    vh = new_vhost()
    q1 = vh.declare_queue("q1", arguments={"x-message-ttl": 10,
                                           "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": "q2"})
    q2 = vh.declare_queue("q2", arguments={"x-message-ttl": 10,
                                           "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": "q1"})
    publish(vh, "", "q1", b"m", now=0)
    vh.tick(1.0)
    # from q1 to q2 once; from q2 back to q1 it would be a cycle
    assert (q1.message_count, q2.message_count) == (0, 1)
    assert [d["queue"] for d in _headers(_only(q2))["x-death"]] == ["q1"]
    vh.tick(2.0)
    vh.tick(3.0)
    assert q1.message_count + q2.message_count == 0


def test_self_cycle_by_expiry_is_dropped() -> None:
    vh = new_vhost()
    vh.declare_exchange("dlx", "fanout")
    q = vh.declare_queue("q", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "dlx"})
    other = vh.declare_queue("other")
    vh.bind(q, "dlx", "")
    vh.bind(other, "dlx", "")
    publish(vh, "", "q", b"m", now=0)
    vh.tick(1.0)
    assert q.message_count == 0
    assert other.message_count == 1  # the other target is not part of the cycle


def test_dead_letter_to_headers_exchange_uses_new_headers() -> None:
    vh = new_vhost()
    dead = vh.declare_queue("dead")
    vh.bind(dead, "amq.headers", "", {"x-match": "any", "kind": "job"})
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "amq.headers"})
    publish(vh, "", "work", b"m", headers={"kind": "job"})
    e = work.get(False, 0)
    assert e is not None
    work.reject(e, 0)
    assert ready_bodies(dead) == [b"m"]


def test_expiry_loop_after_an_old_rejection_is_still_a_cycle() -> None:
    """Rejected once into itself, then expiring into itself: the loop since the last visit
    has no rejection, so RabbitMQ drops it (it would go round forever)."""
    vh = new_vhost()
    vh.declare_exchange("dlx", "fanout")
    q = vh.declare_queue("q", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "dlx"})
    vh.bind(q, "dlx", "")
    publish(vh, "", "q", b"m", now=0)
    e = q.get(False, 0)
    assert e is not None
    q.reject(e, 0)
    assert q.message_count == 1  # a rejection makes the loop legitimate
    vh.tick(1.0)
    assert q.message_count == 0


def test_ttl_zero_self_loop_terminates() -> None:
    vh = new_vhost()
    vh.declare_exchange("dlx", "fanout")
    q = vh.declare_queue("q", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "dlx"})
    vh.bind(q, "dlx", "")
    c = CreditConsumer(credit=1)
    vh.consume(q, c, exclusive=False, now=0)
    publish(vh, "", "q", b"m", now=0)
    assert c.bodies == [b"m"]
    # back in q by the rejection; nobody can take it, so it expires at once, and
    # expiring into q again would be a loop without a rejection: dropped
    q.reject(c.received[0], 0)
    assert q.message_count == 0 and q.unacked == {}
    assert c.bodies == [b"m"]


def test_delayed_retry_pattern_keeps_cycling_through_rejections() -> None:
    """work -(rejected)-> retry (TTL) -(expired)-> work: each round has a rejection."""
    vh = new_vhost()
    vh.declare_exchange("retry-x", "fanout")
    vh.declare_exchange("work-x", "fanout")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "retry-x"})
    retry = vh.declare_queue("retry", arguments={"x-dead-letter-exchange": "work-x",
                                                 "x-message-ttl": 1000})
    vh.bind(retry, "retry-x", "")
    vh.bind(work, "work-x", "")
    publish(vh, "", "work", b"job", now=0)
    now = 0.0
    for attempt in range(1, 4):
        e = work.get(False, now)
        assert e is not None, attempt
        work.reject(e, now)
        assert retry.message_count == 1
        now += 1.0
        vh.tick(now)
        assert work.message_count == 1
        deaths = {(d["queue"], d["reason"]): d["count"]
                  for d in _headers(_only(work))["x-death"]}
        assert deaths == {("work", "rejected"): attempt, ("retry", "expired"): attempt}
