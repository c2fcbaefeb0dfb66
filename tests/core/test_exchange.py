"""Exchanges: direct, fanout, headers, the default exchange, exchange-to-exchange bindings,
alternate exchanges, internal and auto-delete exchanges, sender-selected (CC/BCC) routing."""

from __future__ import annotations

from typing import Any

import pytest

from core.helpers import new_broker, new_vhost, publish, ready_bodies, routed_names
from gateway.core.errors import AccessRefused, PreconditionFailed
from gateway.core.exchange import headers_match
from gateway.core.vhost import VirtualHost


def _three_queue_direct() -> VirtualHost:
    vh = new_vhost()
    vh.declare_exchange("d", "direct")
    q1, q2, q3 = (vh.declare_queue(n) for n in ("queue1", "queue2", "queue3"))
    vh.bind(q1, "d", "foo")
    vh.bind(q2, "d", "foo")
    vh.bind(q2, "d", "bar")
    vh.bind(q3, "d", "bar")
    return vh


@pytest.mark.parametrize(
    ("key", "expected"),
    [("foo", {"queue1", "queue2"}), ("bar", {"queue2", "queue3"}), ("baz", set())],
)
def test_direct_routing_example(key: str, expected: set[str]) -> None:
    vh = _three_queue_direct()
    res = publish(vh, "d", key, b"m")
    assert res.routed is bool(expected)
    assert {n for n, q in vh.queues.items() if q.message_count} == expected
    for n in expected:
        assert vh.queues[n].message_count == 1


def test_direct_message_body_shared_by_reference() -> None:
    vh = _three_queue_direct()
    publish(vh, "d", "foo", b"shared")
    e1 = next(iter(vh.queues["queue1"].iter_ready()))
    e2 = next(iter(vh.queues["queue2"].iter_ready()))
    assert e1.message is e2.message
    assert e1 is not e2


def test_direct_unbind_and_rebind() -> None:
    vh = _three_queue_direct()
    q1 = vh.queues["queue1"]
    vh.unbind(q1, "d", "foo")
    vh.unbind(q1, "d", "foo")  # unbinding a missing binding is a no-op
    publish(vh, "d", "foo")
    assert q1.message_count == 0
    assert vh.queues["queue2"].message_count == 1
    vh.bind(q1, "d", "foo")
    vh.bind(q1, "d", "foo")  # binding twice is idempotent
    assert len(vh.get_exchange("d").bindings) == 4
    publish(vh, "d", "foo")
    assert q1.message_count == 1


def test_fanout_ignores_routing_key() -> None:
    vh = new_vhost()
    vh.declare_exchange("f", "fanout")
    qs = [vh.declare_queue(f"q{i}") for i in range(3)]
    for i, q in enumerate(qs):
        vh.bind(q, "f", f"key{i}")
    vh.bind(qs[0], "f", "other")  # a second binding does not duplicate
    publish(vh, "f", "anything", b"m")
    assert [q.message_count for q in qs] == [1, 1, 1]
    vh.unbind(qs[0], "f", "key0")
    publish(vh, "f", "", b"m2")
    assert [q.message_count for q in qs] == [2, 2, 2]  # still bound by "other"
    vh.unbind(qs[0], "f", "other")
    publish(vh, "f", "", b"m3")
    assert [q.message_count for q in qs] == [2, 3, 3]


def test_predeclared_exchanges() -> None:
    vh = new_vhost()
    types = {n: x.type for n, x in vh.exchanges.items()}
    assert types == {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout",
                     "amq.topic": "topic", "amq.headers": "headers", "amq.match": "headers",
                     "amq.rabbitmq.trace": "topic", "amq.rabbitmq.event": "topic"}
    assert all(x.durable for x in vh.exchanges.values())
    assert [n for n, x in vh.exchanges.items() if x.internal] == [
        "amq.rabbitmq.trace", "amq.rabbitmq.event"]  # the event exchange: in "/" only
    other = new_broker().add_vhost("other")
    assert "amq.rabbitmq.trace" in other.exchanges
    assert "amq.rabbitmq.event" not in other.exchanges


