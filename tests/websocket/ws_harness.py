"""An in-process gateway for WebSocket tests: the real `Server` (core, store, AMQP, MQTT
and STOMP listeners on free ports) plus a WebSocket listener of its own
(`WebSocketFront.listen`, as for RabbitMQ's Web-STOMP/Web-MQTT ports); the shared HTTP
port's `/ws` is tested through `gateway serve` in `test_ws_http_port.py`.

Clients run in threads (autobahn's asyncio, pika, paho), so tests wait for them with
`trio.to_thread.run_sync` under a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from gateway.config import HTTPConfig, load_config, with_overrides
from gateway.server.app import Server
from gateway.server.websocket import WebSocketFront, WebSocketOptions

T = TypeVar("T")


@dataclass
class Gateway:
    server: Server
    front: WebSocketFront
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['ws']}/ws"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports['amqp']}/%2F"


@asynccontextmanager
async def running_gateway(tmp_path: Path, options: WebSocketOptions | None = None,
                          max_connections: int | None = None, *,
                          wamp_anonymous: bool = False, anonymous_user: str = "guest",
                          http: HTTPConfig | None = None) -> AsyncIterator[Gateway]:
    """`wamp_anonymous`: `[wamp] allow_anonymous = true` (a HELLO without credentials
    joins as `anonymous_user`); `http`: the `[http]` section (allowed origins and hosts)."""
    config = with_overrides(load_config(), host="127.0.0.1", amqp_port=0, mqtt_port=0,
                            stomp_port=0, http_port=None, data_dir=tmp_path / "data")
    config = replace(config, wamp=replace(config.wamp, allow_anonymous=wamp_anonymous,
                                          anonymous_user=anonymous_user),
                     http=http or config.http)
    if max_connections is not None:
        config = replace(config, limits=replace(config.limits,
                                                max_connections=max_connections))
    server = Server(config)
    front = WebSocketFront(server, options)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        ws_port = await nursery.start(front.listen, "127.0.0.1", 0)
        gw = Gateway(server, front, dict(ports))
        gw.ports["ws"] = ws_port
        try:
            yield gw
        finally:
            await server.shutdown()
            nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], T], timeout: float = 20.0) -> T:
    """Run a blocking client function in a thread, under a deadline."""
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def in_asyncio(main: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run an asyncio coroutine function (autobahn, websockets) on its own loop in a thread."""

    def run() -> T:
        return asyncio.run(asyncio.wait_for(main(), timeout))  # type: ignore[arg-type]

    return await in_thread(run, timeout + 5)


def poll(check: Callable[[], Any], deadline: float = 10.0, step: float = 0.01) -> Any:
    """Blocking bounded poll for threads: `check()` until truthy or the deadline."""
    import time

    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        time.sleep(step)
