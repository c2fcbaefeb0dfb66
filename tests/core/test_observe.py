"""Typed observers (gateway.core.observe): the core tells what it did, where it did it,
in order; a vhost made later is observed from its first message; with no observer the
core behaves exactly as before."""

from __future__ import annotations

from typing import Any

from core.helpers import CreditConsumer, new_broker, publish
from gateway.core.observe import (
    Acked,
    DeadLettered,
    Delivered,
    Dropped,
    Hop,
    Observer,
    Published,
    Rejected,
    Requeued,
)


class Log(Observer):
    def __init__(self, hops: bool = False) -> None:
        self.events: list[Any] = []
        self.hops = hops

    def wants_hops(self, vhost: str) -> bool:
        return self.hops

    def published(self, event: Published) -> None:
        self.events.append(event)

    def delivered(self, event: Delivered) -> None:
        self.events.append(event)

    def acked(self, event: Acked) -> None:
        self.events.append(event)

    def rejected(self, event: Rejected) -> None:
        self.events.append(event)

    def requeued(self, event: Requeued) -> None:
        self.events.append(event)

    def dead_lettered(self, event: DeadLettered) -> None:
        self.events.append(event)

    def dropped(self, event: Dropped) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def test_a_message_life_is_told_in_order_with_the_consumer() -> None:
    broker = new_broker()
    log = Log()
    broker.observers.add(log)
    vh = broker.vhost("/")
    vh.declare_exchange("dlx", "fanout")
    dead = vh.declare_queue("dead")
    vh.bind(dead, "dlx", "")
    work = vh.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    c = CreditConsumer("c1")
    vh.consume(work, c, exclusive=False, now=0.0)
    publish(vh, "", "work", b"one")
    first = c.received[0]
    work.requeue([first], 0.0)
    again = c.received[1]
    work.reject(again, 0.0)
    assert log.kinds() == ["Published", "Delivered", "Requeued", "Delivered", "Rejected",
                           "DeadLettered"]
    pub, d1, _, d2, _, dl = log.events
    assert pub.queues == (work,) and pub.routed and pub.hops == ()
    assert d1.consumer is c and not d1.redelivered and d1.queue == "work"
    assert d2.consumer is c and d2.redelivered
    assert dl.reason == "rejected" and dl.exchange == "dlx" and dl.queues == ("dead",)
    assert dl.message is first.message and dl.copy_id != first.message.id
    assert [e.message.id for e in dead.iter_ready()] == [dl.copy_id]


def test_ack_get_drop_and_refusal_are_told() -> None:
    broker = new_broker()
    log = Log()
    broker.observers.add(log)
    vh = broker.vhost("/")
    q = vh.declare_queue("q")
    full = vh.declare_queue("full", arguments={"x-max-length": 0,
                                               "x-overflow": "reject-publish"})
    publish(vh, "", "q", b"a")
    entry = q.get(False, 0.0)
    assert entry is not None
    q.ack(entry)
    publish(vh, "", "q", b"b")
    entry = q.get(False, 0.0)
    assert entry is not None
    q.reject(entry, 0.0)
    publish(vh, "", "full", b"c")
    assert log.kinds() == ["Published", "Delivered", "Acked", "Published", "Delivered",
                           "Rejected", "Dropped", "Published", "Dropped"]
    assert full.message_count == 0
    get = log.events[1]
    assert get.consumer is None and get.queue == "q"
    assert log.events[6].reason == "rejected"
    assert log.events[8].reason == "refused" and log.events[8].queue == "full"


def test_hops_are_the_routing_the_core_walked() -> None:
    broker = new_broker()
    log = Log(hops=True)
    broker.observers.add(log)
    vh = broker.vhost("/")
    vh.declare_exchange("outer", "topic")
    vh.declare_exchange("inner", "fanout")
    vh.declare_exchange("ae", "fanout")
    vh.declare_exchange("lonely", "direct", arguments={"alternate-exchange": "ae"})
    vh.bind(vh.get_exchange("inner"), "outer", "a.#")
    a, b = vh.declare_queue("a"), vh.declare_queue("b")
    vh.bind(a, "inner", "")
    vh.bind(b, "ae", "")
    publish(vh, "outer", "a.x")
    publish(vh, "lonely", "k")
    publish(vh, "outer", "nothing")
    first, second, third = log.events
    assert set(first.hops) == {Hop("outer", "inner", False, "topic binding", "a.#"),
                               Hop("inner", "a", True, "fanout binding", "")}
    assert set(second.hops) == {Hop("lonely", "ae", False, "alternate-exchange", ""),
                                Hop("ae", "b", True, "fanout binding", "")}
    assert third.queues == () and not third.routed and third.hops == ()


def test_a_vhost_made_later_is_observed_from_its_first_message() -> None:
    broker = new_broker()
    log = Log()
    broker.observers.add(log)
    vh = broker.add_vhost("later")
    vh.declare_queue("q")
    publish(vh, "", "q")
    assert log.kinds() == ["Published"] and log.events[0].vhost == "later"


def test_without_observers_nothing_is_made_and_routing_is_the_same() -> None:
    broker = new_broker()
    vh = broker.vhost("/")
    q = vh.declare_queue("q")
    c = CreditConsumer()
    vh.consume(q, c, exclusive=False, now=0.0)
    result = publish(vh, "", "q", b"x")
    assert result.routed and not result.rejected and c.bodies == [b"x"]
    assert not broker.observers and vh.observers is broker.observers
    assert not broker.observers.to_published and not broker.observers.to_delivered


def test_only_the_kinds_an_observer_takes_are_made() -> None:
    class Publishes(Observer):
        def __init__(self) -> None:
            self.seen: list[Published] = []

        def published(self, event: Published) -> None:
            self.seen.append(event)

    broker = new_broker()
    only = Publishes()
    broker.observers.add(only)
    assert broker.observers.to_published == [only]
    assert broker.observers.to_delivered == [] and broker.observers.to_acked == []
    vh = broker.vhost("/")
    vh.declare_queue("q")
    publish(vh, "", "q")
    assert len(only.seen) == 1
    broker.observers.remove(only)
    assert not broker.observers and broker.observers.to_published == []
