"""`gateway ctl` for users and topic permissions: passwords set by ctl are scrypt hashes
with a WAMP-CRA key (autobahn's WAMP-CRA client logs in), and set/list/clear of RabbitMQ's
topic permissions."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest
from sec_clients import wamp_login

from gateway.cli.main import main


def ctl(broker: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["ctl", "--host", "127.0.0.1", "--port", str(broker.ports["http"]),
                 "--username", "guest", "--password", "guest", *args])
    out, err = capsys.readouterr()
    return code, out + err


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]


def test_ctl_passwords_are_scrypt_and_open_wampcra(broker: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    user = f"ctl-{secrets.token_hex(4)}"
    assert ctl(broker, capsys, "add_user", user, "first-pw")[0] == 0
    assert ctl(broker, capsys, "set_permissions", user, ".*", ".*", ".*")[0] == 0
    api = httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}/api",
                       auth=("guest", "guest"), timeout=10)
    shown = api.get(f"/users/{user}").json()
    assert shown["hashing_algorithm"] == "gateway_password_hashing_scrypt"
    assert shown["password_hash"].startswith("$scrypt$ln=14,r=8,p=1$")
    assert wamp_login(broker, user, "first-pw", "wampcra") == "wampcra"
    assert wamp_login(broker, user, "other", "wampcra") == "wamp.error.authentication_failed"
    assert ctl(broker, capsys, "change_password", user, "second-pw")[0] == 0
    assert wamp_login(broker, user, "second-pw", "wampcra") == "wampcra"
    assert wamp_login(broker, user, "first-pw", "wampcra") == \
        "wamp.error.authentication_failed"
    # a hash pasted from RabbitMQ: WAMP-CRA refused with a reason, ticket yes
    legacy = f"legacy-{secrets.token_hex(4)}"
    rabbit_hash = "y4xPTRVfzXg68sz9ALqeQzARam3CwnGo53xS752cDV5+Utzh"  # of the password "1"
    assert api.put(f"/users/{legacy}", json={
        "password_hash": rabbit_hash, "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": ""}).status_code == 201
    assert api.put(f"/permissions/%2F/{legacy}", json={"configure": ".*", "write": ".*",
                                                       "read": ".*"}).status_code == 201
    assert api.get(f"/users/{legacy}").json()["hashing_algorithm"] == \
        "rabbit_password_hashing_sha256"
    assert wamp_login(broker, legacy, "1", "wampcra") == "wamp.error.authentication_failed"
    assert wamp_login(broker, legacy, "1") == "ticket"
    # that login replaced the legacy hash by scrypt, with a WAMP-CRA key
    assert api.get(f"/users/{legacy}").json()["hashing_algorithm"] == \
        "gateway_password_hashing_scrypt"
    assert wamp_login(broker, legacy, "1", "wampcra") == "wampcra"
    for name in (user, legacy):
        api.delete(f"/users/{name}")
    api.close()


def test_ctl_topic_permissions(broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = f"ctl-topic-{secrets.token_hex(4)}"
    assert ctl(broker, capsys, "add_user", user, "pw")[0] == 0
    assert ctl(broker, capsys, "set_permissions", user, ".*", ".*", ".*")[0] == 0
    code, out = ctl(broker, capsys, "set_topic_permissions", user, "amq.topic", "^a\\.", "^b")
    assert code == 0 and f'Setting topic permissions on "amq.topic" for user "{user}"' in out
    assert ctl(broker, capsys, "set_topic_permissions", user, "events", "^e", "^e")[0] == 0
    code, out = ctl(broker, capsys, "-q", "list_topic_permissions")
    assert [user, "amq.topic", "^a\\.", "^b"] in rows(out)
    assert [user, "events", "^e", "^e"] in rows(out)
    code, out = ctl(broker, capsys, "-q", "list_user_topic_permissions", user)
    assert sorted(r for r in rows(out) if r[0] == "/") == [
        ["/", "amq.topic", "^a\\.", "^b"], ["/", "events", "^e", "^e"]]

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=broker.ports["amqp"],
        credentials=pika.PlainCredentials(user, "pw")))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "a.ok", b"")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.basic_publish("amq.topic", "z.no", b"")
    assert refused.value.reply_code == 403

    assert ctl(broker, capsys, "clear_topic_permissions", user, "amq.topic")[0] == 0
    code, out = ctl(broker, capsys, "-q", "list_user_topic_permissions", user)
    assert [r for r in rows(out) if r[0] == "/"] == [["/", "events", "^e", "^e"]]
    ch = conn.channel()  # no topic permission on amq.topic now: everything allowed
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "z.no", b"")
    conn.close()
    assert ctl(broker, capsys, "clear_topic_permissions", user)[0] == 0
    code, out = ctl(broker, capsys, "-q", "list_user_topic_permissions", user)
    assert [r for r in rows(out) if r[0] == "/"] == []
    code, out = ctl(broker, capsys, "clear_topic_permissions", user)
    assert code == 65 and "no topic permissions" in out
    assert ctl(broker, capsys, "delete_user", user)[0] == 0
