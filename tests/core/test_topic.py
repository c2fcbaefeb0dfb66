"""Topic matching: the word trie against RabbitMQ's topic semantics.

`*` matches exactly one word, `#` zero or more; words are separated by `.` and may be
empty; the empty routing key (and the empty binding key) has no words at all, as in
RabbitMQ's own topic trie.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.helpers import message, new_vhost, routed_names
from gateway.core.topic import TopicTrie


def reference_match(pattern: str, key: str) -> bool:
    """RabbitMQ's topic rule as a regex over the key written `.w1.w2...` (one `.` before
    every word, so the empty key is the empty string and `.` is two empty words)."""
    pwords = pattern.split(".") if pattern else []
    kwords = key.split(".") if key else []
    parts = []
    for w in pwords:
        if w == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif w == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(re.escape("." + w))
    return re.fullmatch("".join(parts), "".join("." + w for w in kwords)) is not None


def trie_of(*patterns: str) -> TopicTrie[str]:
    t: TopicTrie[str] = TopicTrie()
    for p in patterns:
        t.add(p, p)
    return t


def matches(trie: TopicTrie[str], key: str) -> set[str]:
    return set(trie.match(key))


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("foo.*", "foo.bar", True),
        ("foo.*", "foo", False),
        ("foo.*", "foo.bar.baz", False),
        ("foo.*", "foo.", True),  # one empty word
        ("foo.#", "foo", True),  # '#' matches zero words
        ("foo.#", "foo.bar", True),
        ("foo.#", "foo.bar.baz", True),
        ("foo.#", "foobar", False),
        ("foo.#", "bar.foo", False),
        ("#.foo", "foo", True),
        ("#.foo", "a.b.foo", True),
        ("#.foo", "foo.a", False),
        ("#", "", True),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("*", "a", True),
        ("*", "", False),  # the empty key has no words
        ("*", "a.b", False),
        ("*", ".", False),  # two empty words
        ("*.*", ".", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.b.b", True),
        ("a.#.b", "a.x", False),
        ("a.#.b", "a.b.c", False),
        ("a.#.b", "b", False),
        ("#.#", "", True),
        ("#.#", "a.b.c", True),
        ("#.*.#", "", False),
        ("#.*.#", "a", True),
        ("*.#", "a", True),
        ("*.#", "", False),
        ("", "", True),
        ("", "a", False),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
    ],
)
def test_single_pattern(pattern: str, key: str, expected: bool) -> None:
    assert reference_match(pattern, key) is expected  # the reference agrees with the table
    assert (pattern in matches(trie_of(pattern), key)) is expected


# The binding set RabbitMQ's own topic exchange is tested with, and what each key reaches.
RABBIT_BINDINGS = {
    "t1": "a.b.c", "t2": "a.*.c", "t3": "a.#.b", "t4": "a.b.b.c", "t5": "#", "t6": "#.#",
    "t7": "#.b", "t8": "*.*", "t9": "a.*", "t10": "*.b.c", "t11": "a.#", "t12": "a.#.#",
    "t13": "b.b.c", "t14": "a.b.b", "t15": "a.b", "t16": "b.c", "t17": "", "t18": "*.*.*",
    "t19": "vodka.martini", "t20": "a.b.c", "t21": "*.#", "t22": "#.*.#", "t23": "*.#.#",
    "t24": "#.#.#", "t25": "*", "t26": "#.b.#",
}
RABBIT_EXPECTED = {
    "a.b.c": {1, 2, 5, 6, 10, 11, 12, 18, 20, 21, 22, 23, 24, 26},
    "a.b": {3, 5, 6, 7, 8, 9, 11, 12, 15, 21, 22, 23, 24, 26},
    "a.b.b": {3, 5, 6, 7, 11, 12, 14, 18, 21, 22, 23, 24, 26},
    "": {5, 6, 17, 24},
    "b.c.c": {5, 6, 18, 21, 22, 23, 24, 26},
    "a.a.a.a.a": {5, 6, 11, 12, 21, 22, 23, 24},
    "vodka.gin": {5, 6, 8, 21, 22, 23, 24},
    "vodka.martini": {5, 6, 8, 19, 21, 22, 23, 24},
    "b.b.c": {5, 6, 10, 13, 18, 21, 22, 23, 24, 26},
    "nothing.here.at.all": {5, 6, 21, 22, 23, 24},
    "oneword": {5, 6, 21, 22, 23, 24, 25},
}


@pytest.mark.parametrize("key", sorted(RABBIT_EXPECTED))
def test_rabbitmq_binding_table(key: str) -> None:
    t: TopicTrie[str] = TopicTrie()
    for name, pattern in RABBIT_BINDINGS.items():
        t.add(pattern, name)
    assert set(t.match(key)) == {f"t{n}" for n in RABBIT_EXPECTED[key]}


def test_each_value_once_even_when_many_paths_match() -> None:
    t: TopicTrie[str] = TopicTrie()
    t.add("#.#.#", "q")
    t.add("a.#", "q")
    t.add("#", "q")
    assert list(t.match("a.b.c.d")) == ["q"]


def test_add_and_remove_bookkeeping() -> None:
    t: TopicTrie[str] = TopicTrie()
    assert t.add("a.*", "q1")
    assert not t.add("a.*", "q1")
    assert t.add("a.*", "q2")
    assert len(t) == 2
    assert not t.remove("a.*", "nobody")
    assert not t.remove("a.b", "q1")
    assert t.remove("a.*", "q1")
    assert not t.remove("a.*", "q1")
    assert matches(t, "a.x") == {"q2"}
    assert len(t) == 1


def test_remove_prunes_empty_nodes() -> None:
    t: TopicTrie[str] = TopicTrie()
    t.add("a.b.c.d", "q1")
    t.add("a.b", "q2")
    t.add("#", "q3")
    t.remove("a.b.c.d", "q1")
    # the branch below a.b is gone, a.b itself stays (it holds q2)
    node_b = t._root.children["a"].children["b"]
    assert node_b.children == {}
    t.remove("a.b", "q2")
    assert "a" not in t._root.children
    t.remove("#", "q3")
    assert t._root.children == {}
    assert len(t) == 0
    assert matches(t, "a.b") == set()


def test_empty_binding_key_lives_at_the_root() -> None:
    t = trie_of("", "#")
    assert matches(t, "") == {"", "#"}
    assert matches(t, "x") == {"#"}
    t.remove("", "")
    assert matches(t, "") == {"#"}


# -- through the exchange -----------------------------------------------------------------

def test_topic_exchange_routing_and_unbind() -> None:
    vh = new_vhost()
    x = vh.declare_exchange("logs", "topic")
    q_star = vh.declare_queue("q-star")
    q_hash = vh.declare_queue("q-hash")
    q_tail = vh.declare_queue("q-tail")
    q_all = vh.declare_queue("q-all")
    vh.bind(q_star, "logs", "foo.*")
    vh.bind(q_hash, "logs", "foo.#")
    vh.bind(q_tail, "logs", "#.foo")
    vh.bind(q_all, "logs", "#")
    assert routed_names(vh.route(x, "foo", None)) == {"q-hash", "q-tail", "q-all"}
    assert routed_names(vh.route(x, "foo.bar", None)) == {"q-star", "q-hash", "q-all"}
    assert routed_names(vh.route(x, "foo.bar.baz", None)) == {"q-hash", "q-all"}
    assert routed_names(vh.route(x, "bar.foo", None)) == {"q-tail", "q-all"}
    assert routed_names(vh.route(x, "", None)) == {"q-all"}
    vh.unbind(q_all, "logs", "#")
    vh.unbind(q_hash, "logs", "foo.#")
    assert routed_names(vh.route(x, "foo", None)) == {"q-tail"}
    assert routed_names(vh.route(x, "zzz", None)) == set()


def test_same_queue_bound_by_two_keys_gets_one_copy() -> None:
    vh = new_vhost()
    vh.declare_exchange("t", "topic")
    q = vh.declare_queue("q")
    vh.bind(q, "t", "a.*")
    vh.bind(q, "t", "*.b")
    vh.bind(q, "t", "#")
    res = vh.publish(vh.get_exchange("t"), "a.b", message("m", "a.b", "t"), 0.0)
    assert res.routed
    assert q.message_count == 1
    # unbinding one key keeps the others
    vh.unbind(q, "t", "#")
    vh.unbind(q, "t", "a.*")
    assert routed_names(vh.route(vh.get_exchange("t"), "x.b", None)) == {"q"}
    assert routed_names(vh.route(vh.get_exchange("t"), "a.x", None)) == set()


def test_same_key_bound_with_different_arguments_needs_both_unbinds() -> None:
    vh = new_vhost()
    x = vh.declare_exchange("t", "topic")
    q = vh.declare_queue("q")
    vh.bind(q, "t", "a.*", {"k": 1})
    vh.bind(q, "t", "a.*", {"k": 2})
    assert len(x.bindings) == 2
    vh.unbind(q, "t", "a.*", {"k": 1})
    assert routed_names(vh.route(x, "a.b", None)) == {"q"}
    vh.unbind(q, "t", "a.*", {"k": 2})
    assert routed_names(vh.route(x, "a.b", None)) == set()
    assert len(x._topic) == 0


# -- against the reference ------------------------------------------------------------------

pattern_words = st.sampled_from(["a", "b", "", "*", "#"])
key_words = st.sampled_from(["a", "b", "c", "", "*", "#"])
patterns = st.lists(pattern_words, max_size=6).map(".".join)
keys = st.lists(key_words, max_size=6).map(".".join)


@settings(max_examples=400, deadline=None)
@given(pattern=patterns, key=keys)
def test_trie_matches_reference_single(pattern: str, key: str) -> None:
    assert (pattern in matches(trie_of(pattern), key)) == reference_match(pattern, key)


@settings(max_examples=300, deadline=None)
@given(pats=st.lists(patterns, max_size=12), removed=st.lists(patterns, max_size=6),
       key_list=st.lists(keys, min_size=1, max_size=8))
def test_trie_matches_reference_many(pats: list[str], removed: list[str],
                                     key_list: list[str]) -> None:
    t: TopicTrie[str] = TopicTrie()
    for p in pats:
        t.add(p, p)
    live = set(pats)
    for p in removed:
        assert t.remove(p, p) == (p in live)
        live.discard(p)
    assert len(t) == len(live)
    for key in key_list:
        assert matches(t, key) == {p for p in live if reference_match(p, key)}
