"""Declare, delete and purge rules of the virtual host, with RabbitMQ's reply codes."""

from __future__ import annotations

from typing import Any

import pytest

from core.helpers import CreditConsumer, Owner, new_broker, new_vhost, publish
from gateway.core.errors import (
    AccessRefused,
    BrokerError,
    CommandInvalid,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ReplyCode,
    ResourceLocked,
)


def test_error_codes_and_hardness() -> None:
    assert NotFound("x").code == 404 and not NotFound("x").hard
    assert AccessRefused("x").code == 403 and not AccessRefused("x").hard
    assert ResourceLocked("x").code == 405
    assert PreconditionFailed("x").code == 406
    assert NotAllowed("x").code == 530 and NotAllowed("x").hard
    assert CommandInvalid("x").code == 503 and CommandInvalid("x").hard
    err = BrokerError("boom", ReplyCode.CHANNEL_ERROR)
    assert err.code == 504 and err.hard and err.text == "boom"
    assert "504" in repr(err)


def test_unknown_vhost_is_not_allowed() -> None:
    broker = new_broker()
    with pytest.raises(NotAllowed) as exc:
        broker.vhost("nope")
    assert exc.value.code == 530
    assert broker.add_vhost("other") is broker.vhost("other")


# -- exchanges ------------------------------------------------------------------------------

def test_passive_exchange_declare() -> None:
    vh = new_vhost()
    with pytest.raises(NotFound) as exc:
        vh.declare_exchange("missing", "direct", passive=True)
    assert exc.value.code == 404
    assert "no exchange 'missing' in vhost '/'" in exc.value.text
    x = vh.declare_exchange("x", "topic")
    # passive ignores type and flags
    assert vh.declare_exchange("x", "fanout", passive=True, durable=True) is x
    assert vh.declare_exchange("", "", passive=True) is vh.get_exchange("")


def test_exchange_redeclare_equivalence() -> None:
    vh = new_vhost()
    x = vh.declare_exchange("x", "direct", durable=True, arguments={"alternate-exchange": "a"})
    assert vh.declare_exchange("x", "direct", durable=True,
                               arguments={"alternate-exchange": "a"}) is x
    cases = [
        dict(type="fanout", durable=True, arguments={"alternate-exchange": "a"}),
        dict(type="direct", durable=False, arguments={"alternate-exchange": "a"}),
        dict(type="direct", durable=True, auto_delete=True,
             arguments={"alternate-exchange": "a"}),
        dict(type="direct", durable=True, internal=True, arguments={"alternate-exchange": "a"}),
        dict(type="direct", durable=True, arguments={"alternate-exchange": "b"}),
    ]
    for kw in cases:
        with pytest.raises(PreconditionFailed) as exc:
            vh.declare_exchange("x", **kw)  # type: ignore[arg-type]
        assert exc.value.code == 406
        assert "inequivalent" in exc.value.text


def test_exchange_name_and_type_rules() -> None:
    vh = new_vhost()
    with pytest.raises(AccessRefused) as exc:
        vh.declare_exchange("amq.custom", "direct")
    assert exc.value.code == 403
    with pytest.raises(AccessRefused):
        vh.declare_exchange("", "direct")
    with pytest.raises(CommandInvalid) as exc2:
        vh.declare_exchange("x", "x-unknown-type")
    assert exc2.value.code == 503
    # redeclaring a predeclared exchange with its own properties is fine
    assert vh.declare_exchange("amq.topic", "topic", durable=True) is vh.get_exchange(
        "amq.topic")
    with pytest.raises(PreconditionFailed):
        vh.declare_exchange("amq.topic", "topic", durable=False)


def test_get_exchange_missing_is_404() -> None:
    vh = new_vhost()
    with pytest.raises(NotFound) as exc:
        vh.get_exchange("nope")
    assert exc.value.code == 404


# -- queues ---------------------------------------------------------------------------------

def test_passive_queue_declare() -> None:
    vh = new_vhost()
    with pytest.raises(NotFound) as exc:
        vh.declare_queue("missing", passive=True)
    assert exc.value.code == 404
    assert exc.value.text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    q = vh.declare_queue("q", durable=True)
    assert vh.declare_queue("q", passive=True) is q  # flags are not compared


def test_queue_redeclare_equivalence() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", durable=True, arguments={"x-message-ttl": 1000})
    assert vh.declare_queue("q", durable=True, arguments={"x-message-ttl": 1000}) is q
    for kw in (
        dict(durable=False, arguments={"x-message-ttl": 1000}),
        dict(durable=True, auto_delete=True, arguments={"x-message-ttl": 1000}),
        dict(durable=True, arguments={"x-message-ttl": 2000}),
        dict(durable=True, arguments={}),
        dict(durable=True, arguments={"x-message-ttl": 1000, "x-max-length": 5}),
    ):
        with pytest.raises(PreconditionFailed) as exc:
            vh.declare_queue("q", **kw)  # type: ignore[arg-type]
        assert exc.value.code == 406
        assert "inequivalent arg" in exc.value.text
    owner = Owner("c1")
    vh.declare_queue("ex", exclusive=True, owner=owner)
    with pytest.raises(PreconditionFailed):
        vh.declare_queue("ex", exclusive=False, owner=owner)


def test_exclusive_queue_of_another_connection_is_locked() -> None:
    vh = new_vhost()
    a, b = Owner("a"), Owner("b")
    q = vh.declare_queue("mine", exclusive=True, owner=a)
    assert vh.declare_queue("mine", exclusive=True, owner=a) is q
    assert vh.declare_queue("mine", passive=True, owner=a) is q
    for call in (
        lambda: vh.declare_queue("mine", exclusive=True, owner=b),
        lambda: vh.declare_queue("mine", passive=True, owner=b),
        lambda: vh.get_queue("mine", owner=b),
        lambda: vh.delete_queue("mine", owner=b),
        lambda: vh.purge_queue("mine", owner=b),
    ):
        with pytest.raises(ResourceLocked) as exc:
            call()
        assert exc.value.code == 405
    assert "mine" in vh.queues
    # publishing to it from anywhere still works
    assert publish(vh, "", "mine").routed


