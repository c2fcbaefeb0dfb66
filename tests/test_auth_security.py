"""gateway.auth: scrypt hashes, WAMP-CRA keys, failed-login limits, topic permissions, and
their persistence and definitions round trip (no sockets: the service, the store, bytes)."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp import auth as ab_auth

from gateway.auth import AuthService, LoginRefused, User, hash_password_sha256
from gateway.auth.login import FailedLogins
from gateway.auth.passwords import (
    HASHING_SCRYPT,
    HASHING_SHA256,
    CraKey,
    check_password,
    derive_cra_key,
    hash_password,
    hashing_algorithm,
    is_password_hash,
    is_slow_hash,
)
from gateway.config import ConfigError, load_config
from gateway.core.broker import Broker
from gateway.core.errors import AccessRefused, PreconditionFailed
from gateway.definitions import export_definitions, import_definitions
from gateway.store.base import MemoryStore
from gateway.store.disk import DiskStore

# --------------------------------------------------------------------------- scrypt


def test_scrypt_hash_layout_and_parameters() -> None:
    salt = bytes(range(16))
    text = hash_password("pässwörd", salt=salt)
    prefix, algo, params, salt_b64, key_b64 = text.split("$")
    assert (prefix, algo, params) == ("", "scrypt", "ln=14,r=8,p=1")
    pad = "=" * (-len(key_b64) % 4)
    assert base64.b64decode(salt_b64 + "=" * (-len(salt_b64) % 4)) == salt
    assert base64.b64decode(key_b64 + pad) == hashlib.scrypt(
        "pässwörd".encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    assert check_password(text, "pässwörd") and not check_password(text, "passwörd")
    assert is_slow_hash(text) and hashing_algorithm(text) == HASHING_SCRYPT
    assert is_password_hash(text, HASHING_SCRYPT) and not is_password_hash(text,
                                                                           HASHING_SHA256)


def test_scrypt_hashes_are_salted_and_parameters_travel_with_them() -> None:
    assert hash_password("x") != hash_password("x")
    cheap = hash_password("pw", log_n=10)  # other parameters keep checking
    assert cheap.startswith("$scrypt$ln=10,") and check_password(cheap, "pw")


def test_scrypt_check_costs_milliseconds_not_microseconds() -> None:
    stored = hash_password("pw")
    start = time.perf_counter()
    assert check_password(stored, "pw")
    took = time.perf_counter() - start
    assert took > 0.002, f"an scrypt check took only {took * 1000:.2f} ms"


@pytest.mark.parametrize("bad", [
    "$scrypt$ln=14,r=8,p=1$$AAAA", "$scrypt$ln=40,r=8,p=1$AAAAAAAA$" + "A" * 43,
    "$scrypt$ln=14,r=8,p=1$AAAA$short", "$scrypt$ln=14$AAAA$" + "A" * 43])
def test_malformed_scrypt_hashes_never_match(bad: str) -> None:
    assert not is_password_hash(bad)
    assert not check_password(bad, "")


def test_rabbitmq_sha256_hashes_still_check() -> None:
    legacy = hash_password_sha256("guest")
    assert check_password(legacy, "guest") and not is_slow_hash(legacy)
    assert hashing_algorithm(legacy) == HASHING_SHA256


# --------------------------------------------------------------------------- WAMP-CRA


def test_cra_key_is_what_autobahn_derives() -> None:
    key = derive_cra_key("s3cret", salt="salt123", iterations=1000, keylen=32)
    assert key.key.encode() == ab_auth.derive_key("s3cret", "salt123", 1000, 32)
    assert CraKey.decode(key.encode()) == key
    assert derive_cra_key("s3cret").salt != derive_cra_key("s3cret").salt


def service(tmp_path: Path, extra: str = "") -> AuthService:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[auth]
loopback_users = ["guest"]
failed_login_limit = 3
failed_login_window = 60
failed_login_block = 30
failed_login_exempt = ["10.9.0.0/16"]
{extra}
[[users]]
name = "guest"
password = "guest"
[[users]]
name = "app"
password = "app-pw"
[[users]]
name = "legacy"
password_hash = "{hash_password_sha256('old-pw')}"
[[vhosts]]
name = "/"
[[permissions]]
user = "app"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
""", encoding="utf-8")
    return AuthService(load_config(path).auth)


def test_plain_passwords_get_scrypt_and_a_cra_key(tmp_path: Path) -> None:
    auth = service(tmp_path)
    app = auth.user("app")
    assert app is not None and is_slow_hash(app.password_hash)
    key = auth.wampcra_key("app")
    assert key is not None and key.iterations >= 1000 and key.keylen == 32
    assert key.key.encode() == ab_auth.derive_key("app-pw", key.salt, key.iterations, 32)
    assert auth.wampcra_key("legacy") is None and auth.wampcra_key("nobody") is None
    auth.add_user("api", password="p1", tags=["management"])
    auth.change_password("legacy", "new-pw")
    for name, pw in (("api", "p1"), ("legacy", "new-pw")):
        user = auth.user(name)
        assert user is not None and is_slow_hash(user.password_hash)
        cra = auth.wampcra_key(name)
        assert cra is not None and cra.key.encode() == ab_auth.derive_key(
            pw, cra.salt, cra.iterations, cra.keylen)
    # a tags change re-sends the hash: the CRA key stays
    api = auth.user("api")
    assert api is not None
    auth.add_user("api", password_hash=api.password_hash, tags=["administrator"])
    assert auth.wampcra_key("api") is not None


