"""Hole 11, the timing half: a wrong password costs one scrypt check whoever the user is (an
scrypt user, a user with a legacy RabbitMQ SHA-256 hash, a name that does not exist), and a
legacy hash is replaced by scrypt (with a WAMP-CRA key) at the user's next successful login,
persisted. The code path is what is tested (which scrypt checks run), never a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sec_clients import amqp_login, wamp_login

from gateway.auth import AuthService, LoginRefused, User, hash_password_sha256, passwords
from gateway.auth.passwords import DECOY_HASH, check_password, is_slow_hash
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.disk import DiskStore

LEGACY_PW = "old-pw"
CONFIG = f"""
[auth]
loopback_users = []
[[users]]
name = "guest"
password = "guest"
tags = ["administrator"]
[[users]]
name = "modern"
password = "modern-pw"
[[users]]
name = "legacy"
password_hash = "{hash_password_sha256(LEGACY_PW)}"
[[vhosts]]
name = "/"
[[permissions]]
user = "guest"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
[[permissions]]
user = "legacy"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
"""
DECOY_SALT = bytes(16)  # DECOY_HASH's salt


def service(tmp_path: Path) -> AuthService:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return AuthService(load_config(path).auth)


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The salt of every scrypt derivation run (the real one runs: a spy, not a stub)."""
    calls: list[bytes] = []
    real = passwords._scrypt

    def spy(password: str, salt: bytes, log_n: int, r: int, p: int,
            size: int = passwords.SCRYPT_KEY_SIZE) -> bytes:
        calls.append(salt)
        return real(password, salt, log_n, r, p, size)

    monkeypatch.setattr(passwords, "_scrypt", spy)
    return calls


def _login(auth: AuthService, name: str, password: str) -> tuple[User | LoginRefused, bool]:
    """The answer, and whether it was handed out as a slow check (not answered at once)."""
    answers: list[User | LoginRefused] = []
    pending = auth.login(name, password, peer="127.0.0.1", protocol="AMQP", now=1.0,
                         then=answers.append)
    handed_out = pending is not None
    if pending is not None:
        pending.finish(pending.verify())
    return answers[0], handed_out


def test_every_wrong_password_costs_one_scrypt_check(tmp_path: Path,
                                                     scrypt_calls: list[bytes]) -> None:
    auth = service(tmp_path)
    auth.inline_checks = False
    modern = auth.user("modern")
    assert modern is not None
    modern_salt = passwords._parse_scrypt(modern.password_hash)[3]  # type: ignore[index]
    for name, salt in (("modern", modern_salt), ("legacy", DECOY_SALT),
                       ("nobody", DECOY_SALT)):
        scrypt_calls.clear()
        answer, handed_out = _login(auth, name, "wrong-pw")
        assert isinstance(answer, LoginRefused), name
        assert handed_out, f"{name}: answered at once, without the worker thread's check"
        assert scrypt_calls == [salt], name
    # the legacy user's hash is still the SHA-256 one: nothing upgraded on a failure
    legacy = auth.user("legacy")
    assert legacy is not None and not is_slow_hash(legacy.password_hash)


def test_the_evenly_check_runs_the_decoy_for_a_legacy_hash(scrypt_calls: list[bytes]) -> None:
    legacy = hash_password_sha256("pw")
    assert passwords.check_password_evenly(legacy, "pw")
    assert not passwords.check_password_evenly(legacy, "other")
    assert not passwords.check_password_evenly("", "pw")  # no hash: never matches
    assert scrypt_calls == [DECOY_SALT] * 3
    assert not check_password(DECOY_HASH, "")  # the decoy itself matches nothing useful


def test_a_legacy_hash_is_upgraded_at_login_and_the_upgrade_persists(
        tmp_path: Path, scrypt_calls: list[bytes]) -> None:
    def start() -> tuple[DiskStore, AuthService]:
        store = DiskStore(tmp_path / "data", fsync=False)
        auth = service(tmp_path)
        auth.attach(store, Broker(store, ()))
        auth.restore(store.recover())
        return store, auth

    store, auth = start()
    assert auth.wampcra_key("legacy") is None
    scrypt_calls.clear()  # (the config's plain passwords were hashed at load)
    answer, _ = _login(auth, "legacy", LEGACY_PW)
    assert isinstance(answer, User) and answer.name == "legacy"
    assert scrypt_calls[0] == DECOY_SALT and len(scrypt_calls) == 2  # check, then new hash
    upgraded = auth.user("legacy")
    assert upgraded is not None and is_slow_hash(upgraded.password_hash)
    assert check_password(upgraded.password_hash, LEGACY_PW)
    assert auth.wampcra_key("legacy") is not None
    store.write_batch(store.take_batch())
    store.close()

    store, auth = start()
    after = auth.user("legacy")
    assert after is not None and after.password_hash == upgraded.password_hash
    assert auth.wampcra_key("legacy") is not None
    assert auth.authenticate("legacy", LEGACY_PW, loopback=True).name == "legacy"
    assert isinstance(_login(auth, "legacy", "wrong")[0], LoginRefused)
    store.close()


def test_legacy_user_over_amqp_is_upgraded_across_a_restart(
        configured_broker: Any) -> None:
    broker = configured_broker(CONFIG)
    api = f"http://127.0.0.1:{broker.ports['http']}/api/users/legacy"

    def algorithm() -> str:
        got = httpx.get(api, auth=("guest", "guest"), timeout=10)
        assert got.status_code == 200, got.text
        return str(got.json()["hashing_algorithm"])

    assert algorithm() == "rabbit_password_hashing_sha256"
    assert wamp_login(broker, "legacy", LEGACY_PW, "wampcra") != "wampcra"  # no key yet
    assert not amqp_login(broker, "legacy", "wrong-pw")
    assert algorithm() == "rabbit_password_hashing_sha256"
    assert amqp_login(broker, "legacy", LEGACY_PW)
    assert algorithm() == "gateway_password_hashing_scrypt"
    broker.restart(kill=False)
    assert algorithm() == "gateway_password_hashing_scrypt"
    assert amqp_login(broker, "legacy", LEGACY_PW)
    assert wamp_login(broker, "legacy", LEGACY_PW, "wampcra") == "wampcra"