def test_default_exchange_routes_by_queue_name() -> None:
    vh = new_vhost()
    q = vh.declare_queue("tasks")
    assert publish(vh, "", "tasks", b"hello").routed
    assert ready_bodies(q) == [b"hello"]
    assert not publish(vh, "", "nope").routed
    assert vh.stats_unroutable == 1
    # nobody binds to or unbinds from the default exchange
    with pytest.raises(AccessRefused) as exc:
        vh.bind(q, "", "tasks")
    assert exc.value.code == 403
    with pytest.raises(AccessRefused):
        vh.unbind(q, "", "tasks")
    vh.delete_queue("tasks")
    assert not publish(vh, "", "tasks").routed


# -- headers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("binding", "headers", "expected"),
    [
        ({"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
        ({"a": 1, "b": "x"}, {"a": 1}, False),
        ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
        ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "x"}, True),
        ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2}, False),
        ({"x-match": "any", "a": 1}, {}, False),
        ({}, {}, True),  # all over nothing
        ({"x-match": "any"}, {"a": 1}, False),  # any over nothing
        ({"a": None}, {"a": "whatever"}, True),  # void value: presence is enough
        ({"a": None}, {"b": 1}, False),
        ({"x-match": "any", "a": None, "b": 2}, {"a": 0}, True),
        # x- arguments are ignored without -with-x ...
        ({"x-foo": "1", "a": 1}, {"a": 1}, True),
        ({"x-match": "any", "x-foo": "1"}, {"x-foo": "1"}, False),
        # ... and compared with it
        ({"x-match": "all-with-x", "x-foo": "1", "a": 1}, {"a": 1}, False),
        ({"x-match": "all-with-x", "x-foo": "1", "a": 1}, {"a": 1, "x-foo": "1"}, True),
        ({"x-match": "any-with-x", "x-foo": "1", "a": 1}, {"x-foo": "1"}, True),
        ({"x-match": "any-with-x", "x-foo": "1"}, {"x-foo": "2"}, False),
    ],
)
def test_headers_match_rules(binding: dict[str, Any], headers: dict[str, Any],
                             expected: bool) -> None:
    assert headers_match(binding, headers) is expected


def test_headers_exchange_routing() -> None:
    vh = new_vhost()
    x = vh.get_exchange("amq.headers")
    q_all = vh.declare_queue("all")
    q_any = vh.declare_queue("any")
    q_void = vh.declare_queue("void")
    vh.bind(q_all, "amq.headers", "", {"x-match": "all", "format": "pdf", "type": "report"})
    vh.bind(q_any, "amq.headers", "", {"x-match": "any", "format": "pdf", "type": "log"})
    vh.bind(q_void, "amq.headers", "ignored-key", {"urgent": None})
    assert routed_names(vh.route(x, "rk", {"format": "pdf", "type": "report"})) == {
        "all", "any"}
    assert routed_names(vh.route(x, "", {"type": "log", "urgent": False})) == {"any", "void"}
    assert routed_names(vh.route(x, "", None)) == set()
    publish(vh, "amq.headers", "", headers={"format": "pdf", "type": "report"})
    assert (q_all.message_count, q_any.message_count, q_void.message_count) == (1, 1, 0)
    # unbinding needs the same arguments
    vh.unbind(q_all, "amq.headers", "", {"x-match": "all"})
    assert "all" in routed_names(vh.route(x, "", {"format": "pdf", "type": "report"}))
    vh.unbind(q_all, "amq.headers", "", {"type": "report", "format": "pdf", "x-match": "all"})
    assert "all" not in routed_names(vh.route(x, "", {"format": "pdf", "type": "report"}))