# --------------------------------------------------------------------------- logins


def login(auth: AuthService, name: str, password: str, peer: str, now: float = 100.0,
          protocol: str = "AMQP") -> User | LoginRefused:
    answers: list[User | LoginRefused] = []
    pending = auth.login(name, password, peer=peer, protocol=protocol, now=now,
                         then=answers.append)
    assert pending is None  # inline_checks: answered at once
    return answers[0]


def test_failed_logins_block_the_address_then_it_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    auth = service(tmp_path)
    caplog.set_level(logging.INFO, "gateway.auth")
    for _ in range(3):
        assert isinstance(login(auth, "app", "wrong-pw", "203.0.113.7",
                                protocol="MQTT"), LoginRefused)
    refused = login(auth, "app", "app-pw", "203.0.113.7", now=101.0)
    assert isinstance(refused, LoginRefused) and "blocked" in refused.reason
    # another address is not affected; the blocked one may try again after the block
    assert isinstance(login(auth, "app", "app-pw", "198.51.100.1", now=101.0), User)
    assert isinstance(login(auth, "app", "app-pw", "203.0.113.7", now=131.0), User)
    lines = [r.getMessage() for r in caplog.records]
    assert "login failed: protocol=MQTT address=203.0.113.7 user='app': user 'app' - " \
           "invalid credentials" in lines
    assert any("203.0.113.7 blocked for 30 s" in line for line in lines)
    assert not any("wrong-pw" in line or "app-pw" in line for line in lines)


def test_exempt_networks_and_unknown_users(tmp_path: Path) -> None:
    auth = service(tmp_path)
    for _ in range(5):
        login(auth, "app", "nope", "10.9.3.4")
        login(auth, "ghost", "nope", "192.0.2.9")  # unknown names count too
    assert isinstance(login(auth, "app", "app-pw", "10.9.3.4"), User)
    assert auth.login_blocked("192.0.2.9", 100.0)


def test_failed_logins_window_and_bound() -> None:
    fl = FailedLogins(limit=2, window=10, block=5)
    assert not fl.failed("a", 0) and not fl.failed("a", 11)  # two windows: no block
    assert fl.failed("a", 12) and fl.blocked_for("a", 13) == pytest.approx(4)
    assert fl.blocked_for("a", 17.5) == 0.0
    many = FailedLogins(limit=5, window=1, block=1)
    for i in range(70000):
        many.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", float(i))
    assert len(many) <= 65536


def test_loopback_users_only_from_loopback(tmp_path: Path) -> None:
    auth = service(tmp_path)
    refused = login(auth, "guest", "guest", "203.0.113.8", protocol="HTTP")
    assert isinstance(refused, LoginRefused)
    assert refused.reason == "user 'guest' can only connect via localhost"
    assert isinstance(login(auth, "guest", "guest", "127.0.0.1"), User)
    assert isinstance(login(auth, "guest", "guest", "::1"), User)


def test_slow_checks_are_handed_out_unless_inline(tmp_path: Path) -> None:
    auth = service(tmp_path)
    auth.inline_checks = False
    answers: list[Any] = []
    pending = auth.login("app", "app-pw", peer="127.0.0.1", protocol="AMQP", now=1.0,
                         then=answers.append)
    assert pending is not None and answers == []
    pending.finish(pending.verify())
    assert isinstance(answers[0], User)
    # a legacy SHA-256 user costs an scrypt check too (handed out); a recently verified
    # password is answered at once
    pending = auth.login("legacy", "old-pw", peer="127.0.0.1", protocol="AMQP", now=2.0,
                         then=answers.append)
    assert pending is not None
    pending.finish(pending.verify())
    assert auth.login("app", "app-pw", peer="127.0.0.1", protocol="AMQP", now=2.0,
                      then=answers.append) is None
    assert [a.name for a in answers[1:]] == ["legacy", "app"]
    # the cache does not answer for another password
    assert auth.login("app", "other", peer="127.0.0.1", protocol="AMQP", now=3.0,
                      then=answers.append) is not None


# --------------------------------------------------------------------------- topic permissions


