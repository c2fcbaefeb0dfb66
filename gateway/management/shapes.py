"""The JSON shapes of RabbitMQ's management API, made from core objects and sessions.

Connections of every protocol are read from the typed record each session provides
(`gateway.info.ConnectionInfo`, with its AMQP channels as `ChannelInfo`), and consumers
name their connection through `Owned.owner()`. Field names and value forms follow what
RabbitMQ 3.10 answers, so that rabbitmqadmin, dashboards and scripts written against it
read these too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.queue import Queue
from gateway.info import ChannelInfo, Connected, ConnectionInfo, ConsumerOwner, Owned, TLSInfo
from gateway.management.answers import jsonable
from gateway.management.stats import CHANNEL_FIELDS, QUEUE_FIELDS, Stats, channel_counters

if TYPE_CHECKING:
    from gateway.core.exchange import Binding, Exchange
    from gateway.core.observe import ConsumerRef
    from gateway.core.queue import Consumer
    from gateway.core.vhost import VirtualHost

NODE = f"gateway@{socket.gethostname()}"


def details(rate: float) -> dict[str, float]:
    return {"rate": rate}


def owner_of(consumer: Any) -> ConsumerOwner | None:
    """The connection (and channel) a consumer belongs to, when it tells."""
    return consumer.owner() if isinstance(consumer, Owned) else None


# -- queues ---------------------------------------------------------------------------------


def policy_of(obj: Queue | Exchange) -> tuple[str | None, dict[str, Any]]:
    """The name and definition of the policy applied to a queue or exchange, if any."""
    policy = obj.policy
    if policy is None:
        return None, {}
    return str(policy.name), jsonable(dict(policy.definition))


def queue(q: Queue, stats: Stats, now: float) -> dict[str, Any]:
    vh = q.vhost
    ready, unacked = q.message_count, len(q.unacked)
    unacked_bytes = sum(len(e.message.body) for e in q.unacked.values())
    rate = {f: stats.queue_rate(q, f) for f in QUEUE_FIELDS}
    policy, definition = policy_of(q)
    consumers = list(q.consumers)
    sac_tag = None
    if q.args.single_active_consumer and consumers:
        sac_tag = consumers[0].tag
    exclusive_tag = next((c.tag for c in consumers if c.exclusive), None)
    return {
        "name": q.name,
        "vhost": vh.name,
        "type": q.queue_type,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner is not None,
        "arguments": jsonable(q.arguments),
        # accepted and ignored (unknown to this broker), as RabbitMQ ignores them
        "unsupported_arguments": list(q.unsupported_arguments),
        "delivery_limit": (q.args.delivery_limit if q.args.delivery_limit is not None
                           else "unlimited") if q.quorum else None,
        "node": NODE,
        "state": "running",
        "policy": policy,
        "effective_policy_definition": definition,
        "messages": ready + unacked,
        "messages_details": details(rate["messages_ready"] + rate["messages_unacknowledged"]),
        "messages_ready": ready,
        "messages_ready_details": details(rate["messages_ready"]),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(rate["messages_unacknowledged"]),
        "message_bytes": q.ready_bytes + unacked_bytes,
        "message_bytes_ready": q.ready_bytes,
        "message_bytes_unacknowledged": unacked_bytes,
        "consumers": len(consumers),
        "consumer_capacity": 1.0 if consumers else 0.0,
        "consumer_utilisation": 1.0 if consumers else None,
        "exclusive_consumer_tag": exclusive_tag,
        "single_active_consumer_tag": sac_tag,
        "memory": q.ready_bytes + unacked_bytes,
        "idle_since": None if consumers else _iso(q.last_used or now),
        "message_stats": {
            "publish": q.stats_published, "publish_details": details(rate["publish"]),
            "deliver_get": q.stats_delivered, "deliver_get_details": details(
                rate["deliver_get"]),
            "ack": q.stats_acked, "ack_details": details(rate["ack"]),
            "redeliver": q.stats_redelivered, "redeliver_details": details(rate["redeliver"]),
        },
    }


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def consumer(c: Consumer, q: Queue, listening: Listening) -> dict[str, Any]:
    owner = owner_of(c)
    out: dict[str, Any] = {
        "consumer_tag": c.tag,
        "queue": {"name": q.name, "vhost": q.vhost.name},
        "ack_required": not c.no_ack,
        "exclusive": c.exclusive,
        "prefetch_count": owner.prefetch if owner is not None else 0,
        "arguments": {"x-priority": c.priority} if c.priority else {},
        "active": True,
        "activity_status": "up",
        "consumer_timeout": None,
    }
    if owner is not None:
        info = owner.connection.info()
        conn = connection_ref(info, listening)
        number = owner.channel or 0
        out["channel_details"] = {
            "name": f"{conn['name']} ({number})", "number": number,
            "connection_name": conn["name"], "peer_host": conn["peer_host"],
            "peer_port": conn["peer_port"], "node": NODE, "user": info.user}
    else:
        out["channel_details"] = {}
    return out


def consumer_ref(c: ConsumerRef, listening: Listening) -> dict[str, Any]:
    """The consumer as a trace record names it: its tag, and the connection and channel
    (or session) it belongs to."""
    owner = owner_of(c)
    out: dict[str, Any] = {"consumer_tag": c.tag, "protocol": "", "peer": "",
                           "connection": None, "channel": None}
    if owner is not None:
        info = owner.connection.info()
        conn = connection_ref(info, listening)
        out.update(protocol=info.protocol, peer=f"{conn['peer_host']}:{conn['peer_port']}",
                   connection=conn["name"], channel=owner.channel, user=info.user)
    return out


# -- exchanges and bindings -------------------------------------------------------------


def exchange(x: Exchange, delayed: dict[str, int] | None = None) -> dict[str, Any]:
    """`delayed`: the vhost's held messages per exchange (`Delayed.by_exchange`); an
    x-delayed-message exchange shows its count as `messages_delayed`."""
    out = {
        "name": x.name,
        "vhost": x.vhost_name,
        "type": x.type,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": jsonable(x.arguments),
        "user_who_performed_action": "rmq-internal",
        "policy": policy_of(x)[0],
    }
    if x.delayed and delayed is not None:
        out["messages_delayed"] = delayed.get(x.name, 0)
    return out


def properties_key(routing_key: str, arguments: dict[str, Any]) -> str:
    """RabbitMQ's short identity of a binding in URLs: `~` for no key and no arguments,
    the key alone without arguments, else key~hash-of-arguments."""
    if not arguments:
        return routing_key if routing_key else "~"
    digest = hashlib.sha1(json.dumps(jsonable(arguments), sort_keys=True).encode()).digest()
    return f"{routing_key}~{base64.urlsafe_b64encode(digest[:9]).decode()}"


def binding(b: Binding, vhost: str) -> dict[str, Any]:
    return {
        "source": b.source.name,
        "vhost": vhost,
        "destination": b.destination.name,
        "destination_type": "queue" if isinstance(b.destination, Queue) else "exchange",
        "routing_key": b.routing_key,
        "arguments": jsonable(b.arguments),
        "properties_key": properties_key(b.routing_key, b.arguments),
    }


def default_binding(q: Queue) -> dict[str, Any]:
    """The implicit binding of every queue to the default exchange, by its name."""
    return {"source": "", "vhost": q.vhost.name, "destination": q.name,
            "destination_type": "queue", "routing_key": q.name, "arguments": {},
            "properties_key": q.name}


def bindings_of(vh: VirtualHost) -> list[dict[str, Any]]:
    out = [default_binding(q) for q in vh.queues.values() if not q.hidden]
    out += [binding(b, vh.name) for b in vh.bindings()]
    return out


# -- connections and channels -------------------------------------------------------------


Listening = tuple[str, Mapping[str, int]]  # the listeners' host, and port by protocol key


def connection_ref(info: ConnectionInfo, listening: Listening) -> dict[str, Any]:
    peer = info.peer
    host, ports = listening
    key = info.key + "s" if info.tls is not None else info.key  # amqps, mqtts, stomps
    port = ports.get(key, 0)
    return {"name": f"{peer[0]}:{peer[1]} -> {host}:{port}", "peer_host": peer[0],
            "peer_port": peer[1], "host": host, "port": port}


def connection(session: Connected, stats: Stats, now: float, listening: Listening
               ) -> dict[str, Any]:
    info = session.info()
    return {
        **connection_ref(info, listening),
        "vhost": info.vhost,
        "user": info.user,
        "protocol": info.protocol,
        "node": NODE,
        "type": "network",
        "state": "closed" if info.closed else ("running" if info.user else "starting"),
        "channels": len(info.channels),
        "client_properties": jsonable(dict(info.client_properties)),
        "connected_at": int(stats.connected_at(session, now) * 1000),
        "timeout": info.heartbeat,
        "frame_max": info.frame_max,
        "channel_max": info.channel_max,
        "auth_mechanism": info.auth_mechanism,
        **ssl_fields(info.tls),
        "send_pend": info.pending_output,
        "blocked": info.blocked,
    }


def ssl_fields(tls: TLSInfo | None) -> dict[str, Any]:
    """RabbitMQ's TLS fields of a connection (None on plain TCP)."""
    if tls is None:
        return {"ssl": False, "ssl_protocol": None, "ssl_cipher": None,
                "peer_cert_subject": None}
    return {"ssl": True, "ssl_protocol": tls.version, "ssl_cipher": tls.cipher,
            "peer_cert_subject": tls.cert_subject or None}