def test_headers_binding_with_bad_x_match_is_refused() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q")
    with pytest.raises(PreconditionFailed) as exc:
        vh.bind(q, "amq.match", "", {"x-match": "some"})
    assert exc.value.code == 406
    assert not vh.get_exchange("amq.match").bindings
    assert not q.bound_by


# -- exchange to exchange -------------------------------------------------------------------

def test_exchange_to_exchange_binding() -> None:
    vh = new_vhost()
    vh.declare_exchange("front", "topic")
    vh.declare_exchange("back", "fanout")
    q_back = vh.declare_queue("back-q")
    q_front = vh.declare_queue("front-q")
    vh.bind(vh.get_exchange("back"), "front", "orders.#")
    vh.bind(q_back, "back", "")
    vh.bind(q_front, "front", "#")
    publish(vh, "front", "orders.new", b"o")
    publish(vh, "front", "invoices.new", b"i")
    assert ready_bodies(q_back) == [b"o"]
    assert ready_bodies(q_front) == [b"o", b"i"]
    vh.unbind(vh.get_exchange("back"), "front", "orders.#")
    publish(vh, "front", "orders.new", b"o2")
    assert ready_bodies(q_back) == [b"o"]


def test_exchange_cycle_terminates_and_delivers_once() -> None:
    vh = new_vhost()
    for n in ("x1", "x2", "x3"):
        vh.declare_exchange(n, "fanout")
    vh.bind(vh.get_exchange("x2"), "x1", "")
    vh.bind(vh.get_exchange("x3"), "x2", "")
    vh.bind(vh.get_exchange("x1"), "x3", "")
    vh.bind(vh.get_exchange("x1"), "x1", "")  # a self loop too
    q = vh.declare_queue("q")
    vh.bind(q, "x3", "")
    vh.bind(q, "x1", "")
    for start in ("x1", "x2", "x3"):
        assert routed_names(vh.route(vh.get_exchange(start), "k", None)) == {"q"}
    publish(vh, "x2", "k")
    assert q.message_count == 1


def test_delete_exchange_drops_bindings_on_both_sides() -> None:
    vh = new_vhost()
    vh.declare_exchange("src", "direct")
    vh.declare_exchange("mid", "direct")
    q = vh.declare_queue("q")
    vh.bind(vh.get_exchange("mid"), "src", "k")
    vh.bind(q, "mid", "k")
    vh.delete_exchange("mid")
    assert "mid" not in vh.exchanges
    assert not vh.get_exchange("src").bindings
    assert not q.bound_by
    assert not publish(vh, "src", "k").routed
    vh.delete_exchange("never-declared")  # delete-ok, as RabbitMQ


def test_delete_exchange_if_unused() -> None:
    vh = new_vhost()
    vh.declare_exchange("x", "direct")
    q = vh.declare_queue("q")
    vh.bind(q, "x", "k")
    with pytest.raises(PreconditionFailed) as exc:
        vh.delete_exchange("x", if_unused=True)
    assert exc.value.code == 406
    vh.unbind(q, "x", "k")
    vh.delete_exchange("x", if_unused=True)
    assert "x" not in vh.exchanges


def test_reserved_exchanges_cannot_be_deleted() -> None:
    vh = new_vhost()
    for name in ("", "amq.direct", "amq.topic"):
        with pytest.raises(AccessRefused) as exc:
            vh.delete_exchange(name)
        assert exc.value.code == 403
    assert "amq.topic" in vh.exchanges


# -- alternate exchange, internal, auto-delete -----------------------------------------------

def test_alternate_exchange_gets_unroutable_messages() -> None:
    vh = new_vhost()
    vh.declare_exchange("ae", "fanout")
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    q_main = vh.declare_queue("main-q")
    q_ae = vh.declare_queue("unrouted")
    vh.bind(q_main, "main", "good")
    vh.bind(q_ae, "ae", "")
    assert publish(vh, "main", "good", b"1").routed
    assert publish(vh, "main", "bad", b"2").routed
    assert ready_bodies(q_main) == [b"1"]
    assert ready_bodies(q_ae) == [b"2"]


