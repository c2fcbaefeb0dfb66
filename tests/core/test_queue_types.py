"""Queue types and argument validation as RabbitMQ 4 does them, and quorum-queue semantics:
returns counted per message, `x-delivery-limit`, returns delivered first, two priorities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.helpers import (
    CreditConsumer,
    new_vhost,
    open_disk_broker,
    publish,
    ready_bodies,
    restart,
)
from gateway.core.errors import PreconditionFailed
from gateway.core.queue_args import max_age_ms, unsupported, validate
from gateway.core.vhost import VirtualHost

QQ = {"x-queue-type": "quorum"}


def _refused(vh: VirtualHost, name: str, **kw: Any) -> str:
    with pytest.raises(PreconditionFailed) as exc:
        vh.declare_queue(name, **kw)
    assert exc.value.code == 406
    assert name not in vh.queues
    return exc.value.text


def test_queue_types_known_and_unknown() -> None:
    vh = new_vhost()
    assert vh.declare_queue("c", arguments={"x-queue-type": "classic"}).queue_type == "classic"
    assert vh.declare_queue("q", durable=True, arguments=QQ).queue_type == "quorum"
    text = _refused(vh, "f", arguments={"x-queue-type": "foo"})
    assert text == ("PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'f' in vhost "
                    "'/': \"unsupported queue type 'foo'\"")
    assert "unacceptable_type" in _refused(vh, "n", arguments={"x-queue-type": 5})
    text = _refused(vh, "s", durable=True, arguments={"x-queue-type": "stream"})
    assert "stream" in text and "not supported yet" in text


@pytest.mark.parametrize(("args", "reason"), [
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-max-length": "10"}, '"expected integer, got longstr"'),
    ({"x-max-length-bytes": 1.5}, '"expected integer, got double"'),
    ({"x-message-ttl": -5}, "{value_negative,-5}"),
    ({"x-message-ttl": 400_000_000_000}, "{value_too_large,400000000000}"),
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-overflow": "drop-tail"}, "invalid_overflow"),
    ({"x-max-priority": 256}, "{max_value_exceeded,256}"),
    ({"x-queue-mode": "eager"}, "\"unsupported queue mode 'eager'\""),
    ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
    ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
    ({"x-queue-leader-locator": "random"}, "invalid_queue_locator_arg"),
])
def test_bad_classic_arguments_are_refused_with_rabbitmq_reasons(
        args: dict[str, Any], reason: str) -> None:
    vh = new_vhost()
    text = _refused(vh, "q", arguments=args)
    key = next(iter(args))
    assert text == f"PRECONDITION_FAILED - invalid arg '{key}' for queue 'q' in vhost '/': {reason}"


@pytest.mark.parametrize(("args", "reason"), [
    ({"x-delivery-limit": "5"}, '"expected integer, got longstr"'),
    ({"x-dead-letter-strategy": "exactly-once"}, "invalid_dlx_strategy"),
    ({"x-quorum-initial-group-size": 0}, "{value_zero,0}"),
])
def test_bad_quorum_arguments_are_refused(args: dict[str, Any], reason: str) -> None:
    vh = new_vhost()
    text = _refused(vh, "q", durable=True, arguments={**QQ, **args})
    assert text.endswith(f": {reason}")


def test_arguments_of_another_queue_type_are_refused() -> None:
    vh = new_vhost()
    # RabbitMQ 3.11+ (rabbit_amqqueue:check_arguments_key): known, but not this type's
    text = _refused(vh, "c", arguments={"x-delivery-limit": 5})
    assert text == ("PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'c' in "
                    "vhost '/' of queue type rabbit_classic_queue")
    assert "x-max-age" in _refused(vh, "c", arguments={"x-max-age": "7D"})
    text = _refused(vh, "q", durable=True, arguments={**QQ, "x-max-priority": 5})
    assert text.endswith("of queue type rabbit_quorum_queue")
    assert "x-queue-mode" in _refused(vh, "q", durable=True,
                                      arguments={**QQ, "x-queue-mode": "lazy"})


def test_unknown_arguments_are_accepted_and_named(caplog: pytest.LogCaptureFixture) -> None:
    vh = new_vhost()
    caplog.set_level("INFO", logger="gateway.queue")
    args = {"x-my-app-flag": True, "x-ha-policy": "all", "x-max-length": 3}
    q = vh.declare_queue("q", arguments=args)
    assert q.unsupported_arguments == ["x-ha-policy", "x-my-app-flag"]
    assert q.args.max_length == 3
    vh.declare_queue("q", arguments=args)  # a redeclare logs nothing more
    logged = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert len(logged) == 1
    assert "x-ha-policy, x-my-app-flag" in logged[0].getMessage()
    assert unsupported({"x-queue-type": "quorum", "x-foo": 1}) == ["x-foo"]


def test_valid_arguments_and_max_age() -> None:
    assert validate({"x-queue-mode": "lazy", "x-queue-version": 2, "x-max-priority": 10}) \
        == "classic"
    assert validate({**QQ, "x-delivery-limit": -1, "x-dead-letter-strategy": "at-least-once",
                     "x-quorum-initial-group-size": 3, "x-overflow": "reject-publish"}) \
        == "quorum"
    assert max_age_ms("7D") == 7 * 86_400_000
    assert max_age_ms("1h") == 3_600_000
    assert max_age_ms("30m") == 1_800_000
    assert max_age_ms("10s") == 10_000
    for bad in ("0s", "10", "10x", "h", "-1h"):
        assert max_age_ms(bad) is None
    # a stream's own arguments are checked before the type is refused
    with pytest.raises(PreconditionFailed) as exc:
        validate({"x-queue-type": "stream", "x-max-age": "7 days"}, "queue 's'")
    assert "invalid_max_age" in exc.value.text


def test_redeclare_with_default_type_is_equivalent() -> None:
    vh = new_vhost()
    q = vh.declare_queue("c")
    assert vh.declare_queue("c", arguments={"x-queue-type": "classic"}) is q
    with pytest.raises(PreconditionFailed) as exc:
        vh.declare_queue("c", durable=False, arguments=QQ)
    assert "x-queue-type" in exc.value.text


def test_quorum_queue_refuses_what_rabbitmq_4_refuses() -> None:
    vh = new_vhost()
    assert _refused(vh, "q", durable=False, arguments=QQ) == (
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'")
    assert "'auto-delete'" in _refused(vh, "q", durable=True, auto_delete=True, arguments=QQ)
    assert "'exclusive-owner'" in _refused(vh, "q", durable=True, exclusive=True,
                                           owner=object(), arguments=QQ)
    assert "server-named" in _refused(vh, "amq.gen-x", durable=True, arguments=QQ,
                                      server_named=True)
    # reject-publish-dlx: RabbitMQ 4 warns and uses drop-head
    q = vh.declare_queue("q", durable=True, arguments={**QQ, "x-overflow": "reject-publish-dlx"})
    assert q.args.overflow == "drop-head"


def test_quorum_delivery_limit_default_and_policy() -> None:
    vh = new_vhost()
    assert vh.declare_queue("q", durable=True, arguments=QQ).args.delivery_limit == 20
    assert vh.declare_queue("u", durable=True, arguments={**QQ, "x-delivery-limit": -1}
                            ).args.delivery_limit is None
    vh.set_policy("dl", "^p", {"delivery-limit": 3})
    assert vh.declare_queue("p", durable=True, arguments=QQ).args.delivery_limit == 3
    assert vh.declare_queue("pc").args.delivery_limit is None  # classic: not acted on


def _quorum(vh: VirtualHost, name: str = "q", **args: Any) -> Any:
    vh.declare_exchange("dlx", "fanout")
    dead = vh.declare_queue("dead")
    vh.bind(dead, "dlx", "")
    q = vh.declare_queue(name, durable=True, arguments={**QQ, "x-dead-letter-exchange": "dlx",
                                                         **args})
    return q, dead


def test_poison_message_is_dead_lettered_after_the_limit() -> None:
    vh = new_vhost()
    q, dead = _quorum(vh, **{"x-delivery-limit": 2})
    publish(vh, "", "q", b"poison")
    seen = []
    for _ in range(10):  # bounded: the limit must end it long before
        e = q.get(False, 0.0)
        if e is None:
            break
        seen.append((e.returns, e.redelivered))
        q.requeue([e], 0.0)
    # delivered once, then twice more after returns 1 and 2; the third return is over
    assert seen == [(0, False), (1, True), (2, True)]
    assert q.message_count == 0
    [d] = list(dead.iter_ready())
    headers = d.message.properties.headers or {}
    assert headers["x-death"][0]["reason"] == "delivery_limit"
    assert headers["x-first-death-reason"] == "delivery_limit"


def test_poison_message_without_dlx_is_dropped() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", durable=True, arguments={**QQ, "x-delivery-limit": 0})
    publish(vh, "", "q", b"poison")
    e = q.get(False, 0.0)
    assert e is not None
    q.requeue([e], 0.0)
    assert q.message_count == 0 and not q.unacked


def test_returns_come_first_in_the_order_they_came_back() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", durable=True, arguments=QQ)
    for body in (b"1", b"2", b"3", b"4"):
        publish(vh, "", "q", body)
    c = CreditConsumer(credit=3)
    vh.consume(q, c, exclusive=False, now=0.0)
    e1, e2, e3 = c.received
    c.credit = 0
    q.requeue([e3], 0.0)
    q.requeue([e1], 0.0)
    # returns ahead of "4", in the order they came back (not their original order)
    assert ready_bodies(q) == [b"3", b"1", b"4"]
    # a classic queue puts them back in their original order instead
    cq = vh.declare_queue("cq")
    for body in (b"1", b"2", b"3", b"4"):
        publish(vh, "", "cq", body)
    got = [cq.get(False, 0.0) for _ in range(3)]
    cq.requeue([got[2]], 0.0)
    cq.requeue([got[0]], 0.0)
    assert ready_bodies(cq) == [b"1", b"3", b"4"]
    assert e2.seq in q.unacked


def test_quorum_priorities_two_levels_weighted() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", durable=True, arguments=QQ)
    for i in range(3):
        publish(vh, "", "q", f"n{i}", priority=1)
    for i in range(4):
        publish(vh, "", "q", f"h{i}", priority=5)
    got = []
    while (e := q.get(True, 0.0)) is not None:
        got.append(e.message.body.decode())
    # above 4 is high; two high for each normal while both wait (rabbit_fifo_q)
    assert got == ["h0", "h1", "n0", "h2", "h3", "n1", "n2"]


def test_quorum_queue_persists_transient_messages() -> None:
    vh = new_vhost()
    q = vh.declare_queue("q", durable=True, arguments=QQ)
    publish(vh, "", "q", b"t", delivery_mode=1)
    [e] = list(q.iter_ready())
    assert e.persisted


def test_delivery_count_survives_restart(tmp_path: Path) -> None:
    broker = open_disk_broker(tmp_path)
    vh = broker.vhost("/")
    vh.declare_exchange("dlx", "fanout", durable=True)
    vh.declare_queue("dead", durable=True)
    vh.bind(vh.queues["dead"], "dlx", "")
    q = vh.declare_queue("q", durable=True, arguments={**QQ, "x-delivery-limit": 2,
                                                       "x-dead-letter-exchange": "dlx"})
    publish(vh, "", "q", b"poison")  # transient: a quorum queue keeps it all the same
    publish(vh, "", "q", b"fine", delivery_mode=2)
    for _ in range(2):
        e = q.get(False, 0.0)
        assert e is not None and e.message.body == b"poison"
        q.requeue([e], 0.0)
    assert [e.returns for e in q.iter_ready()] == [2, 0]

    broker2 = restart(broker, tmp_path)
    q2 = broker2.vhost("/").queues["q"]
    assert q2.quorum and q2.args.delivery_limit == 2
    assert [(e.message.body, e.returns, e.redelivered) for e in q2.iter_ready()] == [
        (b"poison", 2, True), (b"fine", 0, False)]
    e = q2.get(False, 0.0)
    assert e is not None and e.message.body == b"poison"
    q2.requeue([e], 0.0)  # the third return is past the limit of 2, across the restart
    assert ready_bodies(q2) == [b"fine"]
    assert ready_bodies(broker2.vhost("/").queues["dead"]) == [b"poison"]

    # settled entries leave no count behind: after another restart nothing is left of it
    broker3 = restart(broker2, tmp_path)
    assert [(e.message.body, e.returns) for e in broker3.vhost("/").queues["q"].iter_ready()
            ] == [(b"fine", 0)]
    assert not broker3.claim_values("quorum-returns")


def test_consumer_timeout_argument_and_policy() -> None:
    vh = new_vhost()
    q = vh.declare_queue("t", arguments={"x-consumer-timeout": 5000})
    assert q.args.consumer_timeout == 5000 and q.unsupported_arguments == []
    qq = vh.declare_queue("tq", durable=True, arguments={**QQ, "x-consumer-timeout": 0})
    assert qq.args.consumer_timeout == 0
    assert "{value_negative,-1}" in _refused(vh, "b", arguments={"x-consumer-timeout": -1})
    vh.set_policy("ct", "^p", {"consumer-timeout": 1000})
    assert vh.declare_queue("p").args.consumer_timeout == 1000
    assert vh.declare_queue("n").args.consumer_timeout is None