def test_topic_permissions_follow_rabbitmq(tmp_path: Path) -> None:
    auth = service(tmp_path)
    app = auth.user("app")
    assert app is not None
    assert auth.topic_allowed(app, "/", "amq.topic", "write", "anything")  # none set
    auth.set_topic_permissions("app", "/", "amq.topic", r"^sensors\.{username}\.", "")
    assert auth.topic_allowed(app, "/", "amq.topic", "write", "sensors.app.temp")
    assert not auth.topic_allowed(app, "/", "amq.topic", "write", "sensors.other.temp")
    assert not auth.topic_allowed(app, "/", "amq.topic", "read", "sensors.app.temp")  # ""
    assert auth.topic_allowed(app, "/", "other.topic", "write", "x")  # other exchange
    auth.set_topic_permissions("app", "/", "mqtt", r"^dev\.{client_id}$", ".*")
    assert auth.topic_allowed(app, "/", "mqtt", "write", "dev.c1", client_id="c1")
    assert not auth.topic_allowed(app, "/", "mqtt", "write", "dev.c1x", client_id="c1")
    # values are matched literally
    auth.add_user("a.b", password="x")
    ab = auth.user("a.b")
    assert ab is not None
    auth.set_topic_permissions("a.b", "/", "amq.topic", "^{username}$", "^{vhost}")
    assert auth.topic_allowed(ab, "/", "amq.topic", "write", "a.b")
    assert not auth.topic_allowed(ab, "/", "amq.topic", "write", "aXb")
    with pytest.raises(AccessRefused) as refused:
        auth.check_topic(app, "/", "amq.topic", "write", "nope")
    assert refused.value.text == ("access to topic 'nope' in exchange 'amq.topic' in vhost "
                                  "'/' refused for user 'app'")
    with pytest.raises(PreconditionFailed):
        auth.set_topic_permissions("app", "/", "amq.topic", "(", ".*")
    auth.clear_topic_permissions("app", "/", "mqtt")
    assert [t.exchange for t in auth.list_topic_permissions() if t.user == "app"] == [
        "amq.topic"]
    auth.delete_user("a.b")
    assert all(t.user != "a.b" for t in auth.list_topic_permissions())


# --------------------------------------------------------------------------- persistence


def test_hashes_cra_keys_and_topic_permissions_survive_a_restart(tmp_path: Path) -> None:
    def start() -> tuple[DiskStore, AuthService]:
        store = DiskStore(tmp_path / "data", fsync=False)
        auth = service(tmp_path)
        broker = Broker(store, ())
        auth.attach(store, broker)
        state = store.recover()
        auth.restore(state)
        return store, auth

    store, auth = start()
    auth.add_user("dev", password="dev-pw")
    auth.set_permissions("dev", "/", ".*", ".*", ".*")
    auth.set_topic_permissions("dev", "/", "amq.topic", "^dev\\.", "^dev\\.")
    before = auth.user("dev")
    store.write_batch(store.take_batch())
    store.close()

    store, auth = start()
    after = auth.user("dev")
    assert after is not None and before is not None
    assert after.password_hash == before.password_hash and after.wampcra == before.wampcra
    assert auth.authenticate("dev", "dev-pw", loopback=True).name == "dev"
    assert [(t.user, t.exchange, t.write) for t in auth.list_topic_permissions()] == [
        ("dev", "amq.topic", "^dev\\.")]
    store.close()


def test_definitions_round_trip_both_hash_kinds_and_topic_permissions(
        tmp_path: Path) -> None:
    auth = service(tmp_path)
    broker = Broker(MemoryStore(), ())
    auth.attach(None, broker)
    auth.set_topic_permissions("app", "/", "amq.topic", "^a", "^b")
    doc = export_definitions(broker, auth)
    users = {u["name"]: u for u in doc["users"]}
    assert users["app"]["hashing_algorithm"] == HASHING_SCRYPT
    assert users["legacy"]["hashing_algorithm"] == HASHING_SHA256
    assert "wampcra" not in str(doc)
    assert doc["topic_permissions"] == [
        {"user": "app", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": "^b"}]

    other = AuthService(load_config().auth)
    other_broker = Broker(MemoryStore(), ())
    other.attach(None, other_broker)
    import_definitions(other_broker, other, doc)
    assert other.authenticate("app", "app-pw", loopback=True).name == "app"
    assert other.authenticate("legacy", "old-pw", loopback=True).name == "legacy"
    assert [(t.user, t.write, t.read) for t in other.list_topic_permissions()] == [
        ("app", "^a", "^b")]
    assert other.wampcra_key("app") is None  # not exported: ticket until set again

    mismatched = {"users": [{"name": "x", "password_hash": users["legacy"]["password_hash"],
                             "hashing_algorithm": HASHING_SCRYPT}]}
    with pytest.raises(PreconditionFailed):
        import_definitions(other_broker, other, mismatched)
    dangling = {"topic_permissions": [{"user": "nobody", "vhost": "/", "exchange": "x",
                                       "write": ".*", "read": ".*"}]}
    with pytest.raises(PreconditionFailed):
        import_definitions(other_broker, other, dangling)


def test_config_checks_the_failed_login_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[auth]\nfailed_login_exempt = ["not-a-network"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    assert bad.value.key == "auth.failed_login_exempt[0]"
    path.write_text("[auth]\nfailed_login_limit = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(path)
    defaults = load_config().auth
    assert (defaults.failed_login_limit, defaults.failed_login_window,
            defaults.failed_login_block) == (10, 60, 60)
    assert defaults.failed_login_exempt == ("127.0.0.0/8", "::1")