def test_alternate_exchange_missing_or_cyclic() -> None:
    vh = new_vhost()
    vh.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    vh.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    vh.declare_exchange("c", "direct", arguments={"alternate-exchange": "nowhere"})
    assert not publish(vh, "a", "k").routed
    assert not publish(vh, "c", "k").routed
    q = vh.declare_queue("q")
    vh.bind(q, "b", "k")
    assert publish(vh, "a", "k").routed
    assert q.message_count == 1


def test_internal_exchange_routes_only_from_other_exchanges() -> None:
    vh = new_vhost()
    inner = vh.declare_exchange("inner", "fanout", internal=True)
    vh.declare_exchange("outer", "fanout")
    q = vh.declare_queue("q")
    vh.bind(q, "inner", "")
    vh.bind(inner, "outer", "")
    assert inner.internal
    assert publish(vh, "outer", "k").routed
    assert q.message_count == 1
    # the flag is part of equivalence
    with pytest.raises(PreconditionFailed):
        vh.declare_exchange("inner", "fanout", internal=False)


def test_auto_delete_exchange_goes_with_its_last_binding() -> None:
    vh = new_vhost()
    vh.declare_exchange("ad", "direct", auto_delete=True)
    q1 = vh.declare_queue("q1")
    q2 = vh.declare_queue("q2")
    vh.bind(q1, "ad", "a")
    vh.bind(q2, "ad", "b")
    vh.unbind(q1, "ad", "a")
    assert "ad" in vh.exchanges
    vh.unbind(q2, "ad", "b")
    assert "ad" not in vh.exchanges


def test_auto_delete_exchange_goes_when_its_last_queue_is_deleted() -> None:
    vh = new_vhost()
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.declare_exchange("down", "fanout")
    q = vh.declare_queue("q")
    vh.bind(q, "ad", "")
    vh.delete_queue("q")
    assert "ad" not in vh.exchanges
    # an auto-delete exchange never bound stays
    vh.declare_exchange("ad2", "fanout", auto_delete=True)
    assert "ad2" in vh.exchanges
    # exchange-to-exchange bindings count too
    vh.bind(vh.get_exchange("down"), "ad2", "")
    vh.delete_exchange("down")
    assert "ad2" not in vh.exchanges


# -- sender-selected distribution -----------------------------------------------------------

def test_cc_and_bcc_route_to_extra_keys_and_bcc_is_stripped() -> None:
    vh = new_vhost()
    vh.declare_exchange("d", "direct")
    qs = {n: vh.declare_queue(n) for n in ("main", "cc1", "cc2", "bcc")}
    for n, q in qs.items():
        vh.bind(q, "d", n)
    res = publish(vh, "d", "main", b"m",
                  headers={"CC": ["cc1", "cc2", "cc1"], "BCC": ["bcc"], "keep": 1})
    assert res.routed
    assert all(q.message_count == 1 for q in qs.values())
    entries = [next(iter(q.iter_ready())) for q in qs.values()]
    msg = entries[0].message
    assert all(e.message is msg for e in entries)
    assert msg.properties.headers == {"CC": ["cc1", "cc2", "cc1"], "keep": 1}


def test_cc_on_default_exchange_and_only_bcc() -> None:
    vh = new_vhost()
    a = vh.declare_queue("a")
    b = vh.declare_queue("b")
    publish(vh, "", "nobody", b"m", headers={"BCC": ["a", "b"]})
    assert (a.message_count, b.message_count) == (1, 1)
    assert next(iter(a.iter_ready())).message.properties.headers == {}
    publish(vh, "", "a", b"m", headers={"CC": ["b"]})
    assert (a.message_count, b.message_count) == (2, 2)
