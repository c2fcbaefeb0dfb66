"""MQTT <-> core names and properties, tested both ways; the retained store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.message import Message
from gateway.core.message import Properties as CoreProperties
from gateway.core.topic import TopicTrie
from protocols.mqtt.frames import NO_PROPERTIES, Properties
from protocols.mqtt.mapping import (
    QOS_HEADER,
    REPLY_TOPIC_HEADER,
    binding_key_to_filter,
    filter_to_binding_key,
    from_core,
    parse_shared,
    published_qos,
    routing_key_to_topic,
    to_core,
    topic_matches,
    topic_to_routing_key,
    valid_topic_filter,
)
from protocols.mqtt.retain import Retained, RetainedStore

# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("topic", "key"), [
    ("home/kitchen/temp", "home.kitchen.temp"),
    ("/a/b", ".a.b"),
    ("a//b", "a..b"),
    ("probe/a.b/c", "probe.a%2Eb.c"),
    ("x/*/y", "x.%2A.y"),
    ("50%/off", "50%25.off"),
    ("a%2Fb/c", "a/b.c"),
])
def test_topic_to_routing_key_and_back(topic: str, key: str) -> None:
    assert topic_to_routing_key(topic) == key
    assert routing_key_to_topic(key) == topic


def test_amqp_word_with_a_slash_is_one_level() -> None:
    assert routing_key_to_topic("a/b.c") == "a%2Fb/c"
    assert topic_to_routing_key("a%2Fb/c") == "a/b.c"


@pytest.mark.parametrize(("topic_filter", "key"), [
    ("home/+/temp", "home.*.temp"),
    ("a/#", "a.#"),
    ("#", "#"),
    ("+/a.b/#", "*.a%2Eb.#"),
    ("a/*", "a.%2A"),
])
def test_filter_to_binding_key_and_back(topic_filter: str, key: str) -> None:
    assert filter_to_binding_key(topic_filter) == key
    assert binding_key_to_filter(key) == topic_filter


level = st.text(st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)),
                max_size=6)
topics = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)  # "" is no topic


@settings(max_examples=150, deadline=None)
@given(topics)
def test_escaping_is_reversible(topic: str) -> None:
    assert routing_key_to_topic(topic_to_routing_key(topic)) == topic


@settings(max_examples=150, deadline=None)
@given(topics)
def test_whole_topic_fast_paths_agree_with_level_by_level(topic: str) -> None:
    """The plain-topic shortcuts (one replace for the whole name, equality before level
    matching) give what mapping each level does."""
    key = ".".join(topic_to_routing_key(level) for level in topic.split("/"))
    assert topic_to_routing_key(topic) == key
    assert routing_key_to_topic(key) == "/".join(
        routing_key_to_topic(word) for word in key.split("."))
    assert topic_matches(topic, topic)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text("ab/-", max_size=4), min_size=1, max_size=4).map(".".join))
def test_amqp_keys_come_back(key: str) -> None:
    """AMQP -> MQTT -> AMQP keeps a key whose words hold no `%` or `*` (a `*` in an AMQP
    routing key is a plain character that MQTT publishes back escaped)."""
    assert topic_to_routing_key(routing_key_to_topic(key)) == key


filters = st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join(levels) + "/#"]))


@settings(max_examples=150, deadline=None)
@given(filters, topics)
def test_trie_matching_agrees_with_mqtt_matching(topic_filter: str, topic: str) -> None:
    """A binding made from the filter routes a topic's key iff MQTT says the filter matches
    (leaving aside the `$` rule, which the session applies at delivery)."""
    trie: TopicTrie[str] = TopicTrie()
    trie.add(filter_to_binding_key(topic_filter), "q")
    routed = "q" in trie.match(topic_to_routing_key(topic))
    expected = topic_matches(topic_filter, topic) or (
        topic.startswith("$") and topic_matches(topic_filter, "x" + topic[1:])
        and topic_filter[:1] in "+#")
    assert routed == expected


def test_dollar_topics_and_wildcards() -> None:
    assert not topic_matches("#", "$SYS/x")
    assert not topic_matches("+/x", "$SYS/x")
    assert topic_matches("$SYS/#", "$SYS/x")
    assert topic_matches("a/#", "a")
    assert topic_matches("+/+", "/a")
    assert not topic_matches("a/+", "a/b/c")


@pytest.mark.parametrize(("f", "ok"), [
    ("a/b", True), ("a/+/b", True), ("#", True), ("a/#", True), ("+", True), ("/", True),
    ("", False), ("a/#/b", False), ("a+/b", False), ("a/b#", False), ("#a", False),
])
def test_filter_validation(f: str, ok: bool) -> None:
    assert valid_topic_filter(f) is ok


def test_shared_subscription_filters() -> None:
    assert parse_shared("$share/g/a/+") == ("g", "a/+")
    assert parse_shared("a/b") == (None, "a/b")
    assert parse_shared("$share/g") == ("", "")
    assert parse_shared("$share//a") == ("", "")
    assert parse_shared("$share/g+/a") == ("", "")


# -- properties ----------------------------------------------------------------------------

def test_mqtt5_properties_to_core() -> None:
    props = Properties(content_type="application/json", message_expiry_interval=30,
                       correlation_data=b"req-1", response_topic="replies/me",
                       user_properties=(("k", "v"),))
    msg = to_core("a/b", b"{}", 1, props, own_queue="mqtt-subscription-meqos1",
                  message_id=1)
    p = msg.properties
    assert (msg.exchange, msg.routing_key, msg.origin) == ("amq.topic", "a.b", "mqtt")
    assert p.delivery_mode == 2 and p.content_type == "application/json"
    assert p.expiration == "30000"
    assert p.correlation_id == "req-1"
    assert p.reply_to == "mqtt-subscription-meqos1"
    assert p.headers == {QOS_HEADER: 1, "k": "v", REPLY_TOPIC_HEADER: "replies.me"}


def test_core_properties_to_mqtt5() -> None:
    msg = Message(1, "amq.topic", "a.b", CoreProperties(
        content_type="text/plain", correlation_id="c-9", reply_to="amq.gen-xyz",
        expiration="1500", delivery_mode=2,
        headers={"h": "v", "n": 5, "flag": True, "table": {"x": 1}, "x-death": [{}]}),
        b"body")
    props = from_core(msg)
    assert props.content_type == "text/plain"
    assert props.correlation_data == b"c-9"
    assert props.response_topic == "$reply/amq.gen-xyz"
    assert props.message_expiry_interval == 2
    assert props.user_properties == (("h", "v"), ("n", "5"), ("flag", "true"))
    assert published_qos(msg) == 1


def test_round_trip_through_core_keeps_request_response() -> None:
    """MQTT -> core -> MQTT (as after a restart, without the cached original)."""
    props = Properties(correlation_data=b"\xff\x00binary", response_topic="r/t",
                       user_properties=(("a", "1"),), content_type="x")
    msg = to_core("t", b"", 2, props, own_queue="q", message_id=1)
    assert from_core(msg) is props  # the original is kept for MQTT consumers
    msg.cache.clear()
    back = from_core(msg)
    assert back.correlation_data == props.correlation_data
    assert back.response_topic == "r/t"
    assert back.user_properties == (("a", "1"),)
    assert back.content_type == "x"
    assert published_qos(msg) == 2


def test_amqp_reply_queue_round_trip() -> None:
    props = Properties(response_topic="$reply/amq.gen-abc")
    msg = to_core("svc/echo", b"", 0, props, own_queue="q", message_id=1)
    assert msg.properties.reply_to == "amq.gen-abc"
    assert msg.properties.delivery_mode == 1


def test_no_properties_from_a_plain_amqp_message() -> None:
    msg = Message(1, "amq.topic", "a", CoreProperties(), b"")
    assert from_core(msg) == NO_PROPERTIES
    assert published_qos(msg) == 0


# -- retained store ------------------------------------------------------------------------

def _r(topic: str, payload: bytes = b"x", expires: float | None = None) -> Retained:
    return Retained(topic, payload, 1, NO_PROPERTIES, expires)


def test_retained_wildcard_lookup() -> None:
    store = RetainedStore()
    for t in ("a", "a/b", "a/b/c", "a/c", "/a", "$SYS/x", "b"):
        assert store.set(_r(t))
    got = lambda f: sorted(m.topic for m in store.match(f, 0))  # noqa: E731
    assert got("a/+") == ["a/b", "a/c"]
    assert got("a/#") == ["a", "a/b", "a/b/c", "a/c"]
    assert got("#") == ["/a", "a", "a/b", "a/b/c", "a/c", "b"]
    assert got("+/+") == ["/a", "a/b", "a/c"]
    assert got("$SYS/#") == ["$SYS/x"]
    assert got("a/b") == ["a/b"]


def test_retained_replace_clear_and_limits() -> None:
    store = RetainedStore(max_messages=2, max_bytes=10)
    assert store.set(_r("a", b"1234"))
    assert store.set(_r("a", b"12345"))
    assert (store.count, store.bytes) == (1, 5)
    assert store.set(_r("b", b"12345"))
    assert not store.set(_r("c", b"1"))  # a third message
    assert not store.set(_r("a", b"123456"))  # over the bytes
    assert store.get("a") is not None and store.get("a").payload == b"12345"  # type: ignore[union-attr]
    assert store.set(_r("a", b""))  # empty payload clears
    assert store.get("a") is None and (store.count, store.bytes) == (1, 5)


def test_retained_expiry() -> None:
    store = RetainedStore()
    store.set(_r("a", expires=10.0))
    assert [m.topic for m in store.match("#", 5.0)] == ["a"]
    assert store.match("#", 10.0) == []
    assert store.count == 0
