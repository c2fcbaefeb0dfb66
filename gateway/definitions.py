"""Definitions export and import in RabbitMQ's JSON format.

The document is the one `rabbitmqctl export_definitions` writes and `GET /api/definitions`
returns: `users` (with `password_hash` and `hashing_algorithm`), `vhosts`, `permissions`,
`topic_permissions`, `policies`, `queues`, `exchanges`, `bindings`, plus `parameters` and
`global_parameters`, which are exported empty and ignored on import. So a RabbitMQ user can
load their topology here and the other way round.

Password hashes: RabbitMQ's `rabbit_password_hashing_sha256` is imported as is and checked
at login; a password set here is a salted scrypt hash, exported with the algorithm name
`gateway_password_hashing_scrypt` (RabbitMQ cannot check it: set such users' passwords
again there). Both import here. A user's WAMP-CRA key is not exported (it would let anyone
holding the file answer WAMP-CRA challenges): after an import such users log in to WAMP
with ticket until their password is set again.

Runtime limits travel as RabbitMQ 3.13 and later write them: a user's in its `limits`
object, a vhost's in its `limits` object; on import, RabbitMQ's older form (a `parameters`
entry of component `vhost-limits`) is read too.

What is exported: every user, vhost, permission and policy; durable, non-exclusive queues;
durable exchanges other than the predeclared ones (`""`, `amq.*`); bindings between durable
objects. Transient objects belong to their connections and are left out, as in RabbitMQ.

Import merges into what exists (as RabbitMQ's does): users, permissions and policies are
created or replaced, vhosts, exchanges and queues created when missing (an existing queue
or exchange declared differently is a `PreconditionFailed`), bindings added. The whole
document is checked before anything is changed, so a malformed file changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gateway
from gateway.auth.limits import Scope, check_limits
from gateway.auth.passwords import (
    HASHING_SCRYPT,
    HASHING_SHA256,
    hashing_algorithm,
    is_password_hash,
)
from gateway.auth.topics import check_topic_pattern
from gateway.core import queue_args
from gateway.core.errors import PreconditionFailed
from gateway.core.exchange import EXCHANGE_TYPES
from gateway.core.policy import Policy
from gateway.core.queue import Queue, QueueArgs

if TYPE_CHECKING:
    from gateway.auth.service import AuthService
    from gateway.core.broker import Broker

HASHING_ALGORITHM = HASHING_SHA256
_ALGORITHMS = (HASHING_SHA256, HASHING_SCRYPT)
_PREDECLARED = frozenset({"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers",
                          "amq.match", "amq.rabbitmq.trace",
                          "amq.rabbitmq.event"})

__all__ = ["HASHING_ALGORITHM", "export_definitions", "import_definitions",
           "load_definitions_file"]


def export_definitions(broker: Broker, auth: AuthService) -> dict[str, Any]:
    """The broker's definitions as a JSON-ready dict."""
    out: dict[str, Any] = {
        "rabbit_version": gateway.__version__,
        "rabbitmq_version": gateway.__version__,
        "product_name": "gateway",
        "product_version": gateway.__version__,
        "users": [
            {"name": u.name, "password_hash": u.password_hash,
             "hashing_algorithm": hashing_algorithm(u.password_hash), "tags": list(u.tags),
             "limits": auth.user_limits(u.name)}
            for u in auth.list_users()],
        "vhosts": [{"name": v, "limits": auth.vhost_limits(v),
                    "metadata": {"description": "", "tags": []}}
                   for v in auth.list_vhosts()],
        "permissions": [
            {"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write,
             "read": p.read}
            for p in auth.list_permissions()],
        "topic_permissions": [
            {"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write,
             "read": t.read}
            for t in auth.list_topic_permissions()],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": [],
        "exchanges": [],
        "bindings": [],
    }
    for vh in broker.vhosts.values():
        for pol in vh.policies.values():
            out["policies"].append({
                "vhost": vh.name, "name": pol.name, "pattern": pol.pattern,
                "apply-to": pol.apply_to, "definition": dict(pol.definition),
                "priority": pol.priority})
        for q in vh.queues.values():
            if q.durable and q.exclusive_owner is None and not q.hidden:
                out["queues"].append({
                    "name": q.name, "vhost": vh.name, "durable": True,
                    "auto_delete": q.auto_delete, "arguments": _jsonable(q.arguments)})
        for x in vh.exchanges.values():
            if x.durable and x.name not in _PREDECLARED:
                out["exchanges"].append({
                    "name": x.name, "vhost": vh.name, "type": x.type, "durable": True,
                    "auto_delete": x.auto_delete, "internal": x.internal,
                    "arguments": _jsonable(x.arguments)})
        for b in vh.bindings():
            dest = b.destination
            is_queue = isinstance(dest, Queue)
            if not (b.source.durable and dest.durable) or (
                    isinstance(dest, Queue) and dest.exclusive_owner is not None):
                continue
            out["bindings"].append({
                "source": b.source.name, "vhost": vh.name, "destination": dest.name,
                "destination_type": "queue" if is_queue else "exchange",
                "routing_key": b.routing_key, "arguments": _jsonable(b.arguments)})
    return out


