"""OAuth 2.0 / JWT access tokens as the password on every protocol, as RabbitMQ's
rabbitmq_auth_backend_oauth2 takes them, with tokens signed here (an RS256 key pair made in
the test, and an HS256 secret): pika, paho-mqtt, stomp.py, autobahn (WAMP ticket) and httpx
(Basic and `Authorization: Bearer`). Expired, not-yet-valid, wrong-audience and wrongly
signed tokens are refused everywhere; a scope-limited token gets exactly its scopes through
the ordinary permission checks (vhost, configure/write/read, topic)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sec_clients import TIMEOUT, amqp_login, http_login, mqtt_login, stomp_login, wamp_login

from gateway.auth import AuthService
from gateway.auth.oauth import TokenVerifier, looks_like_token, wildcard_match
from gateway.config import load_config
from gateway.core.errors import AccessRefused, NotAllowed

RSID = "gateway"
HMAC_SECRET = b"a-shared-secret-of-at-least-32-bytes!!"
FULL = ("gateway.configure:*/* gateway.write:*/* gateway.read:*/* "
        "gateway.write:*/amq.topic/* gateway.read:*/amq.topic/*")


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY = _private_key()
OTHER_KEY = _private_key()  # a key the broker does not know


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def token(sub: str = "svc", scope: str = FULL, *, exp: float = 300, nbf: float | None = None,
          aud: str | list[str] = RSID, key: Any = KEY, alg: str = "RS256",
          kid: str | None = "rsa1", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "scope": scope, "aud": aud, "exp": now + exp,
                               "iat": now, **claims}
    if nbf is not None:
        payload["nbf"] = now + nbf
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def config_text(tmp_path: Path) -> str:
    pem = tmp_path / "oauth-public.pem"
    pem.write_bytes(_public_pem(KEY))
    secret = tmp_path / "oauth-secret"
    secret.write_bytes(HMAC_SECRET)
    return f"""
