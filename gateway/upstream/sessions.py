"""MQTT sessions across gateway nodes (`--backend rabbitmq`): finding a session in RabbitMQ,
and the control exchange that tells the other nodes of a client id's takeover.

`ClusterSessions` is MQTT's `Cluster` (`protocols.mqtt.registry`):

- `lookup`: a CONNECT for a session this node does not hold asks RabbitMQ's management
  API, in a worker thread as a password check runs, for the session queue
  (`GET /api/queues/VHOST/mqtt-subscription-<client id>qos1`: 404 means no session; a
  queue whose `x-expires` ran out is gone, and the session with it), its bindings
  (`GET .../bindings`: those on `amq.topic` are the subscriptions, their arguments the
  subscription options). A clean start needs no lookup: the session queue is deleted in
  RabbitMQ, whether it is there or not (`discard`), and so is a delayed will's queue
  (`mqtt-will-<client id>`) on every CONNECT [MQTT-3.1.3-9].
- `connected`: every accepted CONNECT publishes a takeover notice (JSON: vhost, client
  id, node, time) on the fanout exchange `gateway.control`. Every node binds an exclusive,
  auto-delete queue of its own (`gateway.control.<node>`) to it and consumes it; a node
  that holds the client id (`protocols.mqtt.connect.taken_over_elsewhere`) closes its
  connection as taken over and forgets its proxies of the session, leaving RabbitMQ's
  queue to the new node. A notice older than this node's own last CONNECT of that client
  id is stale and ignored (nodes' clocks are assumed close).

The notice is the courtesy; the guarantee that one node delivers from a session queue is
RabbitMQ's single active consumer on it (`x-single-active-consumer`, set by the backend):
a node taking over consumes, and RabbitMQ starts delivering to it only once the old
node's consumer is cancelled (or its connection gone).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import trio

from gateway.auth.login import PendingCheck
from gateway.auth.upstream import ManagementAPI, UpstreamUnavailable
from protocols.mqtt.connect import taken_over_elsewhere
from protocols.mqtt.registry import FoundQueue, FoundSession
from protocols.mqtt.session_state import session_queue_name

from .connection import UpstreamConnection, UpstreamError, UpstreamMessage

if TYPE_CHECKING:
    from gateway.core.broker import Broker
    from protocols.mqtt.registry import MQTTRegistry

    from .backend import UpstreamBackend

log = logging.getLogger("gateway.upstream")

CONTROL_EXCHANGE: Final = "gateway.control"
LOOKUP_THREADS: Final = 4  # session lookups against the management API at once
REMEMBERED: Final = 100_000  # client ids whose last local CONNECT time is kept


def node_name() -> str:
    """This process's name on the control exchange: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def found_queue(queue: Any, bindings: Any) -> FoundQueue | None:
    """The management API's queue (and bindings list) as MQTT reads it; None if absent."""
    if not isinstance(queue, dict):
        return None
    arguments = queue.get("arguments")
    kept: list[tuple[str, dict[str, Any]]] = []
    for b in bindings if isinstance(bindings, list) else ():
        if isinstance(b, dict) and b.get("source") == "amq.topic":
            args = b.get("arguments")
            kept.append((str(b.get("routing_key", "")), dict(args) if isinstance(args, dict)
                         else {}))
    return FoundQueue(bool(queue.get("durable")), bool(queue.get("auto_delete")),
                      dict(arguments) if isinstance(arguments, dict) else {}, tuple(kept))