def _jsonable(value: Any) -> Any:
    """Argument tables as JSON can hold them (bytes as text, other odd types as str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# -- import -------------------------------------------------------------------------------


class _Doc:
    """Typed access to one object of the document, with errors that say where."""

    def __init__(self, where: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise PreconditionFailed(f"definitions: {where} must be an object")
        self.where = where
        self.data = data

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise PreconditionFailed(f"definitions: {self.where}.{key} must be a string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise PreconditionFailed(f"definitions: {self.where}.{key} must be true or false")
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key) or {}
        if not isinstance(value, Mapping):
            raise PreconditionFailed(f"definitions: {self.where}.{key} must be an object")
        return dict(value)


def _items(data: Mapping[str, Any], key: str) -> list[_Doc]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise PreconditionFailed(f"definitions: {key} must be a list")
    return [_Doc(f"{key}[{i}]", item) for i, item in enumerate(value)]


def import_definitions(broker: Broker, auth: AuthService, data: dict[str, Any], *,
                       now: float = 0.0) -> None:
    """Merge a definitions document into the broker (see the module doc)."""
    if not isinstance(data, Mapping):
        raise PreconditionFailed("definitions: the document must be a JSON object")
    users = []
    limits: list[tuple[str, str, dict[str, int]]] = []
    for u in _items(data, "users"):
        password_hash = u.text("password_hash", "")
        algorithm = u.text("hashing_algorithm", hashing_algorithm(password_hash))
        if algorithm not in _ALGORITHMS:
            raise PreconditionFailed(
                f"definitions: {u.where}: hashing_algorithm {algorithm!r} is not supported "
                f"(only {' and '.join(_ALGORITHMS)})")
        if password_hash and not is_password_hash(password_hash, algorithm):
            raise PreconditionFailed(
                f"definitions: {u.where}.password_hash is not a {algorithm} hash")
        tags = u.data.get("tags", [])
        if isinstance(tags, str):
            tags = [t for t in tags.split(",") if t]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise PreconditionFailed(f"definitions: {u.where}.tags must be a list of strings")
        users.append((u.text("name"), password_hash, tags))
        limits.append(("user", u.text("name"), _limits(u, "user")))
    vhosts = [v.text("name") for v in _items(data, "vhosts")]
    limits += [("vhost", v.text("name"), _limits(v, "vhost")) for v in _items(data, "vhosts")]
    for p in _items(data, "parameters"):  # RabbitMQ before 3.13: vhost limits as parameters
        if p.data.get("component") == "vhost-limits":
            limits.append(("vhost", p.text("vhost"), check_limits("vhost", p.data.get("value"))))
    perms = [(p.text("user"), p.text("vhost"), p.text("configure"), p.text("write"),
              p.text("read")) for p in _items(data, "permissions")]
    topic_perms = [(t.text("user"), t.text("vhost"), t.text("exchange"), t.text("write"),
                    t.text("read")) for t in _items(data, "topic_permissions")]
    for t in topic_perms:
        check_topic_pattern("definitions: topic_permissions write", t[3])
        check_topic_pattern("definitions: topic_permissions read", t[4])
    known_users = {u[0] for u in users} | {u.name for u in auth.list_users()}
    for what, user in ([("permission", p[0]) for p in perms]
                       + [("topic permission", t[0]) for t in topic_perms]):
        if user not in known_users:
            raise PreconditionFailed(f"definitions: {what} for user '{user}', who is "
                                     "neither defined nor existing")
    policies = []
    for p in _items(data, "policies"):
        priority = p.data.get("priority", 0)
        Policy.make(p.text("name"), p.text("pattern"), p.table("definition"),
                    priority, p.text("apply-to", "all"))  # validates
        policies.append((p.text("vhost"), p.text("name"), p.text("pattern"),
                         p.table("definition"), priority, p.text("apply-to", "all")))
    exchanges = []
    for x in _items(data, "exchanges"):
        xtype = x.text("type")
        if xtype not in EXCHANGE_TYPES:
            raise PreconditionFailed(f"definitions: {x.where}: unknown exchange type {xtype!r}")
        exchanges.append((x.text("vhost"), x.text("name"), xtype, x.flag("durable", True),
                          x.flag("auto_delete", False), x.flag("internal", False),
                          x.table("arguments")))
    queues = []
    for q in _items(data, "queues"):
        args = q.table("arguments")
        # checked as a declare is, before anything is applied (a bad x-queue-type too)
        queue_args.validate(args, f"queue '{q.text('name')}' in vhost '{q.text('vhost')}'")
        QueueArgs(args)
        queues.append((q.text("vhost"), q.text("name"), q.flag("durable", True),
                       q.flag("auto_delete", False), args))
    bindings = []
    for b in _items(data, "bindings"):
        kind = b.text("destination_type")
        if kind not in ("queue", "exchange"):
            raise PreconditionFailed(f"definitions: {b.where}.destination_type must be "
                                     "queue or exchange")
        bindings.append((b.text("vhost"), b.text("source"), kind, b.text("destination"),
                         b.text("routing_key", ""), b.table("arguments")))
    known_vhosts = set(vhosts) | set(auth.list_vhosts())
    for what, vhost in ([("permission", p[1]) for p in perms]
                        + [("topic permission", t[1]) for t in topic_perms]
                        + [("policy", p[0]) for p in policies]
                        + [("exchange", x[0]) for x in exchanges]
                        + [("queue", q[0]) for q in queues]
                        + [("binding", b[0]) for b in bindings]
                        + [("limits", lim[1]) for lim in limits if lim[0] == "vhost"]):
        if vhost not in known_vhosts:
            raise PreconditionFailed(f"definitions: {what} in vhost '{vhost}', which is "
                                     "neither defined nor existing")

    # everything checked: apply, in dependency order
    for name, password_hash, tags in users:
        auth.add_user(name, password_hash=password_hash or None, tags=tags)
    for name in vhosts:
        auth.add_vhost(name)
        broker.add_vhost(name)
    for user, vhost, c, w, r in perms:
        auth.set_permissions(user, vhost, c, w, r)
    for user, vhost, exchange, w, r in topic_perms:
        auth.set_topic_permissions(user, vhost, exchange, w, r)
    for vhost, name, pattern, definition, priority, apply_to in policies:
        broker.vhost(vhost).set_policy(name, pattern, definition, priority, apply_to, now=now)
    for vhost, name, xtype, durable, auto_delete, internal, args in exchanges:
        broker.vhost(vhost).declare_exchange(name, xtype, durable=durable,
                                             auto_delete=auto_delete, internal=internal,
                                             arguments=args)
    for vhost, name, durable, auto_delete, args in queues:
        broker.vhost(vhost).declare_queue(name, durable=durable, auto_delete=auto_delete,
                                          arguments=args, now=now)
    for vhost, source, kind, destination, key, args in bindings:
        vh = broker.vhost(vhost)
        dest = (vh.get_queue(destination) if kind == "queue"
                else vh.get_exchange(destination))
        vh.bind(dest, source, key, args)
    for scope, name, values in limits:  # after the queues, which they do not refuse
        if values and scope == "user":
            auth.set_user_limits(name, values)
        elif values:
            auth.set_vhost_limits(name, {**auth.vhost_limits(name), **values})


def _limits(item: _Doc, scope: Scope) -> dict[str, int]:
    """A user's or vhost's `limits` (an object; RabbitMQ's older exports: a list)."""
    value = item.data.get("limits") or {}
    if isinstance(value, list) and all(
            isinstance(x, list | tuple) and len(x) == 2 for x in value):
        value = dict(value)
    try:
        return check_limits(scope, value)
    except PreconditionFailed as exc:
        raise PreconditionFailed(f"definitions: {item.where}.limits: {exc.text}") from None


def load_definitions_file(broker: Broker, auth: AuthService, path: Path | str, *,
                          now: float = 0.0) -> None:
    """Import a definitions JSON file (at start, from the config's `[definitions] file`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PreconditionFailed(f"definitions file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PreconditionFailed(f"definitions file {path}: not valid JSON: {exc}") from exc
    import_definitions(broker, auth, data, now=now)
