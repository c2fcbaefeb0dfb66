"""gateway.config: defaults, merging a file over them, overrides, and every kind of error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.auth import check_password
from gateway.config import (
    KEEP,
    AMQPConfig,
    ConfigError,
    Limits,
    Listeners,
    PermissionConfig,
    PortError,
    StoreConfig,
    load_config,
    parse_port,
    with_overrides,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value), "the message names the file"
    return info.value


# --------------------------------------------------------------------------- defaults


def test_embedded_default_is_rabbitmq_like() -> None:
    config = load_config()
    assert config.listeners == Listeners(
        host="127.0.0.1", amqp=5672, mqtt=1883, stomp=61613, http=15672
    )
    assert config.store == StoreConfig(data_dir=Path("data"), fsync=True)
    assert config.amqp == AMQPConfig(frame_max=131072, channel_max=2047, heartbeat=60)
    assert config.limits == Limits(
        max_message_size=134217728, max_connections=10000, connection_buffer=1048576,
        memory_high_watermark=1073741824
    )
    auth = config.auth
    assert [user.name for user in auth.users] == ["guest"]
    assert auth.users[0].tags == ("administrator",)
    assert check_password(auth.users[0].password_hash, "guest")
    assert not check_password(auth.users[0].password_hash, "Guest")
    assert auth.vhosts == ("/",)
    assert auth.permissions == (PermissionConfig("guest", "/", ".*", ".*", ".*"),)
    assert auth.loopback_users == frozenset({"guest"})


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(AttributeError):
        config.listeners.amqp = 1  # type: ignore[misc]


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == load_config()


def test_file_changes_only_the_keys_it_names(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [listeners]
            amqp = 5673
            mqtt = "off"
            [store]
            data_dir = "/srv/gateway"
            fsync = false
            [amqp]
            heartbeat = 0
            """,
        )
    )
    default = load_config()
    assert config.listeners == Listeners("127.0.0.1", 5673, None, 61613, 15672)
    assert config.store == StoreConfig(Path("/srv/gateway"), False)
    assert config.amqp == AMQPConfig(131072, 2047, 0)
    assert config.limits == default.limits
    assert config.auth == default.auth


def test_port_zero_means_pick_a_free_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[listeners]\namqp = 0\nhttp = 0\n"))
    assert config.listeners.amqp == 0
    assert config.listeners.http == 0


def test_all_listeners_off(tmp_path: Path) -> None:
    text = '[listeners]\namqp = "off"\nmqtt = "off"\nstomp = "off"\nhttp = "off"\n'
    config = load_config(write(tmp_path, text))
    assert config.listeners.ports() == {"amqp": None, "mqtt": None, "stomp": None, "http": None}


