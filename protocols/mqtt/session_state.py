"""An MQTT session's state, which outlives its connections: `SessionState` and its parts
(subscription options, messages in flight), and the names of the queues a session uses.

A `SessionState` is an MQTT session in the spec's sense [MQTT-4.1]: subscriptions, QoS 1/2
messages sent and not yet acknowledged (kept with their packet ids, to be resent with DUP
on reconnect [MQTT-4.4.0-1]), QoS 2 packet ids received and not yet released (exactly-once
dedup), and when it expires. The messages themselves live in the core, in the session's
queue; a persistent session's queue and bindings are durable, so after a broker restart the
session comes back from them (its subscriptions are bindings whose arguments carry the
subscription options). Its QoS 2 packet ids in flight both ways are kept in the store too
(``persist.py``), so a resumed session completes the QoS 2 exchanges it had open. The
broker's session states, by (vhost, client id), are in its `MQTTRegistry` (``registry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocols.mqtt.frames import Publish

if TYPE_CHECKING:
    from gateway.core.queue import Entry

# binding arguments that carry a subscription's options
ARG_QOS = "x-mqtt-subscription-qos"
ARG_NO_LOCAL = "x-mqtt-no-local"
ARG_RAP = "x-mqtt-retain-as-published"
ARG_SUB_ID = "x-mqtt-subscription-id"


def session_queue_name(client_id: str) -> str:
    """One queue per session. RabbitMQ's name for the QoS 1 queue of a client; here it holds
    every QoS, so its permission idiom `^mqtt-subscription-{client_id}qos.*` still applies."""
    return f"mqtt-subscription-{client_id}qos1"


def will_queue_name(client_id: str) -> str:
    return f"mqtt-will-{client_id}"


def shared_queue_name(group: str, topic_filter: str) -> str:
    """The queue of shared subscription `$share/<group>/<filter>`. A share name never holds
    a `/` [MQTT-4.8.2-2] (`parse_shared` splits at the first one), so the first `/` after
    the prefix ends the group and the name is one-to-one with (group, filter):
    `$share/grp-carol/payroll` and `$share/grp/carol-payroll` get different queues. (The
    queues are transient, auto-delete: no name of an older scheme outlives a restart.)"""
    return f"mqtt-shared-{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class SubOptions:
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    subscription_id: int | None = None

    def binding_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {ARG_QOS: self.qos}
        if self.no_local:
            args[ARG_NO_LOCAL] = True
        if self.retain_as_published:
            args[ARG_RAP] = True
        if self.subscription_id is not None:
            args[ARG_SUB_ID] = self.subscription_id
        return args

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SubOptions | None:
        qos = args.get(ARG_QOS)
        if not isinstance(qos, int) or isinstance(qos, bool) or not 0 <= qos <= 2:
            return None
        sub_id = args.get(ARG_SUB_ID)
        return cls(qos, bool(args.get(ARG_NO_LOCAL)), bool(args.get(ARG_RAP)),
                   sub_id if isinstance(sub_id, int) else None)


@dataclass(slots=True)
class Outgoing:
    """A QoS 1/2 PUBLISH sent to the client and not yet completed."""

    packet: Publish
    entry: Entry | None  # the core entry to settle (None: a retained message)
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
    durable: bool = False  # its stage is kept in the store (QoS 2, persistent session)


@dataclass(eq=False)
class SessionState:
    vhost: str
    client_id: str
    expiry: int = 0  # seconds the session outlives its connection
    subscriptions: dict[str, SubOptions] = field(default_factory=dict)
    # shared subscriptions: "$share/group/filter" -> (group, filter, options)
    shared: dict[str, tuple[str, str, SubOptions]] = field(default_factory=dict)
    outgoing: dict[int, Outgoing] = field(default_factory=dict)
    incoming_qos2: set[int] = field(default_factory=set)
    next_packet_id: int = 1
    disconnected_at: float | None = None
    recorded: bool = False  # the store has (or had) records of this session's packet ids
    owner: str = ""  # the user who made the session; only that user resumes it

    def expired(self, now: float) -> bool:
        return self.disconnected_at is not None and now - self.disconnected_at >= self.expiry

    def allocate_packet_id(self) -> int | None:
        """A packet id not in use by an unacknowledged outgoing PUBLISH, or None."""
        if len(self.outgoing) >= 65535:
            return None
        pid = self.next_packet_id
        while pid in self.outgoing:
            pid = pid % 65535 + 1
        self.next_packet_id = pid % 65535 + 1
        return pid