def test_reserved_and_server_named_queues() -> None:
    vh = new_vhost()
    with pytest.raises(AccessRefused) as exc:
        vh.declare_queue("amq.mine")
    assert exc.value.code == 403
    q1 = vh.declare_queue("")
    q2 = vh.declare_queue("")
    assert q1.name.startswith("amq.gen-") and q2.name.startswith("amq.gen-")
    assert q1.name != q2.name
    assert vh.queues[q1.name] is q1
    # a server-named queue can be redeclared by its name
    assert vh.declare_queue(q1.name) is q1
    # hidden (internal) queues may use the prefix
    assert vh.declare_queue("amq.rabbitmq.reply-to.x", hidden=True).hidden


def test_invalid_queue_arguments_are_406() -> None:
    vh = new_vhost()
    bad: list[dict[str, Any]] = [
        {"x-message-ttl": -1},
        {"x-message-ttl": "1000"},
        {"x-expires": 0},
        {"x-max-length": True},
        {"x-max-priority": 256},
        {"x-overflow": "drop-tail"},
        {"x-dead-letter-exchange": 5},
        {"x-dead-letter-routing-key": "k"},  # needs x-dead-letter-exchange
        {"x-single-active-consumer": "yes"},
    ]
    for args in bad:
        with pytest.raises(PreconditionFailed) as exc:
            vh.declare_queue("q", arguments=args)
        assert exc.value.code == 406, args
        assert "q" not in vh.queues


def test_delete_queue_if_unused_and_if_empty() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    c = CreditConsumer(credit=0)
    vh.consume(q, c, exclusive=False, now=0)
    with pytest.raises(PreconditionFailed) as exc:
        vh.delete_queue("q", if_unused=True)
    assert exc.value.code == 406
    publish(vh, "", "q", b"1")
    publish(vh, "", "q", b"2")
    vh.cancel(q, c, 0)
    with pytest.raises(PreconditionFailed):
        vh.delete_queue("q", if_empty=True)
    assert vh.delete_queue("q", if_unused=True) == 2
    assert "q" not in vh.queues
    assert vh.delete_queue("q") == 0  # already gone: delete-ok with 0


def test_delete_queue_cancels_consumers_and_drops_bindings() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    vh.bind(q, "amq.direct", "k")
    c = CreditConsumer()
    vh.consume(q, c, exclusive=False, now=0)
    vh.delete_queue("q")
    assert c.was_cancelled
    assert q.deleted
    assert not vh.get_exchange("amq.direct").bindings
    assert not publish(vh, "amq.direct", "k").routed


def test_purge_counts_only_ready_messages() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    for i in range(5):
        publish(vh, "", "q", str(i))
    e = q.get(False, 0)
    assert e is not None
    assert vh.purge_queue("q") == 4
    assert q.message_count == 0
    assert len(q.unacked) == 1
    assert vh.purge_queue("q") == 0
    with pytest.raises(NotFound):
        vh.purge_queue("missing")


def test_connection_closed_drops_its_exclusive_queues() -> None:
    vh = new_vhost()
    a, b = Owner("a"), Owner("b")
    qa = vh.declare_queue("qa", exclusive=True, owner=a)
    vh.declare_queue("qb", exclusive=True, owner=b)
    vh.declare_queue("shared")
    vh.bind(qa, "amq.fanout", "")
    c = CreditConsumer()
    vh.consume(qa, c, exclusive=False, now=0)
    vh.connection_closed(a)
    assert set(vh.queues) == {"qb", "shared"}
    assert qa.deleted and c.was_cancelled
    assert not vh.get_exchange("amq.fanout").bindings


def test_auto_delete_queue_after_last_consumer_cancels() -> None:
    vh = new_vhost()
    q = vh.declare_queue("ad", auto_delete=True)
    vh.bind(q, "amq.fanout", "")
    c1, c2 = CreditConsumer("c1"), CreditConsumer("c2")
    vh.consume(q, c1, exclusive=False, now=0)
    vh.consume(q, c2, exclusive=False, now=0)
    vh.cancel(q, c1, 0)
    assert "ad" in vh.queues
    vh.cancel(q, c2, 0)
    assert "ad" not in vh.queues
    assert not vh.get_exchange("amq.fanout").bindings


def test_auto_delete_queue_never_consumed_stays() -> None:
    vh = new_vhost()
    vh.declare_queue("ad", auto_delete=True)
    publish(vh, "", "ad")
    vh.tick(1000.0)
    assert "ad" in vh.queues


def test_exclusive_consumer_rules() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    vh.consume(q, CreditConsumer("a"), exclusive=False, now=0)
    with pytest.raises(AccessRefused) as exc:
        vh.consume(q, CreditConsumer("b", exclusive=True), exclusive=True, now=0)
    assert exc.value.code == 403
    q2 = vh.declare_queue("q2")
    vh.consume(q2, CreditConsumer("x", exclusive=True), exclusive=True, now=0)
    with pytest.raises(AccessRefused):
        vh.consume(q2, CreditConsumer("y"), exclusive=False, now=0)
    assert q2.consumer_count == 1


def test_bind_to_missing_exchange_is_404() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    with pytest.raises(NotFound):
        vh.bind(q, "missing", "k")
    with pytest.raises(NotFound):
        vh.unbind(q, "missing", "k")