[oauth2]
resource_server_id = "{RSID}"
default_key = "rsa1"
[oauth2.signing_keys]
rsa1 = "{pem}"
hmac1 = "{secret}"
"""


@pytest.fixture
def token_broker(configured_broker: Callable[[str], Any], tmp_path: Path) -> Any:
    broker = configured_broker(config_text(tmp_path))
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                      auth=("guest", "guest"), timeout=TIMEOUT) as api:
        assert api.put("/vhosts/tenant-a", json={}).status_code == 201
    return broker


def logins(broker: Any, tok: str, client_id: str) -> dict[str, Any]:
    """One login per protocol with `tok` as the password (the user name is ignored)."""
    return {"amqp": amqp_login(broker, "ignored", tok),
            "mqtt": mqtt_login(broker, "ignored", tok, client_id),
            "stomp": stomp_login(broker, "ignored", tok),
            "wamp": wamp_login(broker, "ignored", tok),
            "http": http_login(broker, "ignored", tok),
            "bearer": httpx.get(f"http://127.0.0.1:{broker.ports['http']}/api/whoami",
                                headers={"Authorization": f"Bearer {tok}"},
                                timeout=TIMEOUT).status_code}


ALL_IN = {"amqp": True, "mqtt": True, "stomp": True, "wamp": "ticket", "http": True,
          "bearer": 200}
ALL_OUT = {"amqp": False, "mqtt": False, "stomp": False,
           "wamp": "wamp.error.authentication_failed", "http": False, "bearer": 401}


def test_a_valid_token_logs_in_on_every_protocol(token_broker: Any) -> None:
    tok = token("svc", FULL + " gateway.tag:administrator")
    assert logins(token_broker, tok, "tok-ok") == ALL_IN
    hs = token("svc-hs", FULL + " gateway.tag:management", key=HMAC_SECRET, alg="HS256",
               kid="hmac1")
    assert logins(token_broker, hs, "tok-hs") == ALL_IN
    who = httpx.get(f"http://127.0.0.1:{token_broker.ports['http']}/api/whoami",
                    headers={"Authorization": f"Bearer {tok}"}, timeout=TIMEOUT).json()
    assert who["name"] == "svc" and "administrator" in who["tags"]
    # preferred user name: sub, else client_id; no kid: the default key
    assert amqp_login(token_broker, "x", token(kid=None))
    log = token_broker.output(2000)
    assert "login: protocol=AMQP address=127.0.0.1 user='svc' with an OAuth 2 token" in log
    assert tok not in log  # the token is never logged


@pytest.mark.parametrize("why,tok,reason", [
    ("expired", lambda: token(exp=-30), "the token has expired"),
    ("not yet valid", lambda: token(nbf=600), "not yet valid"),
    ("wrong audience", lambda: token(aud="someone-else"), "audience is not 'gateway'"),
    ("signed by an unknown key", lambda: token(key=OTHER_KEY), "signature does not verify"),
    ("unknown key id", lambda: token(kid="nope"), "no signing key 'nope'"),
    ("HMAC with the public key", lambda: jwt.encode(
        {"sub": "x", "aud": RSID, "exp": int(time.time()) + 60, "scope": FULL},
        "not-the-secret-but-long-enough-for-hs256", algorithm="HS256",
        headers={"kid": "rsa1"}), "algorithm 'HS256' is not accepted for key 'rsa1'"),
    ("no exp", lambda: jwt.encode({"sub": "x", "aud": RSID, "scope": FULL}, KEY,
                                  algorithm="RS256", headers={"kid": "rsa1"}), "exp"),
])
def test_bad_tokens_are_refused_on_every_protocol(token_broker: Any, why: str,
                                                  tok: Callable[[], str], reason: str) -> None:
    assert logins(token_broker, tok(), f"tok-{why.replace(' ', '-')}") == ALL_OUT, why
    assert "OAuth 2 token refused" in token_broker.output(2000)
    assert reason in token_broker.output(2000), why


def test_a_scope_limited_token_gets_only_its_scopes(token_broker: Any) -> None:
    scopes = ("gateway.configure:tenant-a/alice.* gateway.write:tenant-a/alice.* "
              "gateway.read:tenant-a/alice.* gateway.write:tenant-a/amq.topic/alice.* "
              "gateway.read:tenant-a/amq.topic/alice.* gateway.read:tenant-a/amq.topic "
              "gateway.write:tenant-a/amq.topic "
              # MQTT's session queues (mqtt-subscription-<client id>qos<N>)
              "gateway.configure:tenant-a/mqtt-subscription-* "
              "gateway.write:tenant-a/mqtt-subscription-* "
              "gateway.read:tenant-a/mqtt-subscription-*")
    tok = token("alice", scopes)
    port = token_broker.ports["amqp"]

    def connect(vhost: str) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, vhost, pika.PlainCredentials("alice", tok)))

    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        connect("/")  # no scope for the vhost "/"
    conn = connect("tenant-a")
    ch = conn.channel()
    ch.queue_declare("alice.inbox")
    ch.queue_bind("alice.inbox", "amq.topic", "alice.news")
    ch.basic_publish("amq.topic", "alice.news", b"hello")
    deadline = time.monotonic() + TIMEOUT
    got = None
    while got is None and time.monotonic() < deadline:
        got = ch.basic_get("alice.inbox", auto_ack=True)[2]
    assert got == b"hello"
    for action in (lambda c: c.queue_declare("bob.inbox"),  # configure
                   lambda c: c.basic_get("bob.inbox"),  # read
                   lambda c: c.queue_bind("alice.inbox", "amq.topic", "bob.#")):  # topic
        c = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            action(c)
        assert refused.value.reply_code in (403, 404), refused.value
    c = conn.channel()
    c.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        c.basic_publish("amq.topic", "bob.news", b"x")  # topic write refused
    assert refused.value.reply_code == 403
    assert "access to topic 'bob.news' in exchange 'amq.topic' in vhost 'tenant-a' " \
           "refused for user 'alice'" in refused.value.reply_text
    conn.close()
    # MQTT into tenant-a: its topic scopes decide what it may publish and subscribe to
    assert _mqtt_round_trip(token_broker, tok, "alice/news", "tenant-a")
    assert not _mqtt_round_trip(token_broker, tok, "bob/news", "tenant-a")
    # no management tag: the API says so
    r = httpx.get(f"http://127.0.0.1:{token_broker.ports['http']}/api/whoami",
                  headers={"Authorization": f"Bearer {tok}"}, timeout=TIMEOUT)
    assert r.status_code == 401 and "Not management user" in r.text


def _mqtt_round_trip(broker: Any, tok: str, topic: str, vhost: str) -> bool:
    """Subscribe and publish `topic` with the token; True if the message came back."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rt-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(f"{vhost}:ignored", tok)
    connected, subscribed, received = threading.Event(), threading.Event(), threading.Event()
    codes: list[int] = []
    client.on_connect = lambda *_: connected.set()

    def on_subscribe(_c: Any, _u: Any, _m: Any, rcs: Any, _p: Any) -> None:
        codes.extend(int(getattr(rc, "value", rc)) for rc in rcs)
        subscribed.set()

    client.on_subscribe = on_subscribe
    client.on_message = lambda *_: received.set()
    client.connect("127.0.0.1", broker.ports["mqtt"])
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT)
        client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT)
        if codes[0] >= 0x80:
            return False
        client.publish(topic, b"m", qos=1)
        return received.wait(3)
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------- the service, no sockets