def test_users_vhosts_permissions_replace_the_defaults_together(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [[users]]
            name = "alice"
            password = "s3cret"
            [[vhosts]]
            name = "prod"
            """,
        )
    )
    assert [user.name for user in config.auth.users] == ["alice"]
    assert config.auth.users[0].tags == ()
    assert config.auth.vhosts == ("prod",)
    assert config.auth.permissions == ()
    # [auth] was not named, so it keeps its default
    assert config.auth.loopback_users == frozenset({"guest"})


def test_plain_password_is_hashed_at_load(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[[users]]\nname = "bob"\npassword = "hunter2"\ntags = ["monitoring"]\n')
    )
    user = config.auth.users[0]
    assert user.password_hash != "hunter2"
    assert check_password(user.password_hash, "hunter2")
    assert user.tags == ("monitoring",)


def test_rabbitmq_hash_is_accepted_verbatim(tmp_path: Path) -> None:
    rabbit_hash = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    config = load_config(
        write(tmp_path, f'[[users]]\nname = "simon"\npassword_hash = "{rabbit_hash}"\n')
    )
    assert config.auth.users[0].password_hash == rabbit_hash
    assert check_password(config.auth.users[0].password_hash, "test12")


def test_full_auth_section(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [auth]
            loopback_users = []
            [[users]]
            name = "app"
            password = "pw"
            [[vhosts]]
            name = "/"
            [[vhosts]]
            name = "staging"
            [[permissions]]
            user = "app"
            vhost = "staging"
            configure = "^app-.*$"
            write = ""
            read = "^(app-.*|amq\\\\.gen-.*)$"
            """,
        )
    )
    assert config.auth.loopback_users == frozenset()
    assert config.auth.vhosts == ("/", "staging")
    assert config.auth.permissions == (
        PermissionConfig("app", "staging", "^app-.*$", "", "^(app-.*|amq\\.gen-.*)$"),
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("value", ["70000", "-1", '"5672"', '"on"', "true", "1.5"])
def test_bad_port_in_file(tmp_path: Path, value: str) -> None:
    err = error_of(tmp_path, f"[listeners]\namqp = {value}\n")
    assert err.key == "listeners.amqp"
    assert "port" in err.problem


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[listeners]\namqpp = 5672\n")
    assert err.key == "listeners.amqpp"
    assert "unknown key" in str(err)
    assert "did you mean 'amqp'" in str(err)


def test_unknown_section(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[kafka]\nport = 9092\n")
    assert err.key == "kafka"
    assert "unknown key" in err.problem


def test_mqtt_section(tmp_path: Path) -> None:
    mqtt = load_config().mqtt
    assert (mqtt.max_packet_size, mqtt.max_session_expiry, mqtt.default_vhost) == (
        16777216, 86400, "/")
    config = load_config(write(tmp_path, "[mqtt]\nmax_keepalive = 60\n"))
    assert config.mqtt.max_keepalive == 60 and config.mqtt.topic_alias_maximum == 16
    err = error_of(tmp_path, "[mqtt]\nmax_packet_size = 10\n")
    assert err.key == "mqtt.max_packet_size"
    err = error_of(tmp_path, "[mqtt]\nreceive_maximum = 0\n")
    assert err.key == "mqtt.receive_maximum"
    err = error_of(tmp_path, "[mqtt]\nport = 1883\n")
    assert err.key == "mqtt.port" and "unknown key" in err.problem


def test_unknown_key_in_user(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[[users]]\nname = "a"\npassword = "b"\nrole = "admin"\n')
    assert err.key == "users[0].role"


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, "listeners = 5\n")
    assert err.key == "listeners"
    assert "table" in err.problem


def test_invalid_toml(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[listeners\n")
    assert "not valid TOML" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert "cannot read" in str(info.value)


def test_bad_regex_names_the_permission(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """
        [[users]]
        name = "u"
        password = "p"
        [[vhosts]]
        name = "/"
        [[permissions]]
        user = "u"
        vhost = "/"
        configure = ".*"
        write = "(unclosed"
        read = ".*"
        """,
    )
    assert err.key == "permissions[0].write"
    assert "regular expression" in err.problem


@pytest.mark.parametrize(
    ("user", "vhost", "key"),
    [("ghost", "/", "permissions[0].user"), ("u", "/nowhere", "permissions[0].vhost")],
)
def test_permission_must_name_existing_user_and_vhost(
    tmp_path: Path, user: str, vhost: str, key: str
) -> None:
    err = error_of(
        tmp_path,
        f"""
        [[users]]
        name = "u"
        password = "p"
        [[vhosts]]
        name = "/"
        [[permissions]]
        user = "{user}"
        vhost = "{vhost}"
        configure = ".*"
        write = ".*"
        read = ".*"
        """,
    )
    assert err.key == key


def test_duplicate_user(tmp_path: Path) -> None:
    err = error_of(
        tmp_path, '[[users]]\nname = "a"\npassword = "1"\n[[users]]\nname = "a"\npassword = "2"\n'
    )
    assert err.key == "users[1]"
    assert "duplicate user 'a'" in err.problem


def test_user_needs_exactly_one_password_form(tmp_path: Path) -> None:
    neither = error_of(tmp_path, '[[users]]\nname = "a"\n')
    assert neither.key == "users[0].password_hash"
    both = error_of(
        tmp_path,
        '[[users]]\nname = "a"\npassword = "x"\n'
        'password_hash = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"\n',
    )
    assert both.key == "users[0].password_hash"


def test_malformed_password_hash(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[[users]]\nname = "a"\npassword_hash = "plaintext"\n')
    assert err.key == "users[0].password_hash"
    assert "SHA-256" in err.problem


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[amqp]\nframe_max = 4095\n", "amqp.frame_max"),
        ("[amqp]\nchannel_max = 0\n", "amqp.channel_max"),
        ("[amqp]\nheartbeat = -1\n", "amqp.heartbeat"),
        ('[amqp]\nheartbeat = "60"\n', "amqp.heartbeat"),
        ("[limits]\nmax_message_size = 0\n", "limits.max_message_size"),
        ("[limits]\nmax_connections = true\n", "limits.max_connections"),
        ("[store]\nfsync = 1\n", "store.fsync"),
        ('[store]\ndata_dir = ""\n', "store.data_dir"),
        ('[listeners]\nhost = ""\n', "listeners.host"),
        ('[auth]\nloopback_users = "guest"\n', "auth.loopback_users"),
    ],
)
def test_values_are_validated(tmp_path: Path, text: str, key: str) -> None:
    assert error_of(tmp_path, text).key == key


def test_frame_max_lower_bound_is_inclusive(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[amqp]\nframe_max = 4096\n")).amqp.frame_max == 4096


# --------------------------------------------------------------------------- overrides


def test_overrides_replace_only_what_is_given() -> None:
    base = load_config()
    config = with_overrides(
        base, host="0.0.0.0", amqp_port=0, mqtt_port=None, data_dir="/var/lib/gateway"
    )
    assert config.listeners == Listeners("0.0.0.0", 0, None, 61613, 15672)
    assert config.store == StoreConfig(Path("/var/lib/gateway"), True)
    assert config.amqp == base.amqp
    assert config.auth == base.auth


def test_no_overrides_is_identity() -> None:
    base = load_config()
    assert with_overrides(base) == base
    kept = with_overrides(base, amqp_port=KEEP, mqtt_port=KEEP, stomp_port=KEEP, http_port=KEEP)
    assert kept == base


def test_override_rejects_out_of_range_port() -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(load_config(), stomp_port=70000)
    assert info.value.key == "listeners.stomp"


# --------------------------------------------------------------------------- parse_port


@pytest.mark.parametrize(
    ("text", "port"),
    [("0", 0), ("5672", 5672), ("65535", 65535), ("off", None), ("OFF", None), (" 80 ", 80)],
)
def test_parse_port(text: str, port: int | None) -> None:
    assert parse_port(text) == port


@pytest.mark.parametrize("text", ["65536", "-1", "", "on", "56 72", "0x10", "٣"])
def test_parse_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid port"):
        parse_port(text)


def test_parse_port_gives_argparse_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gateway serve")
    parser.add_argument("--amqp-port", type=parse_port, default=KEEP)
    assert parser.parse_args([]).amqp_port is KEEP
    assert parser.parse_args(["--amqp-port", "off"]).amqp_port is None
    assert parser.parse_args(["--amqp-port", "0"]).amqp_port == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--amqp-port", "http"])
    err = capsys.readouterr().err
    assert "invalid port 'http'" in err
    assert issubclass(PortError, ValueError)
