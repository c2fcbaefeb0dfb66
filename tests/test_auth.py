"""gateway.auth: RabbitMQ password hashes, login, vhost access and permission regexes."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from gateway.auth import (
    AuthService,
    LoginRefused,
    User,
    check_password,
    hash_password,
    hash_password_sha256,
    is_loopback,
    is_password_hash,
)
from gateway.config import load_config
from gateway.core.errors import AccessRefused, NotAllowed, ReplyCode

# --------------------------------------------------------------------------- passwords

# Computed once from the algorithm, base64(salt + sha256(salt + b"test12")), with this salt.
FIXED_SALT = bytes.fromhex("908dc60a")
FIXED_HASH = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
# A hash of the password "1" exported from a RabbitMQ (quoted in a public question about
# generating password_hash for the management API).
EXPORTED_HASH = "y4xPTRVfzXg68sz9ALqeQzARam3CwnGo53xS752cDV5+Utzh"


def test_hash_matches_fixed_salt_vector() -> None:
    assert hash_password_sha256("test12", salt=FIXED_SALT) == FIXED_HASH
    assert check_password(FIXED_HASH, "test12")
    assert not check_password(FIXED_HASH, "test13")


def test_hash_exported_from_rabbitmq_checks() -> None:
    assert check_password(EXPORTED_HASH, "1")
    assert not check_password(EXPORTED_HASH, "2")
    salt = base64.b64decode(EXPORTED_HASH)[:4]
    assert hash_password_sha256("1", salt=salt) == EXPORTED_HASH


def test_hash_layout_is_salt_then_sha256() -> None:
    salt = b"\x01\x02\x03\x04"
    raw = base64.b64decode(hash_password_sha256("pässwörd", salt=salt))
    assert raw[:4] == salt
    assert raw[4:] == hashlib.sha256(salt + "pässwörd".encode()).digest()


def test_round_trip_with_random_salt() -> None:
    first, second = hash_password("guest"), hash_password("guest")
    assert first != second, "each hash gets its own salt"
    assert check_password(first, "guest") and check_password(second, "guest")
    assert not check_password(first, "guest ")
    assert is_password_hash(first)


@pytest.mark.parametrize("bad", ["", "plaintext", "!!!!", base64.b64encode(b"short").decode()])
def test_malformed_hash_never_matches(bad: str) -> None:
    assert not is_password_hash(bad)
    assert not check_password(bad, "")
    assert not check_password(bad, "plaintext")


def test_salt_must_be_four_bytes() -> None:
    with pytest.raises(ValueError):
        hash_password_sha256("x", salt=b"abc")


# --------------------------------------------------------------------------- login


def service_from(tmp_path: Path, text: str) -> AuthService:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return AuthService(load_config(path).auth)


@pytest.fixture
def default_auth() -> AuthService:
    return AuthService(load_config().auth)


@pytest.fixture
def auth(tmp_path: Path) -> AuthService:
    return service_from(
        tmp_path,
        """
        [auth]
        loopback_users = ["guest"]
        [[users]]
        name = "guest"
        password = "guest"
        [[users]]
        name = "app"
        password = "app-pw"
        tags = ["management"]
        [[users]]
        name = "nobody"
        password = "nobody-pw"
        [[users]]
        name = "locked"
        password_hash = ""
        [[vhosts]]
        name = "/"
        [[vhosts]]
        name = "prod"
        [[permissions]]
        user = "guest"
        vhost = "/"
        configure = ".*"
        write = ".*"
        read = ".*"
        [[permissions]]
        user = "app"
        vhost = "prod"
        configure = "^app-"
        write = "^(app-.*|amq\\\\.default)$"
        read = "orders"
        [[permissions]]
        user = "locked"
        vhost = "/"
        configure = ".*"
        write = ".*"
        read = ".*"
        [[permissions]]
        user = "nobody"
        vhost = "/"
        configure = ""
        write = ""
        read = ""
        """,
    )


def test_guest_logs_in_from_loopback_with_default_config(default_auth: AuthService) -> None:
    user = default_auth.authenticate("guest", "guest", loopback=True)
    assert user == User("guest", ("administrator",))
    default_auth.check_vhost(user, "/")


def test_guest_refused_from_remote_peer(default_auth: AuthService) -> None:
    with pytest.raises(AccessRefused) as info:
        default_auth.authenticate("guest", "guest", loopback=False)
    assert info.value.code == ReplyCode.ACCESS_REFUSED
    assert info.value.text == (
        "Login was refused using authentication mechanism PLAIN. "
        "For details see the broker logfile."
    )
    assert isinstance(info.value, LoginRefused)
    assert info.value.reason == "user 'guest' can only connect via localhost"


def test_user_not_in_loopback_list_logs_in_remotely(auth: AuthService) -> None:
    assert auth.authenticate("app", "app-pw", loopback=False) == User("app", ("management",))


@pytest.mark.parametrize(
    ("username", "password"),
    [("guest", "wrong"), ("guest", ""), ("ghost", "guest"), ("", ""), ("locked", "")],
)
def test_bad_credentials_refused(auth: AuthService, username: str, password: str) -> None:
    with pytest.raises(LoginRefused) as info:
        auth.authenticate(username, password, loopback=True, mechanism="AMQPLAIN")
    assert info.value.code == 403
    assert "authentication mechanism AMQPLAIN" in info.value.text
    assert info.value.reason == f"user '{username}' - invalid credentials"


def test_empty_hash_disables_password_login(auth: AuthService) -> None:
    with pytest.raises(LoginRefused):
        auth.authenticate("locked", "anything", loopback=True)
    user = auth.user("locked")
    assert user == User("locked", ())


# --------------------------------------------------------------------------- vhosts


def test_vhost_not_found(auth: AuthService) -> None:
    guest = auth.authenticate("guest", "guest", loopback=True)
    with pytest.raises(NotAllowed) as info:
        auth.check_vhost(guest, "/x")
    assert info.value.code == ReplyCode.NOT_ALLOWED == 530
    assert info.value.text == "vhost /x not found"
    assert info.value.hard


def test_vhost_without_permission_row(auth: AuthService) -> None:
    guest = auth.authenticate("guest", "guest", loopback=True)
    with pytest.raises(NotAllowed) as info:
        auth.check_vhost(guest, "prod")
    assert info.value.text == "access to vhost 'prod' refused for user 'guest'"
    assert auth.vhost_exists("prod") and not auth.vhost_exists("/x")
    assert auth.vhosts == ("/", "prod")


# --------------------------------------------------------------------------- permissions


def test_dot_star_allows_everything(auth: AuthService) -> None:
    guest = User("guest")
    for permission in ("configure", "write", "read"):
        for name in ("q", "", "amq.gen-123", "a.b/c d"):
            auth.check(guest, "/", permission, name)
            auth.check(guest, "/", permission, name, resource_kind="exchange")


def test_regex_is_searched_not_fully_matched(auth: AuthService) -> None:
    app = User("app")
    # read = "orders": unanchored, so any name containing "orders" matches (as re:run does)
    assert auth.allowed(app, "prod", "read", "orders")
    assert auth.allowed(app, "prod", "read", "eu-orders-v2")
    assert not auth.allowed(app, "prod", "read", "order")
    # configure = "^app-": anchored at the start only
    assert auth.allowed(app, "prod", "configure", "app-")
    assert auth.allowed(app, "prod", "configure", "app-jobs.retry")
    assert not auth.allowed(app, "prod", "configure", "my-app-jobs")
    # write = "^(...)$": anchored at both ends
    assert auth.allowed(app, "prod", "write", "app-x", resource_kind="exchange")
    assert not auth.allowed(app, "prod", "write", "xapp-x", resource_kind="exchange")


def test_default_exchange_is_checked_as_amq_default(auth: AuthService) -> None:
    app = User("app")
    assert auth.allowed(app, "prod", "write", "", resource_kind="exchange")
    # a queue named "" is not the default exchange
    assert not auth.allowed(app, "prod", "write", "", resource_kind="queue")


def test_empty_pattern_grants_nothing(auth: AuthService) -> None:
    nobody = auth.authenticate("nobody", "nobody-pw", loopback=True)
    auth.check_vhost(nobody, "/")  # a row exists, so the vhost opens
    for permission in ("configure", "write", "read"):
        assert not auth.allowed(nobody, "/", permission, "q")
        assert not auth.allowed(nobody, "/", permission, "", resource_kind="exchange")
        assert not auth.allowed(nobody, "/", permission, "amq.topic", resource_kind="exchange")


def test_refusal_text_and_code(auth: AuthService) -> None:
    app = User("app")
    with pytest.raises(AccessRefused) as info:
        auth.check(app, "prod", "read", "invoices")
    assert info.value.code == ReplyCode.ACCESS_REFUSED
    assert not info.value.hard, "403 closes the channel, not the connection"
    assert info.value.text == "access to queue 'invoices' in vhost 'prod' refused for user 'app'"
    with pytest.raises(AccessRefused) as info:
        auth.check(app, "prod", "write", "logs", resource_kind="exchange")
    assert info.value.text == "access to exchange 'logs' in vhost 'prod' refused for user 'app'"
    with pytest.raises(AccessRefused) as info:
        auth.check(User("nobody"), "/", "write", "", resource_kind="exchange")
    assert "exchange 'amq.default' in vhost '/'" in info.value.text


def test_no_permission_row_refuses_every_resource(auth: AuthService) -> None:
    with pytest.raises(AccessRefused):
        auth.check(User("guest"), "prod", "read", "anything")
    assert not auth.allowed(User("app"), "/", "configure", "app-x")


# --------------------------------------------------------------------------- loopback


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "[::1]", "::ffff:127.0.0.1", "::1%lo"],
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "172.17.0.1",
        "128.0.0.1",
        "0.0.0.0",
        "::",
        "::ffff:10.0.0.1",
        "fe80::1",
        "localhost",
        "",
        "not an address",
    ],
)
def test_non_loopback_addresses(host: str) -> None:
    assert not is_loopback(host)
