"""A gateway node in front of a RabbitMQ cluster: what `--backend rabbitmq` adds to the
server (the backend and store of `backend.py`, the users of `gateway.auth.upstream`) and
the one task that runs them on the upstream connection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from gateway.auth.upstream import RabbitMQUsers
from gateway.config import Config

from .backend import UpstreamBackend
from .connection import connect
from .url import parse_url


@dataclass(eq=False)
class UpstreamNode:
    backend: UpstreamBackend
    users: RabbitMQUsers
    urls: tuple[str, ...]
    heartbeat: int

    async def run(self, on_failed: Callable[[str], None], on_progress: Callable[[], None],
                  *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to the first node that answers (`UpstreamError` if none does), then
        do the backend's operations and refresh the users' grants, until cancelled."""
        self.backend.on_failed = on_failed
        self.backend.on_progress = on_progress
        async with connect(self.urls, heartbeat=self.heartbeat, name="gateway") as upstream:
            task_status.started()
            async with trio.open_nursery() as nursery:
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
    return UpstreamNode(backend, users, rabbitmq.urls, rabbitmq.heartbeat)
