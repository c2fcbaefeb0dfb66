"""`[backend]` and `[backend.rabbitmq]` of the config file, and the flags over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, with_overrides

URL = "amqp://gw:pw@10.0.0.2:5672/%2F"
MANAGEMENT = "http://admin:pw@10.0.0.2:15672"


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_embedded_is_the_default_with_the_amqp_listener_on() -> None:
    config = load_config()
    assert config.backend.kind == "embedded"
    assert config.backend.workers == 1
    assert config.backend.rabbitmq.session_queue_type == "quorum"
    assert config.listeners.amqp == 5672


def test_rabbitmq_from_the_file_keeps_the_other_keys_defaults(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, f"""
[backend]
kind = "rabbitmq"
[backend.rabbitmq]
urls = ["{URL}", "amqp://gw:pw@10.0.0.3:5672/%2F"]
management_url = "{MANAGEMENT}"
session_queue_type = "classic"
auth_cache_ttl = 0
"""))
    rabbitmq = config.backend.rabbitmq
    assert rabbitmq.urls == (URL, "amqp://gw:pw@10.0.0.3:5672/%2F")
    assert rabbitmq.session_queue_type == "classic"
    assert rabbitmq.heartbeat == 30  # from the default file, merged key by key
    assert rabbitmq.auth == {"auth_cache_ttl": 0, "permissions_cache_ttl": 30,
                             "auth_timeout": 5, "auth_max_checks": 16}
    assert config.listeners.amqp is None  # AMQP clients connect to RabbitMQ itself


def test_the_amqp_listener_stays_on_when_the_file_or_the_flag_sets_it(tmp_path: Path) -> None:
    text = f"""
[listeners]
amqp = 5673
[backend]
kind = "rabbitmq"
[backend.rabbitmq]
urls = ["{URL}"]
management_url = "{MANAGEMENT}"
"""
    assert load_config(config_file(tmp_path, text)).listeners.amqp == 5673
    flags = with_overrides(load_config(), backend="rabbitmq", upstream=[URL],
                           upstream_management=MANAGEMENT)
    assert flags.listeners.amqp is None
    flags = with_overrides(load_config(), backend="rabbitmq", upstream=[URL],
                           upstream_management=MANAGEMENT, amqp_port=5672)
    assert flags.listeners.amqp == 5672


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[backend]\nkind = "cluster"', "backend.kind", "must be one of embedded, rabbitmq"),
    ('[backend]\nkind = "rabbitmq"', "backend.rabbitmq.urls", "needs the URL of at least one"),
    ('[backend.rabbitmq]\nurls = ["amqps://h/"]', "backend.rabbitmq.urls[0]",
     "TLS to RabbitMQ is not built yet"),
    ('[backend.rabbitmq]\nurls = ["amqp://u:secret@:5672/"]', "backend.rabbitmq.urls[0]",
     "has no host"),
    ('[backend.rabbitmq]\nsession_queue_type = "stream"', "backend.rabbitmq.session_queue_type",
     "must be one of quorum, classic"),
    ('[backend.rabbitmq]\nauth_timeout = 0', "backend.rabbitmq.auth_timeout",
     "must be greater than 0"),
    ('[backend.rabbitmq]\nauth_max_checks = 1.5', "backend.rabbitmq.auth_max_checks",
     "must be an integer"),
    ('[backend.rabbitmq]\nprefetch = 0', "backend.rabbitmq.prefetch", "between 1 and"),
    ('[backend.rabbitmq]\nurl = []', "backend.rabbitmq.url", "unknown key"),
    ("[backend]\nworkers = 2", "backend.workers", 'more than one worker needs backend'),
])
def test_bad_backend_config_is_refused_by_key(tmp_path: Path, text: str, key: str,
                                              problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, text))
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert "secret" not in str(caught.value)


def test_more_workers_need_the_rabbitmq_backend() -> None:
    with pytest.raises(ConfigError, match="needs backend \"rabbitmq\""):
        with_overrides(load_config(), workers=2)
    chosen = with_overrides(load_config(), backend="rabbitmq", upstream=[URL],
                            upstream_management=MANAGEMENT, workers=2)
    assert (chosen.backend.kind, chosen.backend.workers) == ("rabbitmq", 2)
    assert with_overrides(load_config(), workers=1).backend.workers == 1