class ClusterSessions:
    """This node's side of MQTT sessions shared through RabbitMQ (see the module doc)."""

    def __init__(self, backend: UpstreamBackend, api: ManagementAPI, *,
                 node: str | None = None) -> None:
        self.backend = backend
        self.vhost = backend.vhost  # the one vhost upstream
        self.api = api
        self.node = node or node_name()
        self.queue = f"{CONTROL_EXCHANGE}.{self.node}"
        self.limiter = trio.CapacityLimiter(LOOKUP_THREADS)
        self.registry: MQTTRegistry | None = None
        self.broker: Broker | None = None
        self._notices: deque[bytes] = deque()
        self._more = trio.Event()
        # (vhost, client id) -> when this node last accepted its CONNECT (wall clock)
        self._since: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.notices_sent = 0
        self.takeovers = 0  # connections closed here for a CONNECT on another node

    def attach(self, registry: MQTTRegistry, broker: Broker) -> None:
        """Serve MQTT's registry (its `cluster`), whose vhosts are the broker's."""
        self.registry = registry
        self.broker = broker
        registry.cluster = self

    # -- the Cluster protocol --------------------------------------------------------------

    def lookup(self, client_id: str, bindings: bool,
               then: Callable[[FoundSession | None], None]) -> PendingCheck:
        answer: list[FoundSession] = []
        vhost, name = self.vhost, session_queue_name(client_id)

        def verify() -> bool:  # in a worker thread
            try:
                queue = self.api.get("queues", vhost, name)
                bound = (self.api.get("queues", vhost, name, "bindings")
                         if queue is not None and bindings else [])
            except UpstreamUnavailable as exc:
                log.warning("session lookup of %r: %s", client_id, exc)
                return False
            answer.append(FoundSession(found_queue(queue, bound)))
            return True

        def finish(ok: bool) -> None:
            then(answer[0] if ok and answer else None)

        return PendingCheck(verify, finish, self.limiter)

    def connected(self, vhost: str, client_id: str) -> None:
        now = time.time()
        key = (vhost, client_id)
        self._since[key] = now
        self._since.move_to_end(key)
        while len(self._since) > REMEMBERED:
            self._since.popitem(last=False)
        self._notices.append(json.dumps({"vhost": vhost, "client_id": client_id,
                                         "node": self.node, "at": now}).encode())
        self._more.set()

    def discard(self, queue: str) -> None:
        self.backend.delete_upstream(queue)

    def local_only(self, queue: str) -> AbstractContextManager[None]:
        return self.backend.local_only(queue)

    def as_found(self, queue: str) -> AbstractContextManager[None]:
        return self.backend.as_found(queue)

    # -- the control exchange --------------------------------------------------------------

    async def run(self, connection: UpstreamConnection, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind this node's queue to the control exchange and consume it, then publish the
        notices of accepted CONNECTs, for ever (a server task). Declares, the binding and
        the consumer are restored by the connection after a reconnect."""
        await connection.declare_exchange(CONTROL_EXCHANGE, "fanout", durable=True)
        await connection.declare_queue(self.queue, durable=False, exclusive=True,
                                       auto_delete=True)
        await connection.bind_queue(self.queue, CONTROL_EXCHANGE, "")
        await connection.consume(self.queue, prefetch=0, no_ack=True, callback=self._received)
        task_status.started()
        while True:
            if not self._notices:
                self._more = trio.Event()
                await self._more.wait()
                continue
            body = self._notices.popleft()
            try:  # a courtesy: single-active-consumer is the guarantee
                await connection.publish(CONTROL_EXCHANGE, "", body, retry=True)
                self.notices_sent += 1
            except UpstreamError as exc:
                log.warning("takeover notice not sent: %s", exc)

    def _received(self, message: UpstreamMessage) -> None:
        """A takeover notice (from the upstream connection's reader task)."""
        try:
            notice = json.loads(message.body)
            vhost, client_id = str(notice["vhost"]), str(notice["client_id"])
            node, at = str(notice["node"]), float(notice["at"])
        except (ValueError, KeyError, TypeError):
            log.warning("control exchange: not a takeover notice: %r", message.body[:200])
            return
        if node == self.node or self.registry is None or self.broker is None:
            return
        key = (vhost, client_id)
        since = self._since.get(key)
        if since is not None and at < since:
            return  # about a CONNECT there before the last one here
        self._since.pop(key, None)
        if taken_over_elsewhere(self.registry, self.broker.vhosts.get(vhost), client_id):
            self.takeovers += 1
            log.info("MQTT client %r of vhost %r: taken over on node %s", client_id, vhost,
                     node)
