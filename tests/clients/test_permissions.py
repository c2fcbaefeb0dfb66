"""Users, vhosts and per-vhost configure/write/read permissions, from a config file,
enforced on declare, bind, publish, consume and get (pika against a real broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

CONFIG = """
[[users]]
name = "guest"
password = "guest"
tags = ["administrator"]

[[users]]
name = "app"
password = "s3cret"

[[vhosts]]
name = "/"

[[vhosts]]
name = "shop"

[[permissions]]
user = "guest"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"

[[permissions]]
user = "app"
vhost = "shop"
configure = "^app-"
write = "^(app-|amq\\\\.default$|orders$)"
read = "^(app-|orders$)"

[[permissions]]
user = "guest"
vhost = "shop"
configure = ".*"
write = ".*"
read = ".*"

[auth]
loopback_users = []
"""


@pytest.fixture
def shop(configured_broker: Callable[[str], Any]) -> Any:
    return configured_broker(CONFIG)


def connect(broker: Any, user: str, password: str, vhost: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        host=broker.host, port=broker.amqp_port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password))
    return pika.BlockingConnection(params)


def expect_403(action: Callable[[], object]) -> str:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action()
    assert closed.value.reply_code == 403
    return str(closed.value.reply_text)


def test_configure_permission_governs_declare_and_delete(shop: Any) -> None:
    conn = connect(shop, "app", "s3cret", "shop")
    ch = conn.channel()
    assert ch.queue_declare("app-work").method.queue == "app-work"
    ch.exchange_declare("app-events", "topic")
    text = expect_403(lambda: ch.queue_declare("other-work"))
    assert "access to queue 'other-work' in vhost 'shop' refused for user 'app'" in text
    ch = conn.channel()
    expect_403(lambda: ch.exchange_declare("other-x", "fanout"))
    conn.close()


def test_write_and_read_permissions_govern_bind_publish_consume(shop: Any) -> None:
    admin = connect(shop, "guest", "guest", "shop")
    ach = admin.channel()
    ach.queue_declare("orders")
    ach.queue_declare("secrets")
    ach.exchange_declare("audit", "fanout")
    ach.basic_publish("", "secrets", b"classified")
    conn = connect(shop, "app", "s3cret", "shop")
    ch = conn.channel()
    ch.confirm_delivery()
    # write on the default exchange (amq.default) is granted: publish to orders works
    ch.basic_publish("", "orders", b"o1")
    method, _, body = ch.basic_get("orders", auto_ack=True)
    assert body == b"o1"
    # read on 'secrets' is not granted
    expect_403(lambda: ch.basic_get("secrets", auto_ack=True))
    ch = conn.channel()
    expect_403(lambda: ch.basic_consume("secrets", lambda *a: None))
    # binding app-work to audit needs read on the exchange 'audit': refused
    ch = conn.channel()
    ch.queue_declare("app-work")
    expect_403(lambda: ch.queue_bind("app-work", "audit", "k"))
    # publishing to 'audit' needs write on it: refused
    ch = conn.channel()
    ch.confirm_delivery()
    expect_403(lambda: ch.basic_publish("audit", "k", b"x"))
    # nothing leaked into the protected queue
    assert ach.queue_declare("secrets", passive=True).method.message_count == 1
    conn.close()
    admin.close()


def test_user_without_permission_on_vhost_gets_530(shop: Any) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as denied:
        connect(shop, "app", "s3cret", "/")
    assert "(530)" in str(denied.value)
    assert "NOT_ALLOWED - access to vhost '/' refused for user 'app'" in str(denied.value)


def test_wrong_password_for_configured_user_is_403(shop: Any) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        connect(shop, "app", "wrong", "shop")
    assert "ACCESS_REFUSED" in str(refused.value)
