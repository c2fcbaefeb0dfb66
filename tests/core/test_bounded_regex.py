"""Patterns from users who are not administrators (gateway/core/bounded_regex.py) and the
policies made of them (gateway/core/policy.py): bounded when compiled and when searched."""

from __future__ import annotations

import pytest

from gateway.core import bounded_regex
from gateway.core.errors import PreconditionFailed
from gateway.core.policy import Policy


def test_ordinary_patterns_search_as_re_does() -> None:
    compiled = bounded_regex.compile_bounded(r"^orders\.(eu|us)-\d+$")
    assert bounded_regex.search(compiled, "orders.eu-12", 1.0)
    assert not bounded_regex.search(compiled, "orders.asia-1", 1.0)


@pytest.mark.parametrize("pattern, why", [
    ("a" * 1001, "longer than 1000"),
    ("(?:a{65535}){65535}", "repeats too much"),
    ("(?:x{400}){400}", "repeats too much"),
    ("(unclosed", "bad regex"),
])
def test_refused_patterns_say_why(pattern: str, why: str) -> None:
    with pytest.raises(bounded_regex.PatternError, match=why):
        bounded_regex.compile_bounded(pattern)


def test_a_backtracking_search_runs_out_of_time() -> None:
    compiled = bounded_regex.compile_bounded("^(a|aa)+$")
    with pytest.raises(TimeoutError):
        bounded_regex.search(compiled, "a" * 80 + "!", 0.05)
    with pytest.raises(TimeoutError):
        bounded_regex.search(compiled, "a", 0.0)


def test_a_policy_whose_pattern_runs_out_does_not_apply() -> None:
    policy = Policy.make("evil", "^(a|aa)+$", {"max-length": 1})
    assert policy.applies_to("queues", "aaaa")
    assert not policy.applies_to("queues", "a" * 80 + "!")
    # once it ran out it applies to nothing, so a vhost of such names costs one timeout
    assert not policy.applies_to("queues", "aaaa")
    assert Policy.make("evil", "^(a|aa)+$", {"max-length": 1}).applies_to("queues", "aaaa")
    with pytest.raises(PreconditionFailed, match="repeats too much"):
        Policy.make("huge", "(?:a{65535}){65535}", {"max-length": 1})