def _service(tmp_path: Path) -> AuthService:
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path), encoding="utf-8")
    config = load_config(path)
    auth = AuthService(config.auth, config.oauth2)
    auth.add_vhost("tenant-a")
    return auth


def test_token_permissions_end_at_exp_and_follow_rabbitmq_scopes(tmp_path: Path) -> None:
    auth = _service(tmp_path)
    now = time.time()
    tok = token("t", "gateway.read:tenant-a/q* gateway.write:%2F/x*y/rk.* "
                     "other.read:*/* gateway.configure:{vhost}/{sub}-*", exp=60)
    user = auth.authenticate("ignored", tok, peer="127.0.0.1")
    assert user.name == "t" and user.token is not None
    assert auth.allowed(user, "tenant-a", "read", "queue1")
    assert not auth.allowed(user, "tenant-a", "write", "queue1")
    assert auth.allowed(user, "/", "write", "xaay", resource_kind="exchange")
    assert auth.topic_allowed(user, "/", "xay", "write", "rk.1")
    assert not auth.topic_allowed(user, "/", "xay", "write", "other")
    assert not auth.topic_allowed(user, "tenant-a", "q1", "read", "k")  # no key pattern
    assert auth.allowed(user, "/", "configure", "t-tmp")  # {vhost} and {sub}
    assert not auth.allowed(user, "/", "read", "x")  # another prefix's scope is ignored
    auth.check_vhost(user, "tenant-a")
    with pytest.raises(NotAllowed):
        auth.check_vhost(user, "nope")
    with pytest.raises(AccessRefused):
        auth.check(user, "tenant-a", "configure", "q1")
    assert auth.user("t") is None  # exists only for the connection
    auth.wall_clock = lambda: now + 61  # the token has expired since login
    assert not auth.allowed(user, "tenant-a", "read", "queue1")
    with pytest.raises(NotAllowed):
        auth.check_vhost(user, "tenant-a")


def test_wildcards_and_token_shapes() -> None:
    assert wildcard_match("anything", "*") and wildcard_match("", "*")
    assert wildcard_match("foobar", "foo*") and not wildcard_match("barfoo", "foo*")
    assert wildcard_match("foofoo", "*foo") and wildcard_match("a-mid-z", "a*mid*z")
    assert not wildcard_match("a-mi-z", "a*mid*z") and not wildcard_match("az", "a*zz")
    assert wildcard_match("/", "%2F") and wildcard_match("a*b", "a%2Ab")
    assert not wildcard_match("ab", "a%2Ab")
    assert looks_like_token(token()) and not looks_like_token("guest")
    assert not looks_like_token("a.b.c") and not looks_like_token("x" * 100)
    verifier = TokenVerifier(RSID, signing_keys={"rsa1": KEY.public_key()},
                             preferred_username_claims=["user_name"],
                             additional_scopes_key="roles realm_access.roles")
    name, grant = verifier.verify(token(
        "sub-name", "gateway.read:*/*", user_name="preferred",
        roles=["gateway.tag:monitoring"], realm_access={"roles": ["gateway.write:a/b"]}))
    assert name == "preferred" and grant.tags == ("monitoring",)
    assert {(s.permission, s.vhost, s.name) for s in grant.scopes} == {
        ("read", "*", "*"), ("write", "a", "b")}


def test_a_connection_is_closed_when_its_token_expires(token_broker: Any) -> None:
    """As RabbitMQ's oauth2 backend: a connection whose access token expires is closed by
    the broker (within the once-a-second tick), not left consuming what it had subscribed
    to. pika sees connection.close; paho sees its connection end."""
    tok = token("short-lived", exp=3)
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=token_broker.ports["amqp"],
        credentials=pika.PlainCredentials("ignored", tok), connection_attempts=1,
        socket_timeout=TIMEOUT)
    conn = pika.BlockingConnection(params)
    lost = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tok-expiring",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set("ignored", tok)
    client.on_disconnect = lambda *_args: lost.set()
    client.connect("127.0.0.1", token_broker.ports["mqtt"])
    client.loop_start()
    try:
        closed: list[pika.exceptions.ConnectionClosedByBroker] = []
        deadline = time.monotonic() + 3 + TIMEOUT
        while time.monotonic() < deadline and not closed:
            try:
                conn.process_data_events(time_limit=0.2)
            except pika.exceptions.ConnectionClosedByBroker as exc:
                closed.append(exc)
        assert closed and closed[0].reply_code == 320
        assert "access token expired" in closed[0].reply_text
        assert lost.wait(TIMEOUT), "the MQTT connection was not closed"
    finally:
        client.loop_stop()
        if conn.is_open:
            conn.close()
    assert "access token expired" in token_broker.output(2000)
