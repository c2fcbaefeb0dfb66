"""Who may do what through the API (RabbitMQ's user tags), and users, vhosts,
permissions and policies changed through it: in effect at once, kept across a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest
from mgmt_client import Api, api_for, q


def test_tags_decide_what_a_user_sees_and_may_do(broker: Any,
                                                 unique: Callable[[str], str]) -> None:
    admin = api_for(broker)
    plain, manager, monitor = unique("no-tags"), unique("manager"), unique("monitor")
    own = unique("own-vhost")
    users: list[Api] = []
    try:
        assert admin.put(f"/users/{plain}", {"password": "pw", "tags": ""}).status_code == 201
        assert admin.put(f"/users/{manager}", {"password": "pw", "tags": "management"}
                         ).status_code == 201
        assert admin.put(f"/users/{monitor}", {"password": "pw", "tags": ["monitoring"]}
                         ).status_code == 201
        assert admin.put(f"/vhosts/{q(own)}", {}).status_code == 201
        assert admin.put(f"/permissions/{q(own)}/{manager}",
                         {"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
        as_plain, as_manager, as_monitor = (admin.as_user(u, "pw")
                                            for u in (plain, manager, monitor))
        users += [as_plain, as_manager, as_monitor]

        refused = as_plain.get("/overview")
        assert refused.status_code == 401
        assert refused.json()["reason"] == "Not management user"

        assert as_manager.json("/whoami") == {"name": manager, "tags": ["management"]}
        assert [v["name"] for v in as_manager.json("/vhosts")] == [own]
        assert as_manager.get("/users").status_code == 401
        assert as_manager.get("/nodes").status_code == 401
        assert as_manager.get("/queues/%2F").status_code == 401
        assert as_manager.put(f"/queues/{q(own)}/work", {"durable": False}).status_code == 201
        assert [x["name"] for x in as_manager.json("/queues")] == ["work"]

        assert as_monitor.get("/nodes").status_code == 200
        assert {"/", own} <= {v["name"] for v in as_monitor.json("/vhosts")}
        assert as_monitor.get("/users").status_code == 401
        assert as_monitor.put(f"/users/{plain}", {"password": "x"}).status_code == 401

        perms = admin.json("/permissions")
        assert {"user": manager, "vhost": own, "configure": ".*", "write": ".*",
                "read": ".*"} in perms
        assert admin.json(f"/users/{manager}/permissions")[0]["vhost"] == own
        names = {u["name"] for u in admin.json("/users/without-permissions")}
        assert {plain, monitor} <= names and manager not in names
    finally:
        for client in users:
            client.close()
        admin.delete(f"/vhosts/{q(own)}")
        for name in (plain, manager, monitor):
            admin.delete(f"/users/{name}")
        admin.close()


def test_changes_take_effect_at_once_and_survive_a_restart(fresh_broker: Any) -> None:
    api = api_for(fresh_broker)
    try:
        assert api.put("/vhosts/kept", {}).status_code == 201
        assert api.put("/users/alice", {"password": "wonderland", "tags": "management"}
                       ).status_code == 201
        assert api.put("/permissions/kept/alice", {"configure": "^a", "write": ".*",
                                                   "read": ".*"}).status_code == 201
        policy = {"pattern": "^a", "definition": {"max-length": 1}, "priority": 1,
                  "apply-to": "queues"}
        assert api.put("/policies/kept/cap", policy).status_code == 201
        assert api.put("/queues/kept/a-durable", {"durable": True}).status_code == 201
        url = (f"amqp://alice:wonderland@{fresh_broker.host}:{fresh_broker.amqp_port}/kept")
        conn = pika.BlockingConnection(pika.URLParameters(url))
        conn.channel().queue_declare("a-transient")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            conn.channel().queue_declare("b-refused")
        conn.close()
    finally:
        api.close()

    fresh_broker.restart(kill=False)
    api = api_for(fresh_broker)
    try:
        assert "kept" in {v["name"] for v in api.json("/vhosts")}
        alice = api.json("/users/alice")
        assert alice["tags"] == ["management"]
        assert api.json("/permissions/kept/alice")["configure"] == "^a"
        assert api.json("/policies/kept/cap")["definition"] == {"max-length": 1}
        queue = api.json("/queues/kept/a-durable")
        assert queue["durable"] is True and queue["policy"] == "cap"
        url = (f"amqp://alice:wonderland@{fresh_broker.host}:{fresh_broker.amqp_port}/kept")
        pika.BlockingConnection(pika.URLParameters(url)).close()
        exported = api.json("/definitions")
        assert any(u["name"] == "alice" for u in exported["users"])
        assert api.json("/definitions/kept")["policies"][0]["name"] == "cap"
        # and deleting works the same way
        assert api.delete("/policies/kept/cap").status_code == 204
        assert api.delete("/users/alice").status_code == 204
        assert api.delete("/vhosts/kept").status_code == 204
        assert api.get("/vhosts/kept").status_code == 404
        assert api.get("/users/alice").status_code == 404
    finally:
        api.close()