def channels_of(session: Connected, listening: Listening, stats: Stats | None = None
                ) -> list[dict[str, Any]]:
    info = session.info()
    ref = connection_ref(info, listening)
    return [channel(session, info, ch, ref, stats) for ch in info.channels]


def channel(session: Connected, info: ConnectionInfo, ch: ChannelInfo, ref: dict[str, Any],
            stats: Stats | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": f"{ref['name']} ({ch.number})",
        "number": ch.number,
        "node": NODE,
        "user": info.user,
        "user_who_performed_action": info.user,
        "vhost": info.vhost,
        "connection_details": {"name": ref["name"], "peer_host": ref["peer_host"],
                               "peer_port": ref["peer_port"]},
        "consumer_count": ch.consumer_count,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": ch.unconfirmed,
        "messages_uncommitted": ch.uncommitted,
        "acks_uncommitted": ch.acks_uncommitted,
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "state": "running" if ch.flow else "flow",
    }
    if stats is not None:
        message_stats: dict[str, Any] = {}
        for field, value in zip(CHANNEL_FIELDS, channel_counters(ch), strict=True):
            message_stats[field] = value
            message_stats[f"{field}_details"] = details(
                stats.channel_rate((session, ch.number), field))
        item["message_stats"] = message_stats
    return item
