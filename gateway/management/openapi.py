"""The OpenAPI 3 description of the management API, built from the route table so the two
cannot drift apart. `python -m gateway.management.openapi` prints it; the web UI's static
directory carries it as `openapi.json` (served at `/openapi.json`, checked by a test).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import gateway
from gateway.management.api import routes
from gateway.management.router import Access

OBJ: dict[str, Any] = {"type": "object"}
STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error", "reason"], {"error": STR, "reason": STR}),
    "Queue": _obj(["name", "vhost", "durable", "auto_delete", "exclusive", "arguments",
                   "messages", "messages_ready", "messages_unacknowledged", "consumers"],
                  {"name": STR, "vhost": STR, "durable": BOOL, "auto_delete": BOOL,
                   "exclusive": BOOL, "arguments": OBJ, "messages": INT,
                   "messages_ready": INT, "messages_unacknowledged": INT, "consumers": INT,
                   "policy": {"type": ["string", "null"]}, "message_stats": OBJ,
                   "type": {"enum": ["classic", "quorum"]},
                   "unsupported_arguments": {"type": "array", "items": STR}}),
    "Exchange": _obj(["name", "vhost", "type", "durable", "auto_delete", "internal",
                      "arguments"],
                     {"name": STR, "vhost": STR, "type": STR, "durable": BOOL,
                      "auto_delete": BOOL, "internal": BOOL, "arguments": OBJ}),
    "Binding": _obj(["source", "vhost", "destination", "destination_type", "routing_key",
                     "arguments", "properties_key"],
                    {"source": STR, "vhost": STR, "destination": STR,
                     "destination_type": {"enum": ["queue", "exchange"]},
                     "routing_key": STR, "arguments": OBJ, "properties_key": STR}),
    "Connection": _obj(["name", "protocol", "peer_host", "peer_port", "state"],
                       {"name": STR, "protocol": STR, "user": {"type": ["string", "null"]},
                        "vhost": {"type": ["string", "null"]}, "peer_host": STR,
                        "peer_port": INT, "state": STR, "channels": INT}),
    "Channel": _obj(["name", "number"], {"name": STR, "number": INT, "prefetch_count": INT}),
    "Consumer": _obj(["consumer_tag", "queue", "ack_required"],
                     {"consumer_tag": STR, "queue": OBJ, "ack_required": BOOL}),
    "Overview": _obj(["node", "object_totals", "queue_totals", "message_stats",
                      "listeners"], {"node": STR, "object_totals": OBJ,
                                     "queue_totals": OBJ, "message_stats": OBJ,
                                     "listeners": {"type": "array"}}),
    "Node": _obj(["name", "running"], {"name": STR, "running": BOOL, "mem_used": INT}),
    "User": _obj(["name", "tags"], {"name": STR, "tags": {"type": "array", "items": STR}}),
    "Vhost": _obj(["name"], {"name": STR, "messages": INT, "tracing": BOOL}),
    "Permission": _obj(["user", "vhost", "configure", "write", "read"],
                       {"user": STR, "vhost": STR, "configure": STR, "write": STR,
                        "read": STR}),
    "TopicPermission": _obj(["user", "vhost", "exchange", "write", "read"],
                            {"user": STR, "vhost": STR, "exchange": STR, "write": STR,
                             "read": STR}),
    "Policy": _obj(["vhost", "name", "pattern", "definition", "priority", "apply-to"],
                   {"vhost": STR, "name": STR, "pattern": STR, "definition": OBJ,
                    "priority": INT, "apply-to": STR}),
    "Message": _obj(["payload", "payload_bytes", "payload_encoding", "redelivered",
                     "exchange", "routing_key", "properties"],
                    {"payload": STR, "payload_bytes": INT,
                     "payload_encoding": {"enum": ["string", "base64"]},
                     "redelivered": BOOL, "exchange": STR, "routing_key": STR,
                     "properties": OBJ}),
    "Health": _obj(["status"], {"status": {"enum": ["ok", "failed"]}}),
}

# request bodies by (method, path)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/queues/{vhost}/{name}"): _obj([], {"durable": BOOL, "auto_delete": BOOL,
                                                  "arguments": OBJ}),
    ("PUT", "/exchanges/{vhost}/{name}"): _obj(["type"], {
        "type": {"enum": ["direct", "fanout", "topic", "headers", "x-delayed-message"]},
        "durable": BOOL, "auto_delete": BOOL, "internal": BOOL, "arguments": OBJ}),
    ("POST", "/exchanges/{vhost}/{name}/publish"): _obj(
        ["routing_key", "payload", "payload_encoding", "properties"],
        {"routing_key": STR, "payload": STR, "payload_encoding": {"enum": ["string",
                                                                           "base64"]},
         "properties": OBJ}),
    ("POST", "/queues/{vhost}/{name}/get"): _obj(["count", "ackmode", "encoding"], {
        "count": {"type": "integer", "minimum": 1, "maximum": 1000},
        "ackmode": {"enum": ["ack_requeue_true", "ack_requeue_false",
                             "reject_requeue_true", "reject_requeue_false"]},
        "encoding": {"enum": ["auto", "base64"]}, "truncate": INT}),
    ("PUT", "/users/{user}"): _obj([], {"password": STR, "password_hash": STR,
                                        "tags": {"type": ["string", "array"]}}),
    ("PUT", "/vhosts/{vhost}"): _obj([], {"description": STR, "tracing": BOOL}),
    ("PUT", "/permissions/{vhost}/{user}"): _obj(["configure", "write", "read"], {
        "configure": STR, "write": STR, "read": STR}),
    ("PUT", "/topic-permissions/{vhost}/{user}"): _obj(["exchange", "write", "read"], {
        "exchange": STR, "write": STR, "read": STR}),
    ("PUT", "/policies/{vhost}/{name}"): _obj(["pattern", "definition"], {
        "pattern": STR, "definition": OBJ, "priority": INT,
        "apply-to": {"enum": ["queues", "exchanges", "all"]}}),
    ("PUT", "/traces/{vhost}"): _obj(["enabled"], {"enabled": BOOL}),
    ("POST", "/definitions"): OBJ,
    ("POST", "/users/bulk-delete"): _obj(["users"], {"users": {"type": "array",
                                                               "items": STR}}),
}

# response schemas by path (GET), matched by the last literal segment
RESPONSES: dict[str, dict[str, Any]] = {
    "/overview": _ref("Overview"), "/whoami": _ref("User"), "/nodes": _list("Node"),
    "/nodes/{node}": _ref("Node"), "/connections": _list("Connection"),
    "/vhosts/{vhost}/connections": _list("Connection"),
    "/connections/{name}": _ref("Connection"), "/channels": _list("Channel"),
    "/consumers": _list("Consumer"), "/consumers/{vhost}": _list("Consumer"),
    "/exchanges": _list("Exchange"), "/exchanges/{vhost}": _list("Exchange"),
    "/exchanges/{vhost}/{name}": _ref("Exchange"), "/queues": _list("Queue"),
    "/queues/{vhost}": _list("Queue"), "/queues/{vhost}/{name}": _ref("Queue"),
    "/bindings": _list("Binding"), "/bindings/{vhost}": _list("Binding"),
    "/queues/{vhost}/{name}/bindings": _list("Binding"), "/users": _list("User"),
    "/users/{user}": _ref("User"), "/vhosts": _list("Vhost"), "/vhosts/{vhost}": _ref("Vhost"),
    "/permissions": _list("Permission"), "/permissions/{vhost}/{user}": _ref("Permission"),
    "/topic-permissions": _list("TopicPermission"),
    "/topic-permissions/{vhost}/{user}": _list("TopicPermission"),
    "/policies": _list("Policy"), "/policies/{vhost}": _list("Policy"),
    "/policies/{vhost}/{name}": _ref("Policy"),
    "/health/checks/alarms": _ref("Health"),
}


# RabbitMQ's sample-history parameters (seconds; see gateway/management/history.py)
_HISTORY = [{"name": f"{kind}_{part}", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0 if part == "age" else 1},
             "description": "with its pair: add `samples`, `avg`, `avg_rate` to the "
                            f"{kind.replace('_', ' ')} `_details` objects"}
            for kind in ("lengths", "msg_rates") for part in ("age", "incr")]
QUERY: dict[str, list[dict[str, Any]]] = {
    path: _HISTORY for path in ("/overview", "/queues", "/queues/detailed",
                                "/queues/{vhost}", "/queues/{vhost}/{name}")}
NEEDS = {
    Access.NONE: "Open to every user.",
    Access.MANAGEMENT: "Needs a management, policymaker, monitoring or administrator tag.",
    Access.POLICYMAKER: "Needs the policymaker or administrator tag.",
    Access.MONITORING: "Needs the monitoring or administrator tag.",
    Access.ADMINISTRATOR: "Needs the administrator tag.",
}


def _operation(method: str, path: str, access: Access, handler: Any) -> dict[str, Any]:
    doc = (handler.__doc__ or "").strip().split("\n")[0]
    op: dict[str, Any] = {
        "summary": doc or f"{method} {path}",
        "description": NEEDS[access],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": STR}
                       for p in re.findall(r"{(\w+)}", path)]
        + (QUERY.get(path, []) if method == "GET" else []),
        "responses": {"401": {"description": "not authenticated or not allowed",
                              "content": {"application/json": {"schema": _ref("Error")}}},
                      "404": {"description": "no such object",
                              "content": {"application/json": {"schema": _ref("Error")}}},
                      "400": {"description": "bad request",
                              "content": {"application/json": {"schema": _ref("Error")}}}},
    }
    body = BODIES.get((method, path))
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    if method == "GET":
        schema = RESPONSES.get(path, {})
        op["responses"]["200"] = {"description": "OK",
                                  "content": {"application/json": {"schema": schema}}}
        if path.startswith("/health/"):
            op["responses"]["503"] = {"description": "check failed", "content": {
                "application/json": {"schema": _ref("Health")}}}
    elif method == "PUT":
        op["responses"]["201"] = {"description": "created"}
        op["responses"]["204"] = {"description": "updated"}
    elif method == "DELETE":
        op["responses"]["204"] = {"description": "deleted"}
    else:
        op["responses"]["200"] = {"description": "OK", "content": {"application/json": {
            "schema": {}}}}
        op["responses"]["201"] = {"description": "created"}
        op["responses"]["204"] = {"description": "done"}
    if method in ("PUT", "POST", "DELETE"):
        op["responses"]["403"] = {"description": "refused by permissions, or sent by a web "
                                                 "page of another origin", "content": {
            "application/json": {"schema": _ref("Error")}}}
        if body is not None:
            op["responses"]["415"] = {"description": "the body is not application/json",
                                      "content": {"application/json": {
                                          "schema": _ref("Error")}}}
        op["responses"]["409"] = {"description": "object locked by another connection",
                                  "content": {"application/json": {"schema": _ref("Error")}}}
    return op


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes().table:
        path = "/" + "/".join(route.segments)
        ops = paths.setdefault("/api" + path, {})
        ops[route.method.lower()] = _operation(route.method, path, route.access,
                                               route.handler)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway management API", "version": gateway.__version__,
                 "description": "RabbitMQ's management HTTP API shapes, plus queue browse "
                                "and message trace. Vhost names are percent-encoded path "
                                "segments (`/` is `%2F`); the default exchange is "
                                "`amq.default` in paths."},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
                       "schemas": SCHEMAS},
        "security": [{"basic": []}],
        "paths": paths,
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
