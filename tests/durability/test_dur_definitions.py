"""Definitions export/import in RabbitMQ's JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from durability.helpers_dur import restart, start, stop
from gateway.auth.passwords import check_password
from gateway.core.errors import PreconditionFailed
from gateway.definitions import export_definitions, import_definitions, load_definitions_file

# shaped like `rabbitmqctl export_definitions` output of RabbitMQ 3.x
RABBIT_EXPORT = {
    "rabbit_version": "3.12.0",
    "rabbitmq_version": "3.12.0",
    "product_name": "RabbitMQ",
    "users": [
        {"name": "app", "password_hash": "ytUIm5znkg2rTWUe1AE4OO+m0J8KCTEbKRJw5X0wlhR1FPne",
         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"],
         "limits": {}},
        {"name": "ops", "password_hash": "ytUIm5znkg2rTWUe1AE4OO+m0J8KCTEbKRJw5X0wlhR1FPne",
         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"},
    ],
    "vhosts": [{"name": "shop", "limits": [], "metadata": {"description": "", "tags": []}}],
    "permissions": [{"user": "app", "vhost": "shop", "configure": ".*", "write": ".*",
                     "read": ".*"}],
    "topic_permissions": [],
    "parameters": [],
    "global_parameters": [{"name": "cluster_name", "value": "rabbit@host"}],
    "policies": [{"vhost": "shop", "name": "cap", "pattern": "^orders$",
                  "apply-to": "queues", "definition": {"max-length": 100, "ha-mode": "all"},
                  "priority": 0}],
    "queues": [{"name": "orders", "vhost": "shop", "durable": True, "auto_delete": False,
                "arguments": {"x-queue-type": "classic", "x-max-priority": 5}}],
    "exchanges": [{"name": "shop.in", "vhost": "shop", "type": "topic", "durable": True,
                   "auto_delete": False, "internal": False, "arguments": {}}],
    "bindings": [
        {"source": "shop.in", "vhost": "shop", "destination": "orders",
         "destination_type": "queue", "routing_key": "order.*", "arguments": {}},
        {"source": "amq.topic", "vhost": "shop", "destination": "shop.in",
         "destination_type": "exchange", "routing_key": "#", "arguments": {}},
    ],
}


def test_import_a_rabbitmq_export(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    import_definitions(broker, auth, json.loads(json.dumps(RABBIT_EXPORT)))
    app = auth.authenticate("app", "guest", loopback=False)  # the hash is of "guest"
    assert app.tags == ("management",)
    ops = auth.user("ops")
    assert ops is not None and ops.tags == ("administrator",)
    auth.check_vhost(app, "shop")
    vh = broker.vhost("shop")
    q = vh.queues["orders"]
    assert q.durable and q.args.max_priority == 5 and q.args.max_length == 100
    assert q.policy is not None and q.policy.name == "cap"
    assert {(b.source.name, b.routing_key) for b in vh.bindings()} == {
        ("shop.in", "order.*"), ("amq.topic", "#")}
    broker, auth = restart(broker, tmp_path)  # and it was all persisted
    vh = broker.vhost("shop")
    assert "orders" in vh.queues and "shop.in" in vh.exchanges and "cap" in vh.policies
    assert auth.authenticate("app", "guest", loopback=False).name == "app"
    stop(broker)


def test_export_then_import_into_a_fresh_broker_round_trips(tmp_path: Path) -> None:
    broker, auth = start(tmp_path / "a")
    auth.add_user("u1", password="p1", tags=["monitoring"])
    auth.add_vhost("v")
    auth.set_permissions("u1", "v", "^u1", ".*", "")
    vh = broker.vhost("v")
    vh.set_policy("dl", "^work", {"dead-letter-exchange": "dlx"}, priority=3)
    vh.declare_exchange("dlx", "fanout", durable=True)
    vh.declare_exchange("x.internal", "headers", durable=True, internal=True,
                        arguments={"alternate-exchange": "dlx"})
    work = vh.declare_queue("work", durable=True, arguments={"x-message-ttl": 60000})
    vh.declare_queue("scratch")  # transient: not exported
    vh.bind(work, "x.internal", "", {"x-match": "any", "k": "v"})
    vh.bind(vh.exchanges["dlx"], "amq.fanout", "")
    exported = export_definitions(broker, auth)
    json.dumps(exported)  # JSON-ready
    assert [q["name"] for q in exported["queues"]] == ["work"]
    user = next(u for u in exported["users"] if u["name"] == "u1")
    assert user["hashing_algorithm"] == "gateway_password_hashing_scrypt"  # set here
    assert check_password(user["password_hash"], "p1")
    stop(broker)

    broker2, auth2 = start(tmp_path / "b")
    import_definitions(broker2, auth2, exported)
    again = export_definitions(broker2, auth2)
    for key in ("users", "vhosts", "permissions", "policies", "queues", "exchanges"):
        assert sorted(map(json.dumps, again[key])) == sorted(map(json.dumps, exported[key]))
    assert sorted(map(json.dumps, again["bindings"])) == sorted(
        map(json.dumps, exported["bindings"]))
    stop(broker2)


def test_a_bad_document_changes_nothing(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    bad = json.loads(json.dumps(RABBIT_EXPORT))
    bad["queues"][0]["arguments"]["x-overflow"] = "explode"
    with pytest.raises(PreconditionFailed):
        import_definitions(broker, auth, bad)
    md5 = json.loads(json.dumps(RABBIT_EXPORT))
    md5["users"][0]["hashing_algorithm"] = "rabbit_password_hashing_md5"
    with pytest.raises(PreconditionFailed, match="md5"):
        import_definitions(broker, auth, md5)
    orphan = {"queues": [{"name": "q", "vhost": "nowhere", "durable": True,
                          "auto_delete": False, "arguments": {}}]}
    with pytest.raises(PreconditionFailed, match="nowhere"):
        import_definitions(broker, auth, orphan)
    typo = json.loads(json.dumps(RABBIT_EXPORT))
    typo["queues"][0]["arguments"]["x-queue-type"] = "quorom"
    with pytest.raises(PreconditionFailed, match="unsupported queue type 'quorom'"):
        import_definitions(broker, auth, typo)
    assert [u.name for u in auth.list_users()] == ["guest"]
    assert list(broker.vhosts) == ["/"]
    stop(broker)


def test_inequivalent_queue_is_refused(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    broker.vhost("/").declare_queue("q", durable=True, arguments={"x-max-length": 1})
    doc = {"queues": [{"name": "q", "vhost": "/", "durable": True, "auto_delete": False,
                       "arguments": {"x-max-length": 2}}]}
    with pytest.raises(PreconditionFailed):
        import_definitions(broker, auth, doc)
    stop(broker)


def test_load_definitions_file(tmp_path: Path) -> None:
    broker, auth = start(tmp_path / "data")
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(RABBIT_EXPORT))
    load_definitions_file(broker, auth, path)
    load_definitions_file(broker, auth, path)  # importing twice is harmless
    assert "orders" in broker.vhost("shop").queues
    path.write_text("{not json")
    with pytest.raises(PreconditionFailed, match="JSON"):
        load_definitions_file(broker, auth, path)
    with pytest.raises(PreconditionFailed):
        load_definitions_file(broker, auth, tmp_path / "missing.json")
    stop(broker)


def test_definitions_file_is_loaded_at_start(configured_broker, tmp_path: Path) -> None:
    import pika

    path = tmp_path / "defs.json"
    path.write_text(json.dumps(RABBIT_EXPORT))
    running = configured_broker(f'[definitions]\nfile = "{path}"\n')
    params = pika.URLParameters(f"amqp://app:guest@127.0.0.1:{running.amqp_port}/shop")
    connection = pika.BlockingConnection(params)
    try:
        ch = connection.channel()
        ok = ch.queue_declare("orders", passive=True)
        assert ok.method.message_count == 0
        ch.confirm_delivery()
        ch.basic_publish("shop.in", "order.new", b"hello")
        method, _, body = ch.basic_get("orders", auto_ack=True)
        assert method is not None and body == b"hello"
    finally:
        connection.close()


def test_import_what_rabbitmq_3_10_exported(tmp_path: Path) -> None:
    """`rabbitmq-3.10.8-definitions.json` is what `rabbitmqctl export_definitions` wrote on
    RabbitMQ 3.10.8 after a topology was declared there (password of `app`: app-secret)."""
    data = json.loads((Path(__file__).parent / "rabbitmq-3.10.8-definitions.json").read_text())
    broker, auth = start(tmp_path)
    import_definitions(broker, auth, data)
    app = auth.authenticate("app", "app-secret", loopback=False)  # RabbitMQ's hash checks
    assert app.tags == ("management",)
    assert auth.allowed(app, "shop", "configure", "orders")
    assert not auth.allowed(app, "shop", "configure", "other")
    vh = broker.vhost("shop")
    orders, sac = vh.queues["orders"], vh.queues["orders.sac"]
    assert (orders.args.max_priority, orders.args.message_ttl, orders.args.dlrk) == (
        5, 60000, "dead")
    assert orders.policy is not None and orders.policy.name == "cap"
    assert (orders.args.max_length, orders.args.overflow) == (100, "reject-publish")
    assert sac.args.single_active_consumer and sac.args.overflow == "reject-publish-dlx"
    assert (sac.args.max_length_bytes, sac.args.expires) == (1048576, 3600000)
    assert vh.exchanges["shop.hdr"].arguments == {"alternate-exchange": "shop.dlx"}
    assert {(b.source.name, b.destination.name, b.routing_key) for b in vh.bindings()} == {
        ("amq.topic", "shop.in", "#"), ("shop.dlx", "shop.dead", ""),
        ("shop.hdr", "orders.sac", ""), ("shop.in", "orders", "order.*")}
    [headers_binding] = [b for b in vh.bindings() if b.source.name == "shop.hdr"]
    assert dict(headers_binding.arguments) == {"region": "eu", "tier": 1, "x-match": "any"}
    exported = export_definitions(broker, auth)
    mine = {(q["vhost"], q["name"]): q["arguments"] for q in exported["queues"]}
    theirs = {(q["vhost"], q["name"]): q["arguments"] for q in data["queues"]}
    assert mine == theirs
    stop(broker)
