"""Random well-formed messages, with random option values, into established sessions: the
session answers or aborts, and never raises (a bug here would drop the connection)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_wamp_session import World

from protocols.wamp.codec import SCHEMA

values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**53 + 5) | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)
option_keys = st.sampled_from([
    "acknowledge", "exclude_me", "disclose_me", "exclude", "eligible", "exclude_authid",
    "eligible_authrole", "match", "invoke", "timeout", "receive_progress", "progress", "mode",
])
options = st.dictionaries(option_keys, values | st.sampled_from(
    ["prefix", "wildcard", "exact", "roundrobin", "first", "kill", "skip"]), max_size=4)
uris = st.sampled_from(["com.a", "com.a.b", "com..b", "com.", "wamp.x", "com.*", "", "a b",
                        "rpc_queue"])
ids = st.integers(0, 6)


def message() -> st.SearchStrategy[list[Any]]:
    payload = st.just([]) | st.tuples(st.lists(values, max_size=2)).map(list) | st.tuples(
        st.lists(values, max_size=2), st.dictionaries(st.text(max_size=3), values,
                                                      max_size=2)).map(list)
    return st.one_of(
        st.tuples(st.just(16), ids, options, uris).map(list).flatmap(
            lambda m: payload.map(lambda p: m + p)),
        st.tuples(st.just(32), ids, options, uris).map(list),
        st.tuples(st.just(34), ids, ids).map(list),
        st.tuples(st.just(48), ids, options, uris).map(list).flatmap(
            lambda m: payload.map(lambda p: m + p)),
        st.tuples(st.just(49), ids, options).map(list),
        st.tuples(st.just(64), ids, options, uris).map(list),
        st.tuples(st.just(66), ids, ids).map(list),
        st.tuples(st.just(70), ids, options).map(list).flatmap(
            lambda m: payload.map(lambda p: m + p)),
        st.tuples(st.just(8), st.sampled_from([68, 48]), ids, options, uris).map(list),
        st.tuples(st.just(6), options, uris).map(list),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), message()), max_size=12))
def test_random_sessions_never_raise(script: list[tuple[int, list[Any]]]) -> None:
    world = World()
    peers = [world.peer(), world.peer()]
    for p in peers:
        p.join()
    for who, msg in script:
        assert msg[0] in SCHEMA
        peers[who].session.receive_message(json.dumps(msg))
        world.now += 0.5
        for p in peers:
            p.session.timer(world.now)
            for out in p.out():
                assert isinstance(out, list) and out[0] in SCHEMA
    for p in peers:
        p.session.connection_lost()
    vh = world.broker.vhost("/")
    # everything the sessions held is gone with them
    assert not [q for q in vh.queues.values() if q.exclusive_owner is not None]
    assert not world.router.realm("/").registrations
