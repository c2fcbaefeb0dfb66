"""Failed logins counted per source address across every protocol, then the address refused
without a password check for the block time, with real clients: pika, paho-mqtt, stomp.py,
autobahn (ticket and WAMP-CRA) and httpx (management API basic auth). Every failure is
logged with protocol, address and user name, never the password."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from sec_clients import amqp_login, http_login, mqtt_login, stomp_login, wamp_login

BLOCK = 5  # seconds (room for six refused logins on a busy machine)
CONFIG = f"""
[auth]
loopback_users = ["guest"]
failed_login_limit = 3
failed_login_window = 60
failed_login_block = {BLOCK}
failed_login_exempt = []
"""
PASSWORD = "r1ght-pw"
WRONG = "wr0ng-pw"


def make_user(broker: Any, name: str) -> None:
    api = httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                       auth=("guest", "guest"), timeout=10)
    assert api.put(f"/users/{name}", json={"password": PASSWORD, "tags": "management"}
                   ).status_code == 201
    assert api.put(f"/permissions/%2F/{name}", json={"configure": ".*", "write": ".*",
                                                     "read": ".*"}).status_code == 201
    api.close()


def wait_unblocked(login: Callable[[], bool]) -> float:
    """Seconds until `login` succeeds again (bounded polling, at most 15 s)."""
    start = time.monotonic()
    while time.monotonic() - start < 15:
        if login():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError("still refused 15 s after the block should have ended")


def test_failures_on_three_protocols_block_every_protocol(
        configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker(CONFIG)
    make_user(broker, "alice")
    assert amqp_login(broker, "alice", PASSWORD)  # the right password works first
    assert not amqp_login(broker, "alice", WRONG)
    assert not mqtt_login(broker, "alice", WRONG, "c1")
    assert not stomp_login(broker, "alice", WRONG)
    # blocked now: the right password is refused everywhere, quickly
    start = time.monotonic()
    assert not amqp_login(broker, "alice", PASSWORD)
    assert not mqtt_login(broker, "alice", PASSWORD, "c2")
    assert not stomp_login(broker, "alice", PASSWORD)
    assert wamp_login(broker, "alice", PASSWORD) == "wamp.error.authentication_failed"
    assert wamp_login(broker, "alice", PASSWORD, "wampcra") == \
        "wamp.error.authentication_failed"
    assert not http_login(broker, "alice", PASSWORD)
    assert time.monotonic() - start < BLOCK, "refusals while blocked were not quick"
    waited = wait_unblocked(lambda: amqp_login(broker, "alice", PASSWORD))
    assert waited < BLOCK + 5
    assert mqtt_login(broker, "alice", PASSWORD, "c3")
    assert stomp_login(broker, "alice", PASSWORD)
    assert wamp_login(broker, "alice", PASSWORD) == "ticket"
    assert wamp_login(broker, "alice", PASSWORD, "wampcra") == "wampcra"
    assert http_login(broker, "alice", PASSWORD)

    log = broker.output(2000)
    for protocol in ("AMQP", "MQTT", "STOMP"):
        assert (f"login failed: protocol={protocol} address=127.0.0.1 user='alice': "
                "user 'alice' - invalid credentials") in log, protocol
    assert f"login: address 127.0.0.1 blocked for {BLOCK} s after 3 failed logins" in log
    for protocol in ("WAMP", "HTTP"):
        assert f"login failed: protocol={protocol} address=127.0.0.1 user='alice': " \
               "user 'alice' - address blocked" in log, protocol
    assert WRONG not in log and PASSWORD not in log


def test_wamp_and_http_failures_count_too(configured_broker: Callable[[str], Any]) -> None:
    broker = configured_broker(CONFIG)
    make_user(broker, "bob")
    assert wamp_login(broker, "bob", WRONG) == "wamp.error.authentication_failed"
    assert wamp_login(broker, "bob", WRONG, "wampcra") == "wamp.error.authentication_failed"
    assert not http_login(broker, "ghost", WRONG)  # unknown names count as well
    assert not amqp_login(broker, "bob", PASSWORD)
    log = broker.output(2000)
    assert "login failed: protocol=WAMP address=127.0.0.1 user='bob': user 'bob' - " \
           "WAMP-CRA signature refused" in log
    assert "login failed: protocol=HTTP address=127.0.0.1 user='ghost'" in log


def test_loopback_is_exempt_by_default(broker: Any) -> None:
    """The shared broker runs the default config: 127.0.0.0/8 is never blocked."""
    for _ in range(12):
        assert not http_login(broker, "guest", WRONG)
    assert http_login(broker, "guest", "guest")
