"""Retained MQTT messages shared by every gateway node: one RabbitMQ stream.

`--backend rabbitmq` keeps the retained messages of the one upstream vhost in a stream
(`x-queue-type: stream`, `retained_stream`, default `gateway.retained`), declared by the
first node that starts (the others find it). Every change a node makes to its retained
tree (`protocols.mqtt.retain.RetainedStore`: a retained PUBLISH, a clear by an empty
payload) reaches the backend as a keyed value (`Durable.put_value` / `delete_value`), and
the backend appends it to the stream as one publish whose position the PUBACK waits for
(`append`). Every node reads the stream from its first offset at start (the listeners open
once it has read up to a marker it appended itself) and then tails it into its tree, so the
stream's order decides the last value of a topic on every node. A message found expired
when read is dropped; each node drops expired messages on its own, without writing.

Records (the body, the store's tagged encoding, `gateway.store.serial`): a map with `kind`
(`set`, `clear`, `refresh`, `sync`), `vhost`, `topic`, `value` (`retain.to_value`), `at`
(the writer's wall clock) and, for `refresh`, `origin`.

Bounded: a stream has no compaction (RabbitMQ 3.10), so the stream keeps `x-max-age`
(`retained_max_age`) and optionally `x-max-length-bytes` (`retained_max_bytes`), in segments
of `retained_segment_bytes`, and every node re-appends the live messages last written more
than `retained_refresh` seconds ago as `refresh` records naming the offset of the record
they copy (`origin`). A refresh counts only where the topic's last record seen is not newer
than its origin, so a refresh that crossed a newer set or clear from another node changes
nothing: every reader decides the same way, in the stream's order.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from pamqp import commands

from gateway.config import stream_max_age_seconds
from gateway.store import serial
from protocols.mqtt.retain import SPACE, Retained, from_value, to_value

from .connection import ChannelError, UpstreamConnection, UpstreamError, UpstreamMessage

if TYPE_CHECKING:
    from protocols.mqtt.registry import MQTTRegistry
    from protocols.mqtt.retain import RetainedStore

log = logging.getLogger("gateway.upstream")

CONTENT_TYPE = "application/x-gateway-retained"
PREFETCH = 1000  # stream records read ahead (a stream consumer needs basic.qos)
SYNC_TIMEOUT = 30.0  # s to read up to the start marker before the node opens anyway
PENDING = math.inf  # a topic's origin while this node's own write is on its way

__all__ = ["SPACE", "RetainedStream"]


@dataclass(slots=True)
class _Seen:
    """What a node knows of a topic from the stream: the offset of the record that gave its
    value (`PENDING` while its own write travels) and when that value was last written."""

    origin: float
    at: float


class RetainedStream:
    """The retained stream of one node: appends (through the backend) and the tail."""

    def __init__(self, name: str = "gateway.retained", *, max_age: str = "7D",
                 max_bytes: int = 0, segment_bytes: int = 4 * 1024 * 1024,
                 refresh: float = 86400.0, clock: Callable[[], float]) -> None:
        self.name = name
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.refresh = refresh
        self.clock = clock
        self.registry: MQTTRegistry | None = None
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._token = secrets.token_hex(8)
        self._synced = trio.Event()
        self.offset = -1  # the last offset read
        self.applied = 0  # records read (for tests and logs)

    def attach(self, registry: MQTTRegistry) -> None:
        """The MQTT state whose retained trees this stream feeds (made after the backend)."""
        registry.shared_retained = True
        for store in registry.retained_stores():
            store.shared = True
        self.registry = registry

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": "stream"}
        if self.max_age:
            args["x-max-age"] = self.max_age
        if self.max_bytes:
            args["x-max-length-bytes"] = self.max_bytes
        if self.segment_bytes:
            args["x-stream-max-segment-size-bytes"] = self.segment_bytes
        return args

    # -- appending -------------------------------------------------------------------------

    def append(self, key: tuple[Any, ...], value: Any) -> dict[str, Any]:
        """The publish (the backend's operation arguments) recording `value` (None: a
        clear) for `key` = (vhost, topic); the topic waits for it to come back."""
        vhost, topic = key[0], key[1]
        now = self.clock()
        self._seen[(vhost, topic)] = _Seen(PENDING, now)
        record = {"kind": "set" if value is not None else "clear", "vhost": vhost,
                  "topic": topic, "value": value, "at": now}
        return self._publish(record)

    def _publish(self, record: dict[str, Any]) -> dict[str, Any]:
        properties = commands.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=2,
                                               message_type=str(record["kind"]))
        return {"exchange": "", "routing_key": self.name, "body": serial.encode(record),
                "properties": properties}

    # -- the task ----------------------------------------------------------------------------

    async def run(self, connection: UpstreamConnection, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Declare the stream, read it from the start up to this node's marker (then
        `started`), tail it for ever, and re-append what ages."""
        try:
            await connection.declare_queue(self.name, durable=True,
                                           arguments=self.arguments())
        except ChannelError as exc:
            if exc.reply_code != 406:
                raise
            # declared by another node with other settings: theirs stand
            log.warning("upstream: retained stream %s exists with other arguments (%s); "
                        "using it as it is", self.name, exc)
            await connection.declare_queue(self.name, passive=True)
        consumer = await connection.consume(self.name, prefetch=PREFETCH,
                                            arguments={"x-stream-offset": "first"})
        marker = self._publish({"kind": "sync", "token": self._token, "at": self.clock()})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tail, consumer)
            await connection.publish(marker["exchange"], marker["routing_key"],
                                     marker["body"], marker["properties"], retry=True)
            with trio.move_on_after(SYNC_TIMEOUT) as waited:
                await self._synced.wait()
            if waited.cancelled_caught:
                log.warning("upstream: retained stream %s not read to its end in %.0f s; "
                            "opening anyway", self.name, SYNC_TIMEOUT)
            log.info("retained stream %s read: %d records, %d retained messages", self.name,
                     self.applied, sum(s.count for s in self._stores()))
            task_status.started()
            if self.refresh > 0:
                nursery.start_soon(self._refresher, connection)

    async def _tail(self, consumer: Any) -> None:
        async for message in consumer:
            self._read(message)
            await message.ack()  # a stream consumer's credit
        log.error("upstream: the consumer of retained stream %s was cancelled", self.name)

    def _read(self, message: UpstreamMessage) -> None:
        headers = message.properties.headers or {}
        offset = headers.get("x-stream-offset")
        if isinstance(offset, int):
            if offset <= self.offset:
                return  # read again after a reconnect
            self.offset = offset
            # a resubscribe (after a reconnect) goes on after it
            message.consumer.arguments["x-stream-offset"] = offset + 1
        try:
            record = serial.decode(message.body)
            self.apply(record, float(self.offset))
        except (serial.DecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("upstream: retained stream %s: record at offset %d unreadable: %s",
                        self.name, self.offset, exc)

    def apply(self, record: dict[str, Any], offset: float) -> None:
        """One record, in the stream's order."""
        kind = record["kind"]
        self.applied += 1
        if kind == "sync":
            if record.get("token") == self._token:
                self._synced.set()
            return
        vhost, topic, at = str(record["vhost"]), str(record["topic"]), float(record["at"])
        store = self._store(vhost)
        if store is None:
            return
        key = (vhost, topic)
        seen = self._seen.get(key)
        if kind == "refresh":
            origin = float(record["origin"])
            if seen is not None and seen.origin > origin:
                return  # a newer record (or this node's own write) came first
            if seen is not None and seen.origin == origin:
                seen.at = at
                return
            offset = origin
            kind = "set"
        self._seen[key] = _Seen(offset, at)
        value = record.get("value")
        if kind == "clear" or value is None:
            store.drop(topic)
            return
        message: Retained = from_value(topic, list(value))
        if message.expires_at is not None and message.expires_at <= self.clock():
            store.drop(topic)
            return
        store.load(message)

    def _stores(self) -> list[RetainedStore]:
        return self.registry.retained_stores() if self.registry is not None else []

    def _store(self, vhost: str) -> RetainedStore | None:
        return self.registry.retained(vhost) if self.registry is not None else None

    # -- bounding the stream -----------------------------------------------------------------

    async def _refresher(self, connection: UpstreamConnection) -> None:
        """Every half `refresh` (with a little jitter, so that nodes rarely copy the same
        message at once): append again the live messages last written `refresh` ago."""
        period = max(1.0, self.refresh / 2)
        while True:
            await trio.sleep(period * random.uniform(0.9, 1.1))
            for record in self.due(self.clock()):
                try:
                    await connection.publish(record["exchange"], record["routing_key"],
                                             record["body"], record["properties"],
                                             retry=True)
                except UpstreamError as exc:
                    log.warning("upstream: retained refresh not appended: %s", exc)

    def due(self, now: float) -> list[dict[str, Any]]:
        """The refresh records due at `now` (and forget clears older than the stream)."""
        out: list[dict[str, Any]] = []
        horizon = stream_max_age_seconds(self.max_age) if self.max_age else None
        for (vhost, topic), seen in list(self._seen.items()):
            if seen.origin == PENDING or seen.at > now - self.refresh:
                continue
            store = self._store(vhost)
            message = store.get(topic) if store is not None else None
            if message is None or (message.expires_at is not None
                                   and message.expires_at <= now):
                if horizon is not None and seen.at < now - horizon:
                    del self._seen[(vhost, topic)]  # its record has left the stream
                continue
            seen.at = now
            out.append(self._publish({"kind": "refresh", "vhost": vhost, "topic": topic,
                                      "value": to_value(message), "origin": int(seen.origin),
                                      "at": now}))
        return out
