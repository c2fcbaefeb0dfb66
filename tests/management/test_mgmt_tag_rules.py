"""Who may do what through the API, against RabbitMQ's rules for its tags: tracing is an
administrator's (it shows every message); closing a connection needs the administrator tag
or being its owner; a monitoring user sees every vhost's name, connection and channel but
not the objects or messages of a vhost it has no permission on, and is no policymaker.
Checked with httpx (the API) and pika (the connections and messages)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pika
import pytest
from mgmt_client import Api, api_for, q

WAIT = 10.0


class Tenants:
    """A vhost with a queue holding a message, and users: `mon` (monitoring, no
    permissions), `mgr` (management, full permissions on the vhost), `pol` (policymaker,
    full permissions), `monp` (monitoring, permissions on the vhost but reading nothing)."""

    def __init__(self, broker: Any, unique: Callable[[str], str]) -> None:
        self.broker = broker
        self.admin = api_for(broker)
        self.vhost = unique("tenant")
        self.queue = unique("secrets")
        self.names = {role: unique(role) for role in ("mon", "mgr", "pol", "monp")}
        tags = {"mon": "monitoring", "mgr": "management", "pol": "policymaker",
                "monp": "monitoring"}
        assert self.admin.put(f"/vhosts/{q(self.vhost)}", {}).status_code == 201
        for role, name in self.names.items():
            assert self.admin.put(f"/users/{name}", {"password": "pw", "tags": tags[role]}
                                  ).status_code == 201
        for role in ("mgr", "pol"):
            assert self.admin.put(f"/permissions/{q(self.vhost)}/{self.names[role]}",
                                  {"configure": ".*", "write": ".*", "read": ".*"}
                                  ).status_code == 201
        assert self.admin.put(f"/permissions/{q(self.vhost)}/{self.names['monp']}",
                              {"configure": "", "write": "", "read": "^$"}).status_code == 201
        assert self.admin.put(f"/queues/{q(self.vhost)}/{self.queue}", {"durable": False}
                              ).status_code == 201
        published = self.admin.post(f"/exchanges/{q(self.vhost)}/amq.default/publish",
                                    {"routing_key": self.queue, "payload": "payroll data",
                                     "properties": {}, "payload_encoding": "string"})
        assert published.json() == {"routed": True}
        self.clients: dict[str, Api] = {role: self.admin.as_user(name, "pw")
                                        for role, name in self.names.items()}

    def amqp(self, user: str, password: str, name: str) -> pika.BlockingConnection:
        params = pika.URLParameters(f"amqp://{user}:{password}@{self.broker.host}:"
                                    f"{self.broker.amqp_port}/{q(self.vhost)}")
        params.client_properties = {"connection_name": name}
        return pika.BlockingConnection(params)

    def connection_named(self, api: Api, client_name: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # the API lists a connection once it is open
            for c in api.json("/connections"):
                if (c.get("client_properties") or {}).get("connection_name") == client_name:
                    return dict(c)
            time.sleep(0.05)
        raise AssertionError(f"connection {client_name} not listed")

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.admin.delete(f"/vhosts/{q(self.vhost)}")
        for name in self.names.values():
            self.admin.delete(f"/users/{name}")
        self.admin.close()


@pytest.fixture
def tenants(broker: Any, unique: Callable[[str], str]) -> Iterator[Tenants]:
    t = Tenants(broker, unique)
    yield t
    t.close()


def test_only_administrators_switch_and_read_traces(tenants: Tenants) -> None:
    v = q(tenants.vhost)
    for role in ("mon", "monp", "mgr", "pol"):
        api = tenants.clients[role]
        assert api.put(f"/traces/{v}", {"enabled": True}).status_code == 401, role
        assert api.get(f"/traces/{v}").status_code == 401, role
        assert api.delete(f"/traces/{v}").status_code == 401, role
        assert api.put(f"/vhosts/{v}", {"tracing": True}).status_code == 401, role
    assert tenants.admin.json(f"/vhosts/{v}")["tracing"] is False
    # the administrator may, and then sees the start of each message published there
    assert tenants.admin.put(f"/traces/{v}", {"enabled": True}).status_code == 204
    tenants.admin.post(f"/exchanges/{v}/amq.default/publish",
                       {"routing_key": tenants.queue, "payload": "traced",
                        "properties": {}, "payload_encoding": "string"})
    records = tenants.admin.json(f"/traces/{v}")["records"]
    assert records and records[0]["payload_preview"] == "traced"
    assert tenants.clients["mon"].get(f"/traces/{v}").status_code == 401


def test_message_bodies_need_read_permission_on_the_queue(tenants: Tenants) -> None:
    v, queue = q(tenants.vhost), tenants.queue
    get = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}
    mon, monp, mgr = (tenants.clients[r] for r in ("mon", "monp", "mgr"))
    # no permission on the vhost: not even the queue is there for them
    for path in (f"/queues/{v}", f"/queues/{v}/{queue}", f"/queues/{v}/{queue}/browse",
                 f"/exchanges/{v}", f"/bindings/{v}", f"/queues/{v}/{queue}/bindings",
                 f"/policies/{v}", f"/vhosts/{v}/connections", f"/aliveness-test/{v}"):
        assert mon.get(path).status_code == 401, path
    assert mon.post(f"/queues/{v}/{queue}/get", get).status_code == 401
    assert mon.delete(f"/queues/{v}/{queue}/contents").status_code == 401
    assert queue not in {x["name"] for x in mon.json("/queues")}
    assert tenants.vhost not in {x["vhost"] for x in mon.json("/exchanges")}
    # ... though, as a monitoring user, it sees the vhost's name and totals
    assert tenants.vhost in {x["name"] for x in mon.json("/vhosts")}
    assert mon.json(f"/vhosts/{v}")["messages"] == 1
    # permissions on the vhost without read on the queue: no body either
    assert monp.get(f"/queues/{v}/{queue}").status_code == 200
    assert monp.post(f"/queues/{v}/{queue}/get", get).status_code == 403
    assert monp.get(f"/queues/{v}/{queue}/browse").status_code == 403
    # read permission: the body
    got = mgr.post(f"/queues/{v}/{queue}/get", get)
    assert got.status_code == 200 and got.json()[0]["payload"] == "payroll data"


def test_closing_a_connection_needs_the_administrator_tag_or_owning_it(
        tenants: Tenants) -> None:
    mgr_name, admin_user = tenants.names["mgr"], tenants.broker.user
    owned = tenants.amqp(mgr_name, "pw", "owned-by-mgr")
    others = tenants.amqp(admin_user, tenants.broker.password, "owned-by-admin")
    try:
        mine = tenants.connection_named(tenants.clients["mgr"], "owned-by-mgr")
        theirs = tenants.connection_named(tenants.admin, "owned-by-admin")
        mon = tenants.clients["mon"]
        # monitoring sees every connection, but closes none of others'
        assert mon.get(f"/connections/{q(theirs['name'])}").status_code == 200
        refused = mon.delete(f"/connections/{q(theirs['name'])}")
        assert refused.status_code == 401, refused.text
        assert mon.delete(f"/connections/{q(mine['name'])}").status_code == 401
        # a management user does not even see another user's connection
        assert tenants.clients["mgr"].delete(f"/connections/{q(theirs['name'])}"
                                             ).status_code == 404
        others.process_data_events(0.2)
        assert others.is_open and owned.is_open
        # the owner closes its own; the administrator closes anyone's
        assert tenants.clients["mgr"].delete(f"/connections/{q(mine['name'])}"
                                             ).status_code == 204
        assert tenants.admin.delete(f"/connections/{q(theirs['name'])}").status_code == 204
        for conn in (owned, others):
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline:
                    conn.process_data_events(0.1)
    finally:
        for conn in (owned, others):
            if conn.is_open:
                conn.close()


def test_monitoring_is_no_policymaker(tenants: Tenants) -> None:
    v = q(tenants.vhost)
    policy = {"pattern": "^never$", "definition": {"max-length": 1}, "apply-to": "queues"}
    for role in ("mon", "monp", "mgr"):
        api = tenants.clients[role]
        assert api.put(f"/policies/{v}/p-{role}", policy).status_code == 401, role
        assert api.get("/policies").status_code == 401, role
    assert tenants.clients["pol"].put(f"/policies/{v}/p-pol", policy).status_code == 201
    assert [p["name"] for p in tenants.clients["pol"].json(f"/policies/{v}")] == ["p-pol"]
    # a policymaker with no permission on a vhost has no say there
    assert tenants.clients["pol"].put("/policies/%2F/p-pol", policy).status_code == 401


def test_consumers_of_others_are_for_monitoring_users(tenants: Tenants) -> None:
    with closing(tenants.amqp(tenants.broker.user, tenants.broker.password, "admin-consumer")
                 ) as conn:
        ch = conn.channel()
        ch.basic_consume(tenants.queue, lambda *_: None, consumer_tag="admins-tag")
        tags_seen = {c["consumer_tag"] for c in tenants.admin.json("/consumers")}
        assert "admins-tag" in tags_seen
        assert "admins-tag" not in {c["consumer_tag"]
                                    for c in tenants.clients["mgr"].json("/consumers")}
        assert "admins-tag" in {c["consumer_tag"]
                                for c in tenants.clients["mon"].json("/consumers")}
        assert "admins-tag" in {c["consumer_tag"] for c in tenants.clients["mon"].json(
            f"/consumers/{q(tenants.vhost)}")}
