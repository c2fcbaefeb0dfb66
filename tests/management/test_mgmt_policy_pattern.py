"""A policy set by pattern (PUT /api/policies, what `rabbitmqctl set_policy` does) applies
to every matching queue at once, existing and declared later, and to no other; a queue's
own argument wins over it; clearing it lifts the limit. Observed with pika."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pika
from mgmt_client import api_for, q

WAIT = 10.0


def test_policy_by_pattern_applies_to_every_matching_queue(
        broker: Any, unique: Callable[[str], str]) -> None:
    prefix, policy = unique("orders"), unique("limit-orders")
    dlx, dead = unique("policy-dlx"), unique("policy-dead")
    before, after, own, other = (f"{prefix}.before", f"{prefix}.after", f"{prefix}.own",
                                 f"{prefix}-other")
    api = api_for(broker)
    with closing(pika.BlockingConnection(pika.URLParameters(broker.url))) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            ch.exchange_declare(dlx, "fanout")
            ch.queue_declare(dead)
            ch.queue_bind(dead, dlx)
            ch.queue_declare(before)
            ch.queue_declare(other)
            response = api.put(f"/policies/%2F/{q(policy)}", {
                "pattern": f"^{re.escape(prefix)}\\.", "apply-to": "queues", "priority": 1,
                "definition": {"max-length": 2, "dead-letter-exchange": dlx}})
            assert response.status_code in (201, 204), response.text
            ch.queue_declare(after)
            ch.queue_declare(own, arguments={"x-max-length": 3})
            for queue in (before, after, own, other):
                for i in range(4):
                    ch.basic_publish("", queue, f"{queue}/{i}".encode())

            def count(queue: str) -> int:
                return int(ch.queue_declare(queue, passive=True).method.message_count)

            assert [count(x) for x in (before, after, own, other)] == [2, 2, 3, 4]
            assert api.json(f"/queues/%2F/{q(before)}")["policy"] == policy
            assert api.json(f"/queues/%2F/{q(after)}")["policy"] == policy
            assert api.json(f"/queues/%2F/{q(other)}").get("policy") in (None, "")
            deadline = time.monotonic() + WAIT
            while count(dead) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            dropped = []
            for _ in range(5):
                _, props, body = ch.basic_get(dead, auto_ack=True)
                dropped.append((body.decode(), props.headers["x-death"][0]["reason"]))
            assert sorted(dropped) == sorted(
                [(f"{before}/0", "maxlen"), (f"{before}/1", "maxlen"),
                 (f"{after}/0", "maxlen"), (f"{after}/1", "maxlen"), (f"{own}/0", "maxlen")])
            assert count(dead) == 0

            assert api.delete(f"/policies/%2F/{q(policy)}").status_code == 204
            for i in range(4, 6):
                ch.basic_publish("", after, f"{after}/{i}".encode())
            assert count(after) == 4  # no limit any more
        finally:
            api.delete(f"/policies/%2F/{q(policy)}")
            for queue in (before, after, own, other, dead):
                ch.queue_delete(queue)
            ch.exchange_delete(dlx)
            api.close()


def test_a_backtracking_policy_pattern_neither_stalls_nor_applies(
        broker: Any, unique: Callable[[str], str]) -> None:
    """A policymaker's pattern is searched in the event loop each time a queue is declared:
    one that backtracks catastrophically on a name is cut short (gateway/core/policy.py,
    MATCH_TIMEOUT) and taken not to match, so pika's declares are answered and the queue
    gets no policy; a pattern that repeats too much is refused when set."""
    api = api_for(broker)
    policy = unique("evil")
    response = api.put(f"/policies/%2F/{q(policy)}", {
        "pattern": "^(a|aa)+$", "apply-to": "queues",
        "definition": {"max-length": 1}})
    assert response.status_code in (201, 204), response.text
    refused = api.put(f"/policies/%2F/{q(unique('huge'))}", {
        "pattern": "(?:a{65535}){65535}", "apply-to": "queues",
        "definition": {"max-length": 1}})
    assert refused.status_code == 400 and "repeats too much" in refused.text
    names = ["a" * 60 + "!" + unique("x") for _ in range(3)]
    try:
        with closing(pika.BlockingConnection(pika.URLParameters(broker.url))) as conn:
            ch = conn.channel()
            for name in names:
                ch.queue_declare(name)
                for i in range(3):
                    ch.basic_publish("", name, str(i).encode())
            for name in names:
                assert ch.queue_declare(name, passive=True).method.message_count == 3
                assert api.json(f"/queues/%2F/{q(name)}").get("policy") in (None, "")
                ch.queue_delete(name)
    finally:
        api.delete(f"/policies/%2F/{q(policy)}")
