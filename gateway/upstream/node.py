"""A gateway node in front of a RabbitMQ cluster: what `--backend rabbitmq` adds to the
server (the backend and store of `backend.py`, the users of `gateway.auth.upstream`, the
retained stream of `retained.py`, MQTT sessions across nodes of `sessions.py`) and the
tasks that run them on the upstream connection."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from gateway.auth.upstream import RabbitMQUsers, UpstreamUnavailable
from gateway.config import Config

from .backend import UpstreamBackend
from .connection import connect
from .retained import RetainedStream
from .sessions import ClusterSessions
from .url import parse_url

if TYPE_CHECKING:
    from protocols.mqtt.registry import MQTTRegistry


@dataclass(eq=False)
class UpstreamNode:
    backend: UpstreamBackend
    users: RabbitMQUsers
    urls: tuple[str, ...]
    heartbeat: int
    retained: RetainedStream
    sessions: ClusterSessions

    def share_retained(self, registry: MQTTRegistry) -> None:
        """MQTT's retained messages go to (and come from) the retained stream."""
        self.retained.attach(registry)
        self.backend.retained = self.retained

    async def run(self, on_failed: Callable[[str], None], on_progress: Callable[[], None],
                  *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to the first node that answers (`UpstreamError` if none does), read
        the retained stream up to its end, then do the backend's operations, tail the
        stream and refresh the users' grants, until cancelled."""
        self.backend.on_failed = on_failed
        self.backend.on_progress = on_progress
        async with connect(self.urls, heartbeat=self.heartbeat, name="gateway") as upstream:
            async with trio.open_nursery() as nursery:
                if self.backend.retained is not None:
                    await nursery.start(self.retained.run, upstream)
                await nursery.start(self.sessions.run, upstream)
                # the vhosts RabbitMQ has, before the listeners open (a WAMP HELLO names its
                # realm before the login that would fetch them)
                with contextlib.suppress(UpstreamUnavailable):
                    await self.users.refresh()
                task_status.started()
                nursery.start_soon(self.users.run)
                await self.backend.run(upstream)


def upstream_backend(config: Config, clock: Callable[[], float]) -> UpstreamNode:
    """The node's upstream parts from `[backend.rabbitmq]` (validated by gateway.config)."""
    rabbitmq = config.backend.rabbitmq
    vhost = parse_url(rabbitmq.urls[0]).vhost
    backend = UpstreamBackend(rabbitmq.urls, vhost, clock=clock,
                              session_queue_type=rabbitmq.session_queue_type,
                              heartbeat=rabbitmq.heartbeat, prefetch=rabbitmq.prefetch)
    users = RabbitMQUsers.from_urls(rabbitmq.urls, rabbitmq.management_url, rabbitmq.auth)
    retained = RetainedStream(rabbitmq.retained_stream, max_age=rabbitmq.retained_max_age,
                              max_bytes=rabbitmq.retained_max_bytes,
                              segment_bytes=rabbitmq.retained_segment_bytes,
                              refresh=rabbitmq.retained_refresh, clock=clock)
    return UpstreamNode(backend, users, rabbitmq.urls, rabbitmq.heartbeat, retained,
                        ClusterSessions(backend, users.api))
