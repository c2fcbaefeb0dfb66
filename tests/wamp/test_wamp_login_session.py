"""WAMP logins at the session level (frames in, frames out, no sockets): WAMP-CRA with the
broker's stored key, loopback-only users from a remote peer, and a ticket check that runs
outside the session (as the I/O layer runs it in a thread) while later messages wait."""

from __future__ import annotations

import json
from typing import Any

import pytest
from autobahn.wamp import auth as ab_auth

from gateway.auth import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.base import MemoryStore
from protocols.wamp.codec import Serializer
from protocols.wamp.router import WampRouter
from protocols.wamp.session import WampSession, broker_cra_lookup

ROLES = {"publisher": {}, "subscriber": {}}


def session(auth: AuthService, broker: Broker, *, loopback: bool = True) -> WampSession:
    return WampSession(broker, auth, WampRouter(), Serializer.JSON, peer=("127.0.0.1", 1),
                       loopback=loopback, clock=lambda: 10.0,
                       cra_lookup=broker_cra_lookup(auth))


def world() -> tuple[AuthService, Broker]:
    broker = Broker(MemoryStore())
    auth = AuthService(load_config().auth)
    auth.attach(None, broker)
    auth.change_password("guest", "guest-pw")  # scrypt + WAMP-CRA key
    return auth, broker


def send(s: WampSession, *msg: Any) -> None:
    s.receive_message(json.dumps(list(msg)))


def out(s: WampSession) -> list[Any]:
    return [json.loads(m) for m in s.messages_to_send()]


def cra_hello(s: WampSession, secret: str) -> list[Any]:
    send(s, 1, "/", {"roles": ROLES, "authmethods": ["wampcra"], "authid": "guest"})
    [[code, method, extra]] = out(s)
    assert (code, method) == (4, "wampcra")
    key = ab_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
    send(s, 5, ab_auth.compute_wcs(key, extra["challenge"]).decode(), {})
    return out(s)


def test_wampcra_with_the_stored_key() -> None:
    auth, broker = world()
    [[code, _sid, details]] = cra_hello(session(auth, broker), "guest-pw")
    assert code == 2
    assert (details["authid"], details["authrole"], details["authmethod"]) == (
        "guest", "administrator", "wampcra")
    [[code, _, reason]] = cra_hello(session(auth, broker), "wrong")
    assert (code, reason) == (3, "wamp.error.authentication_failed")


def test_loopback_only_user_refused_from_a_remote_peer_by_ticket_and_cra(
        caplog: pytest.LogCaptureFixture) -> None:
    auth, broker = world()
    s = session(auth, broker, loopback=False)
    [[code, _, reason]] = cra_hello(s, "guest-pw")
    assert (code, reason) == (3, "wamp.error.authentication_failed")
    s = session(auth, broker, loopback=False)
    send(s, 1, "/", {"roles": ROLES, "authmethods": ["ticket"], "authid": "guest"})
    assert out(s)[0][:2] == [4, "ticket"]
    send(s, 5, "guest-pw", {})
    [[code, _, reason]] = out(s)
    assert (code, reason) == (3, "wamp.error.authentication_failed")
    assert "login failed: protocol=WAMP address=127.0.0.1 user='guest': user 'guest' can " \
           "only connect via localhost" in caplog.messages


def test_messages_wait_for_a_ticket_check_run_outside() -> None:
    auth, broker = world()
    auth.inline_checks = False  # as the server runs it: the check is handed out
    s = session(auth, broker)
    send(s, 1, "/", {"roles": ROLES, "authmethods": ["ticket"], "authid": "guest"})
    out(s)
    send(s, 5, "guest-pw", {})
    send(s, 32, 7, {}, "com.example.x")  # pipelined SUBSCRIBE
    check = s.password_check
    assert check is not None and out(s) == []
    s.password_check = None
    check.finish(check.verify())
    s.resume_input()
    welcome, subscribed = out(s)
    assert welcome[0] == 2 and welcome[2]["authmethod"] == "ticket"
    assert subscribed[:2] == [33, 7]


@pytest.mark.parametrize(("details", "reason"), [
    ({"roles": ROLES}, "wamp.error.not_authorized"),  # no authmethods: anonymous
    ({"roles": ROLES, "authmethods": ["anonymous"]}, "wamp.error.not_authorized"),
    ({"roles": ROLES, "authmethods": ["anonymous", "ticket"]},  # ticket needs an authid
     "wamp.error.no_matching_auth_method"),
])
def test_anonymous_hello_is_aborted_unless_allowed(details: dict[str, Any], reason: str) -> None:
    auth, broker = world()
    s = session(auth, broker)  # the session's default, as [wamp] allow_anonymous's: false
    send(s, 1, "/", details)
    [[code, _details, got]] = out(s)
    assert (code, got) == (3, reason) and s.closed and s.user is None
