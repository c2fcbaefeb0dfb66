"""Mosquitto's `$SYS/broker/...` topics with paho: retained figures every `sys_interval`
seconds, readable by monitoring users and administrators only, never matched by a filter
starting with a wildcard [MQTT-4.7.2-1]."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from mqtt_clientkit import V5, V311, Peer

TOPICS = ("$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected",
          "$SYS/broker/messages/received", "$SYS/broker/messages/sent")


def _user(broker: Any, name: str, tags: str) -> None:
    base = f"http://127.0.0.1:{broker.ports['http']}/api"
    with httpx.Client(auth=(broker.user, broker.password), timeout=10) as api:
        assert api.put(f"{base}/users/{name}", json={"password": "pw", "tags": tags}
                       ).status_code == 201
        assert api.put(f"{base}/permissions/%2F/{name}",
                       json={"configure": ".*", "write": ".*", "read": ".*"}
                       ).status_code in (201, 204)


def _peer(broker: Any, client_id: str, user: str, protocol: int = V311) -> Peer:
    peer = Peer(broker.ports["mqtt"], client_id, protocol, connect=False)
    peer.client.username_pw_set(user, "pw")
    peer.connect()
    return peer


def _collect(peer: Peer, want: Callable[[dict[str, bytes]], bool]) -> dict[str, bytes]:
    """Messages of `peer` by topic (the last of each), until `want` holds (at most 15 s)."""
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + 15
    while not want(seen):
        assert time.monotonic() < deadline, f"only got {seen}"
        msg = peer.message()
        seen[msg.topic] = msg.payload
    return seen


def test_sys_topics_retained_and_updated_for_a_monitoring_user(
        configured_broker: Callable[[str], Any], unique: Callable[[str], str]) -> None:
    broker = configured_broker("[mqtt]\nsys_interval = 1\n")
    _user(broker, "watcher", "monitoring")
    watcher = _peer(broker, unique("sys-w"), "watcher")
    try:
        assert not watcher.subscribe("$SYS/broker/#", 0)[0].is_failure
        first = watcher.message()
        assert first.retain, "the figures are retained messages"
        seen = _collect(watcher, lambda s: set(TOPICS) <= s.keys())
        assert re.fullmatch(rb"gateway version \d+\.\d+\.\d+.*", seen["$SYS/broker/version"])
        assert re.fullmatch(rb"\d+ seconds", seen["$SYS/broker/uptime"])
        # the figures published since the watcher connected count it
        seen = _collect(watcher, lambda s: int(s.get("$SYS/broker/clients/connected",
                                                     b"0")) >= 1)
        # a publish from another MQTT client, then a delivery to it, show in the counts
        _user(broker, "sender", "")
        sender = _peer(broker, unique("sys-s"), "sender")
        try:
            assert not sender.subscribe("plant/+", 0)[0].is_failure
            sender.publish("plant/temp", b"20", qos=1)
            assert sender.message().payload == b"20"
            seen = _collect(watcher, lambda s: int(s.get("$SYS/broker/messages/received",
                                                         b"0")) >= 1
                            and int(s.get("$SYS/broker/messages/sent", b"0")) >= 1
                            and int(s.get("$SYS/broker/clients/connected", b"0")) >= 2)
        finally:
            sender.close()
    finally:
        watcher.close()


def test_sys_topics_refused_to_a_user_without_monitoring(
        configured_broker: Callable[[str], Any], unique: Callable[[str], str]) -> None:
    broker = configured_broker("[mqtt]\nsys_interval = 1\n")
    _user(broker, "plain", "")
    for protocol in (V311, V5):
        peer = _peer(broker, unique("sys-p"), "plain", protocol)
        try:
            codes = peer.subscribe([("$SYS/broker/uptime", 0), ("plain/#", 0)])
            assert [c.is_failure for c in codes] == [True, False], codes
            peer.publish("plain/x", b"marker", qos=1)
            assert peer.message().topic == "plain/x"  # and no $SYS message before it
        finally:
            peer.close()


def test_wildcards_at_the_first_level_do_not_match_sys(
        configured_broker: Callable[[str], Any], unique: Callable[[str], str]) -> None:
    broker = configured_broker("[mqtt]\nsys_interval = 1\n")
    _user(broker, "admin2", "administrator")
    wild = _peer(broker, unique("sys-wild"), "admin2")
    exact = _peer(broker, unique("sys-exact"), "admin2")
    try:
        codes = wild.subscribe([("#", 0), ("+/broker/uptime", 0)])
        assert not any(c.is_failure for c in codes)
        assert not exact.subscribe("$SYS/broker/uptime", 0)[0].is_failure
        # the retained one, then a live one: a publication happened after `wild` subscribed
        assert exact.message().retain
        exact.message()
        wild.publish("after/sys", b"marker", qos=1)
        got = wild.message()
        assert (got.topic, got.payload) == ("after/sys", b"marker"), got.topic
    finally:
        wild.close()
        exact.close()


def test_sys_interval_zero_publishes_nothing(
        configured_broker: Callable[[str], Any], unique: Callable[[str], str]) -> None:
    broker = configured_broker("[mqtt]\nsys_interval = 0\n")
    _user(broker, "watcher0", "monitoring")
    peer = _peer(broker, unique("sys-0"), "watcher0")
    try:
        assert not peer.subscribe([("$SYS/#", 0), ("mark", 0)])[0].is_failure
        peer.publish("mark", b"m", qos=1)
        got = peer.message()
        assert got.topic == "mark"  # no retained $SYS figure came first
    finally:
        peer.close()
