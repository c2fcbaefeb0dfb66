"""What one broker keeps of MQTT across connections: `MQTTRegistry`, the owner of the
session states by client id, the connection attached to each, and one retained store per
virtual host.

Its owner (the server) makes it with its settings and hands it to every MQTT session it
makes, so two brokers (as in tests) never share it. After the store is read back at start
it takes over what the store kept (`persist.take_over`: retained messages; session records
waiting in `dormant` until their client returns) and adds its state to every snapshot the
store compacts to.

In front of a RabbitMQ cluster (`--backend rabbitmq`) it also has a `Cluster`: the other
gateway nodes and RabbitMQ's view of a session. A CONNECT for a session this node does not
hold asks it what RabbitMQ has (`lookup`: the session queue and its bindings on
`amq.topic`; a clean start `discard`s the queue instead, there or not), tells it when a
CONNECT is accepted (`connected`: a takeover notice to the other nodes), and a node told
that another one took a client id over calls `connect.taken_over_elsewhere`, which
deletes the node's proxies only (`local_only`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from protocols.mqtt.retain import RetainedStore

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.core.durable import Durable
    from protocols.mqtt.session_state import SessionState

SWEEP_EVERY = 100  # connects between two sweeps of expired sessions


class Attached(Protocol):
    """The connection a session state is attached to (``session.py``'s `MQTTSession`)."""

    def taken_over(self, elsewhere: bool = False) -> None:
        """Another connection CONNECTed with this client id [MQTT-3.1.4-3] (`elsewhere`:
        on another gateway node)."""
        ...


@dataclass(frozen=True)
class FoundQueue:
    """A queue as RabbitMQ has it: its flags, arguments and, for a session queue, its
    bindings on `amq.topic` (routing key, arguments): the subscriptions."""

    durable: bool
    auto_delete: bool
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class FoundSession:
    """What RabbitMQ has of a client id: its session queue (None: none)."""

    queue: FoundQueue | None


class Cluster(Protocol):
    """The gateway nodes in front of one RabbitMQ cluster (``gateway.upstream.sessions``)."""

    def lookup(self, client_id: str, bindings: bool,
               then: Callable[[FoundSession | None], None]) -> PendingCheck:
        """Ask RabbitMQ for the client id's queues (in a worker thread, as a password check
        runs); `then` gets the answer, or None when RabbitMQ did not give one."""
        ...

    def connected(self, vhost: str, client_id: str) -> None:
        """A CONNECT was accepted here: tell the other nodes (they close theirs)."""
        ...

    def discard(self, queue: str) -> None:
        """Delete the queue in RabbitMQ, whether this node knows it or not."""
        ...

    def local_only(self, queue: str) -> AbstractContextManager[None]:
        """Deleting the local queue `queue` meanwhile leaves RabbitMQ's alone."""
        ...

    def as_found(self, queue: str) -> AbstractContextManager[None]:
        """Declaring `queue` meanwhile declares it upstream as given (RabbitMQ's own
        flags and arguments), with nothing of the node's added."""
        ...


class MQTTRegistry:
    def __init__(self, durable: Durable, retained_max_messages: int,
                 retained_max_bytes: int) -> None:
        self.durable = durable  # where its retained messages and session records are kept
        self.sessions: dict[tuple[str, str], SessionState] = {}
        # (vhost, client id) -> the connection its session state is attached to
        self.active: dict[tuple[str, str], Attached] = {}
        # session records read back at start, until the client returns: (vhost, client
        # id) -> {(direction, packet id): value} (see persist.py)
        self.dormant: dict[tuple[str, str], dict[tuple[str, int], Any]] = {}
        # the user owning each persistent session, as kept in the store: (vhost, client
        # id) -> user name (see persist.py)
        self.owners: dict[tuple[str, str], str] = {}
        self.retained_max_messages = retained_max_messages
        self.retained_max_bytes = retained_max_bytes
        self._retained: dict[str, RetainedStore] = {}
        # the retained messages are a stream every node reads (`--backend rabbitmq`:
        # gateway/upstream/retained.py), set by that stream
        self.shared_retained = False
        self._connects = 0
        self.cluster: Cluster | None = None  # --backend rabbitmq: the other nodes
        self.publishes_sent = 0  # PUBLISHes sent to clients ($SYS/broker/messages/sent)

    def retained(self, vhost: str) -> RetainedStore:
        store = self._retained.get(vhost)
        if store is None:
            store = self._retained[vhost] = RetainedStore(
                self.retained_max_messages, self.retained_max_bytes, vhost=vhost,
                durable=self.durable, shared=self.shared_retained)
        return store

    def retained_stores(self) -> list[RetainedStore]:
        return list(self._retained.values())

    def vhost_deleted(self, vhost: str) -> None:
        """Everything of a deleted vhost goes (its store records went with it)."""
        self._retained.pop(vhost, None)
        for d in (self.sessions, self.dormant, self.owners):
            for key in [k for k in d if k[0] == vhost]:
                del d[key]

    def sweep(self, now: float) -> list[SessionState]:
        """Every `SWEEP_EVERY` connects: drop the expired session states nobody reconnected
        to, and return them (their store records are the caller's to delete)."""
        self._connects += 1
        if self._connects % SWEEP_EVERY:
            return []
        expired = []
        for key, st in list(self.sessions.items()):
            if key not in self.active and st.expired(now):
                expired.append(st)
                del self.sessions[key]
        return expired
