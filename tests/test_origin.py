"""The Origin and Host rules of [http] (gateway/server/origin.py), fed header values."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config
from gateway.server.origin import BrowserPolicy, split_host

OWN = BrowserPolicy()


@pytest.mark.parametrize("origin, host, tls", [
    (None, "127.0.0.1:15672", False),                 # not a browser
    ("http://127.0.0.1:15672", "127.0.0.1:15672", False),
    ("http://localhost:15672", "localhost:15672", False),
    ("https://localhost:15671", "localhost:15671", True),
    ("http://[::1]:15672", "[::1]:15672", False),
    ("http://broker.example", "broker.example", False),  # default port both sides
    ("HTTP://LOCALHOST:15672/", "localhost:15672", False),
])
def test_own_origin_is_allowed(origin: str | None, host: str, tls: bool) -> None:
    assert OWN.origin_allowed(origin, host, tls=tls)


@pytest.mark.parametrize("origin, host, tls", [
    ("http://evil.example", "127.0.0.1:15672", False),
    ("http://127.0.0.1:8000", "127.0.0.1:15672", False),   # other port, same host
    ("https://127.0.0.1:15672", "127.0.0.1:15672", False),  # other scheme
    ("http://127.0.0.1:15672", "127.0.0.1:15672", True),
    ("null", "127.0.0.1:15672", False),
    ("file://", "127.0.0.1:15672", False),
    ("http://127.0.0.1:15672", None, False),
    ("http://127.0.0.1:notaport", "127.0.0.1:15672", False),
])
def test_foreign_origin_is_refused(origin: str, host: str | None, tls: bool) -> None:
    assert not OWN.origin_allowed(origin, host, tls=tls)


def test_listed_origins_are_allowed() -> None:
    policy = BrowserPolicy(allowed_origins=("https://app.example",))
    assert policy.origin_allowed("https://app.example", "127.0.0.1:15672", tls=False)
    assert not policy.origin_allowed("https://app.example:8443", "127.0.0.1:15672", tls=False)
    assert BrowserPolicy(allowed_origins=("*",)).origin_allowed(
        "http://evil.example", "127.0.0.1:15672", tls=False)


@pytest.mark.parametrize("host, ok", [
    (None, True), ("127.0.0.1:15672", True), ("[::1]:15672", True), ("localhost", True),
    ("app.localhost:80", True), ("10.1.2.3", True),
    ("rebind.evil.example:15672", False), ("", False), ("a b", False), ("x@127.0.0.1", False),
])
def test_host_header(host: str | None, ok: bool) -> None:
    assert OWN.host_allowed(host) is ok


def test_listed_hosts() -> None:
    assert BrowserPolicy(allowed_hosts=("broker.example",)).host_allowed("broker.example:15672")
    assert BrowserPolicy(allowed_hosts=("*",)).host_allowed("anything.example")


def test_split_host() -> None:
    assert split_host("[::1]:15672") == ("::1", 15672)
    assert split_host("Example.COM") == ("example.com", None)
    assert split_host("host:99999") == (None, None)


def test_config_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "g.toml"
    path.write_text('[http]\nallowed_origins = ["https://App.example/"]\n'
                    'allowed_hosts = ["Broker.example"]\n[wamp]\nallow_anonymous = true\n')
    config = load_config(path)
    assert config.http.allowed_origins == ("https://app.example",)
    assert config.http.allowed_hosts == ("broker.example",)
    assert config.wamp.allow_anonymous and config.wamp.anonymous_user == "guest"
    assert not load_config(None).wamp.allow_anonymous
    path.write_text('[http]\nallowed_origins = ["app.example"]\n')
    with pytest.raises(ConfigError, match="allowed_origins"):
        load_config(path)
