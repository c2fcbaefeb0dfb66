"""The trio driver of the upstream AMQP client: one connection to a RabbitMQ cluster.

Why hand-written, on the project's own codec: the maintained Python AMQP clients,
aio-pika and aiormq (and pika's asyncio adapter), run on asyncio only, and gateway runs on
trio. The trio ones are not kept: trio-amqp (a fork of aioamqp) had its last release in
2018; async-amqp (anyio, the same lineage) in 2023 and serena (anyio) in 2024, neither
with reconnect to the next cluster node. Running aio-pika under trio-asyncio would put a
second event loop under every upstream call and asyncio's cancellation beside trio's.
The protocol itself is already here: ``protocols.amqp.client`` is the sans-IO client on
the codec the server uses; this module adds only sockets, time and tasks.

What it does:

- ``connect(urls)`` opens to the first node that answers, in order, trying the next one
  on a refused connection, a timeout or a failed handshake (403 on bad credentials is
  not retried: every node has the same users), and negotiates heartbeats.
- RPCs (``declare_exchange``, ``declare_queue``, ``bind_queue``, ...) run on one control
  channel and return the server's reply; a refusal (e.g. 406 PRECONDITION_FAILED on a
  redeclare with other arguments) raises ``ChannelError`` with the reply code, and the
  next RPC opens a fresh channel.
- ``publish`` waits while RabbitMQ has the connection blocked (a memory or disk alarm),
  then publishes on a confirming channel and returns when RabbitMQ confirms; a nack
  raises ``PublishNacked``, a mandatory publish no queue took ``PublishReturned`` (312).
- ``consume`` opens a channel per consumer with its prefetch (basic.qos) and yields
  ``UpstreamMessage``s as an async iterator (or calls a callback); ``ack``/``nack``/
  ``reject`` settle them, on the connection they came from.
- Heartbeats both ways: a frame every ``heartbeat / 2`` s; a connection silent for two
  heartbeat intervals is taken as dead.
- When the connection drops (node killed, connection.close 320 on a node shutdown,
  heartbeat timeout) every call waiting on it raises ``ConnectionLost``, the driver opens
  to the next node, declares again every exchange, queue and binding declared through
  it (not server-named queues: their names are RabbitMQ's, which refuses ``amq.*`` names
  from clients), resubscribes every consumer with the same tag and prefetch, and counts
  the reconnect (``generation``, ``on_reconnect``). Publishes that were not confirmed
  raise ``ConnectionLost``; the caller publishes them again (``publish(...,
  retry=True)`` does it), so delivery is at-least-once: a consumer may see a message
  twice, never lose one that was confirmed. Messages received on the old connection and
  not yet acknowledged are redelivered by RabbitMQ; acking them is a no-op.

A basic.return carries no delivery tag: it is matched to the oldest unconfirmed
mandatory publish with the same exchange and routing key (RabbitMQ sends the return
before the confirm of the same message, and processes a channel's publishes in order);
a binding that changes between two such publishes in flight could swap them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from pamqp import base, commands

from protocols.amqp.client import (
    ACCESS_REFUSED,
    Blocked,
    ChannelClosed,
    ChannelOpened,
    ClientConnection,
    ClientEvent,
    Confirmed,
    ConnectionClosed,
    ConnectionOpened,
    ConsumerCancelled,
    Delivery,
    Reply,
    Returned,
    Unblocked,
)
from protocols.amqp.frames import NEED_DATA, ProtocolError

from .url import UpstreamURL, parse_url

log = logging.getLogger("gateway.upstream")
READ_SIZE = 65536


class UpstreamError(Exception):
    """The upstream could not do what was asked."""


class ConnectionLost(UpstreamError):
    """The connection this call was waiting on dropped; the driver reconnects. A publish
    that raises this was not confirmed: publish it again (at-least-once)."""


class ChannelError(UpstreamError):
    """RabbitMQ closed the channel of this call, with its reply code (404, 406, ...)."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


class PublishNacked(UpstreamError):
    """RabbitMQ refused the message (basic.nack): e.g. a queue's overflow reject-publish."""


class PublishReturned(UpstreamError):
    """A mandatory publish that no queue took (basic.return, normally 312 NO_ROUTE)."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


class _Waiter:
    """One call waiting for one answer from the reader task."""

    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.event.is_set():
            self.value, self.error = value, error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(eq=False)
class _Publish:
    waiter: _Waiter
    exchange: str
    routing_key: str
    mandatory: bool
    returned: Returned | None = None


@dataclass(eq=False)
class _Link:
    """One TCP connection to one node (one ``generation``)."""

    url: UpstreamURL
    stream: trio.SocketStream
    client: ClientConnection
    generation: int
    scopes: list[trio.CancelScope] = field(default_factory=list)  # its tasks'
    closed: trio.Event = field(default_factory=trio.Event)
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    waiters: dict[int, deque[_Waiter]] = field(default_factory=dict)  # per channel, in order
    publishes: dict[int, _Publish] = field(default_factory=dict)  # by delivery tag
    consumers: dict[str, Consumer] = field(default_factory=dict)  # by consumer tag
    next_channel: int = 1
    control: int = 0  # channel numbers, 0 until opened
    publisher: int = 0
    last_received: float = 0.0
    error: BaseException | None = None

    def task_scope(self) -> trio.CancelScope:
        """A cancel scope for one of this link's tasks, cancelled by ``cancel``."""
        scope = trio.CancelScope()
        if self.closed.is_set():
            scope.cancel()
        self.scopes.append(scope)
        return scope

    def cancel(self) -> None:
        for scope in self.scopes:
            scope.cancel()


@dataclass(eq=False)
class UpstreamMessage:
    """A message delivered to a consumer, settled on the connection it came from."""

    consumer: Consumer
    body: bytes
    properties: commands.Basic.Properties
    exchange: str
    routing_key: str
    redelivered: bool
    delivery_tag: int
    channel: int
    generation: int

    async def ack(self) -> bool:
        """basic.ack; False if the connection it came on is gone (RabbitMQ requeued it)."""
        return await self.consumer.connection._settle(self, "ack", False)

    async def nack(self, *, requeue: bool = True) -> bool:
        return await self.consumer.connection._settle(self, "nack", requeue)

    async def reject(self, *, requeue: bool = True) -> bool:
        return await self.consumer.connection._settle(self, "reject", requeue)


class Consumer:
    """A subscription to one queue that survives reconnects (same tag, same prefetch).

    Iterate it for messages; the iteration ends when the consumer is cancelled, by
    ``cancel()`` or by RabbitMQ (``cancelled_by_server``, e.g. its queue was deleted).
    """

    def __init__(self, connection: UpstreamConnection, queue: str, tag: str, prefetch: int,
                 no_ack: bool, exclusive: bool, arguments: dict[str, Any],
                 callback: Callable[[UpstreamMessage], None] | None) -> None:
        self.connection = connection
        self.queue = queue
        self.tag = tag
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self.callback = callback
        self.cancelled = False
        self.cancelled_by_server = False
        self.channel = 0
        self._send, self._receive = trio.open_memory_channel[UpstreamMessage](math.inf)

    def _deliver(self, message: UpstreamMessage) -> None:
        if self.callback is not None:
            self.callback(message)
        else:
            self._send.send_nowait(message)

    def _end(self) -> None:
        self.cancelled = True
        self._send.close()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> UpstreamMessage:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def cancel(self) -> None:
        await self.connection._cancel(self)


class UpstreamConnection:
    """A connection to one node of a RabbitMQ cluster that moves to the next on failure.

    Open it with ``connect(urls)``; every method may be called from any task.
    """

    def __init__(self, urls: Sequence[str], *, heartbeat: int = 30,
                 connect_timeout: float = 5.0, reconnect_timeout: float = 60.0,
                 frame_max: int = 131072, name: str = "gateway",
                 on_reconnect: Callable[[int], Awaitable[None] | None] | None = None) -> None:
        if not urls:
            raise ValueError("no upstream URL")
        self.urls = [parse_url(url) for url in urls]
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.frame_max = frame_max
        self.name = name
        self.on_reconnect = on_reconnect
        self.generation = 0  # connections opened so far; > 1 means reconnected
        self.reconnects = 0
        self._next_url = 0
        self._link: _Link | None = None
        self._ready = trio.Event()
        self._unblocked = trio.Event()
        self._unblocked.set()
        self._closing = False
        self._nursery: trio.Nursery | None = None
        self._rpc_lock = trio.Lock()
        self._publish_lock = trio.Lock()
        # what was declared, to declare again after a reconnect: key -> (method, fields)
        self._topology: dict[tuple[str, ...], tuple[str, dict[str, Any]]] = {}
        self._consumers: dict[str, Consumer] = {}

    # -- state seen by callers -------------------------------------------------------

    @property
    def url(self) -> UpstreamURL | None:
        """The node connected to now, or None between connections."""
        return self._link.url if self._link is not None and self._ready.is_set() else None

    @property
    def blocked(self) -> bool:
        return not self._unblocked.is_set()

    @property
    def server_properties(self) -> dict[str, Any]:
        return self._link.client.server_properties if self._link is not None else {}

    async def wait_connected(self) -> None:
        await self._ready.wait()

    # -- opening, closing, reconnecting ------------------------------------------------

    async def aclose(self) -> None:
        """connection.close 200 and wait (briefly) for close-ok."""
        self._closing = True
        link = self._link
        if link is None or link.closed.is_set():
            return
        with trio.move_on_after(5), contextlib.suppress(UpstreamError):
            link.client.close()
            await self._flush(link)
            await link.closed.wait()
        link.cancel()
        with contextlib.suppress(trio.TooSlowError, OSError, trio.BrokenResourceError):
            await link.stream.aclose()

    async def _open_any(self, rounds: int | None, deadline: float = math.inf) -> _Link:
        """The first node of the list (from the one after the last used) that accepts us."""
        errors: list[str] = []
        delay = 0.2
        attempt = 0
        while rounds is None or attempt < rounds * len(self.urls):
            url = self.urls[self._next_url % len(self.urls)]
            self._next_url += 1
            attempt += 1
            try:
                return await self._open(url)
            except ChannelError as exc:  # connection.close in the handshake
                if exc.reply_code == ACCESS_REFUSED:
                    raise
                errors.append(f"{url}: {exc}")
            except (OSError, trio.TooSlowError, ProtocolError, UpstreamError,
                    trio.BrokenResourceError) as exc:
                errors.append(f"{url}: {exc!r}")
            if attempt % len(self.urls) == 0:
                if trio.current_time() + delay > deadline:
                    break
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise UpstreamError("no upstream node answered: " + "; ".join(errors[-len(self.urls):]))

    async def _open(self, url: UpstreamURL) -> _Link:
        with trio.fail_after(self.connect_timeout):
            stream = await trio.open_tcp_stream(url.host, url.port)
            try:
                client = ClientConnection(
                    username=url.username, password=url.password, vhost=url.vhost,
                    heartbeat=self.heartbeat, frame_max=self.frame_max,
                    client_properties={"connection_name": self.name})
                client.initiate()
                await stream.send_all(client.data_to_send())
                while True:
                    event = client.next_event()
                    data = client.data_to_send()
                    if data:
                        await stream.send_all(data)
                    if event is NEED_DATA:
                        chunk = await stream.receive_some(READ_SIZE)
                        if not chunk:
                            raise UpstreamError("connection closed in the handshake")
                        client.receive_data(chunk)
                    elif isinstance(event, ConnectionOpened):
                        break
                    elif isinstance(event, ConnectionClosed):
                        raise ChannelError(event.reply_code, event.reply_text)
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.aclose()
                raise
        self.generation += 1
        log.info("upstream connected to %s (heartbeat %s s)", url, client.heartbeat)
        return _Link(url, stream, client, self.generation, last_received=trio.current_time())

    def _install(self, link: _Link) -> None:
        assert self._nursery is not None
        self._link = link
        self._unblocked.set()
        self._nursery.start_soon(self._read, link)
        if link.client.heartbeat:
            self._nursery.start_soon(self._beat, link)
        self._ready.set()

    async def _supervise(self) -> None:
        """Wait for the link to drop, then open another and restore what was set up."""
        while True:
            link = self._link
            assert link is not None
            await link.closed.wait()
            if self._closing:
                return
            self._ready = trio.Event()
            self._lose(link)
            log.warning("upstream connection to %s lost (%r); reconnecting", link.url,
                        link.error)
            deadline = trio.current_time() + self.reconnect_timeout
            while True:
                new = await self._open_any(rounds=None, deadline=deadline)
                self._link = new
                try:
                    await self._restore(new)
                except (UpstreamError, OSError, trio.BrokenResourceError) as exc:
                    log.warning("upstream restore on %s failed: %r", new.url, exc)
                    new.cancel()
                    with contextlib.suppress(Exception):
                        await new.stream.aclose()
                    self._lose(new)
                    continue
                break
            self.reconnects += 1
            self._ready.set()
            if self.on_reconnect is not None:
                result = self.on_reconnect(self.generation)
                if result is not None:
                    await result

    def _lose(self, link: _Link) -> None:
        """Fail everything waiting on ``link``."""
        link.cancel()
        error = ConnectionLost(f"connection to {link.url} lost: {link.error!r}")
        for queue in link.waiters.values():
            for waiter in queue:
                waiter.resolve(error=error)
        link.waiters.clear()
        for publish in link.publishes.values():
            publish.waiter.resolve(error=error)
        link.publishes.clear()
        link.closed.set()

    async def _restore(self, link: _Link) -> None:
        """Reading and beating on ``link``, declare the topology again, resubscribe."""
        assert self._nursery is not None
        self._unblocked.set()
        self._nursery.start_soon(self._read, link)
        if link.client.heartbeat:
            self._nursery.start_soon(self._beat, link)
        for kind, fields in list(self._topology.values()):
            try:
                await self._rpc_on(link, _command(kind, fields))
            except ChannelError as exc:  # e.g. 406: another node declared it otherwise
                log.warning("upstream: %s %s refused after reconnect: %s", kind, fields, exc)
        for consumer in list(self._consumers.values()):
            if consumer.cancelled:
                continue
            try:
                await self._subscribe(link, consumer)
            except ChannelError as exc:  # e.g. 404: its queue is gone
                log.warning("upstream: consumer %s on %s not restored: %s", consumer.tag,
                            consumer.queue, exc)
                self._consumers.pop(consumer.tag, None)
                consumer.cancelled_by_server = True
                consumer._end()

    # -- the reader, the heartbeat, the writer -------------------------------------------

    async def _read(self, link: _Link) -> None:
        client, stream = link.client, link.stream
        with link.task_scope():
            try:
                while True:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        raise UpstreamError("connection closed by the server")
                    link.last_received = trio.current_time()
                    client.receive_data(data)
                    while True:
                        event = client.next_event()
                        if event is NEED_DATA:
                            break
                        self._dispatch(link, event)
                    await self._flush(link)  # close-ok, cancel-ok, flow-ok we owe
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    ProtocolError, UpstreamError) as exc:
                link.error = exc
            finally:
                with contextlib.suppress(Exception):
                    stream.socket.close()
                link.closed.set()

    async def _beat(self, link: _Link) -> None:
        interval = link.client.heartbeat
        with link.task_scope():
            while True:
                await trio.sleep(interval / 2)
                if trio.current_time() - link.last_received > 2 * interval:
                    link.error = UpstreamError(f"no data from the server for {2 * interval} s")
                    with contextlib.suppress(Exception):
                        link.stream.socket.close()
                    link.closed.set()
                    return
                link.client.heartbeat_frame()
                with contextlib.suppress(UpstreamError):
                    await self._flush(link)

    async def _flush(self, link: _Link) -> None:
        """Send what the client queued; ``ConnectionLost`` if the socket is gone."""
        async with link.send_lock:
            data = link.client.data_to_send()
            if not data:
                return
            try:
                await link.stream.send_all(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                link.error = link.error or exc
                with contextlib.suppress(Exception):
                    link.stream.socket.close()
                link.closed.set()
                raise ConnectionLost(f"connection to {link.url} lost: {exc!r}") from exc

    def _dispatch(self, link: _Link, event: ClientEvent) -> None:
        if isinstance(event, Delivery):
            consumer = link.consumers.get(event.consumer_tag)
            if consumer is not None:
                consumer._deliver(UpstreamMessage(
                    consumer, event.body, event.properties, event.exchange, event.routing_key,
                    event.redelivered, event.delivery_tag, event.channel, link.generation))
            return
        if isinstance(event, Confirmed):
            for tag in event.delivery_tags:
                publish = link.publishes.pop(tag, None)
                if publish is None:
                    continue
                if not event.ack:
                    publish.waiter.resolve(error=PublishNacked(f"message {tag} nacked"))
                elif publish.returned is not None:
                    returned = publish.returned
                    publish.waiter.resolve(
                        error=PublishReturned(returned.reply_code, returned.reply_text))
                else:
                    publish.waiter.resolve()
            return
        if isinstance(event, Returned):
            for publish in link.publishes.values():
                if (publish.mandatory and publish.returned is None
                        and publish.exchange == event.exchange
                        and publish.routing_key == event.routing_key):
                    publish.returned = event
                    break
            return
        if isinstance(event, Reply | ChannelOpened):
            queue = link.waiters.get(event.channel)
            if queue:
                queue.popleft().resolve(event)
            return
        if isinstance(event, ChannelClosed):
            self._channel_closed(link, event)
            return
        if isinstance(event, ConsumerCancelled):
            consumer = link.consumers.pop(event.consumer_tag, None)
            if consumer is not None:
                consumer.cancelled_by_server = True
                self._consumers.pop(consumer.tag, None)
                consumer._end()
            return
        if isinstance(event, Blocked):
            log.warning("upstream %s blocked: %s", link.url, event.reason)
            if self._unblocked.is_set():
                self._unblocked = trio.Event()
            return
        if isinstance(event, Unblocked):
            self._unblocked.set()
            return
        if isinstance(event, ConnectionClosed):
            link.error = ChannelError(event.reply_code, event.reply_text)
            raise UpstreamError(f"connection closed: {event.reply_code} {event.reply_text}")

    def _channel_closed(self, link: _Link, event: ChannelClosed) -> None:
        error = ChannelError(event.reply_code, event.reply_text)
        for waiter in link.waiters.pop(event.channel, ()):
            if event.by_server:
                waiter.resolve(error=error)
            else:
                waiter.resolve(event)
        if event.channel == link.control:
            link.control = 0
        if event.channel == link.publisher:
            link.publisher = 0
            for publish in link.publishes.values():
                publish.waiter.resolve(error=error)
            link.publishes.clear()
        for consumer in list(link.consumers.values()):
            if consumer.channel == event.channel:
                del link.consumers[consumer.tag]
                self._consumers.pop(consumer.tag, None)
                consumer.cancelled_by_server = event.by_server
                consumer._end()

    # -- channels and RPCs ---------------------------------------------------------------

    def _current(self) -> _Link:
        link = self._link
        if link is None or link.closed.is_set() or not self._ready.is_set():
            raise ConnectionLost("not connected")
        return link

    async def _call(self, link: _Link, channel: int, send: Callable[[], None]) -> Any:
        """Queue a synchronous method on ``channel`` and wait for its answer."""
        waiter = _Waiter()
        link.waiters.setdefault(channel, deque()).append(waiter)
        try:
            send()
        except BaseException:
            link.waiters[channel].remove(waiter)
            raise
        await self._flush(link)
        return await waiter.wait()

    async def _open_channel(self, link: _Link) -> int:
        channel = link.next_channel
        if channel > link.client.channel_max:
            raise UpstreamError("out of channel numbers")
        link.next_channel += 1
        await self._call(link, channel, lambda: link.client.open_channel(channel))
        return channel

    async def _rpc_on(self, link: _Link,
                      send: Callable[[ClientConnection, int], None]) -> base.Frame:
        async with self._rpc_lock:
            if not link.control:
                link.control = await self._open_channel(link)
            channel = link.control
            reply = await self._call(link, channel, lambda: send(link.client, channel))
            assert isinstance(reply, Reply)
            return reply.method

    async def _rpc(self, kind: str, key: tuple[str, ...] | None, **fields: Any) -> base.Frame:
        """Run ``ClientConnection.<kind>(channel, **fields)``; remember it under ``key``."""
        while True:
            link = self._current()
            try:
                reply = await self._rpc_on(link, _command(kind, fields))
            except ConnectionLost:
                await self._ready.wait()  # the topology is declared again on reconnect
                if key is not None:
                    self._topology[key] = (kind, fields)
                    return await self._rpc(kind, None, **fields)
                raise
            if key is not None:
                self._topology[key] = (kind, fields)
            return reply

    # -- topology ------------------------------------------------------------------------

    async def declare_exchange(self, exchange: str, exchange_type: str = "direct", *,
                               durable: bool = True, auto_delete: bool = False,
                               internal: bool = False, passive: bool = False,
                               arguments: dict[str, Any] | None = None) -> None:
        fields = dict(exchange=exchange, exchange_type=exchange_type, durable=durable,
                      auto_delete=auto_delete, internal=internal, passive=passive,
                      arguments=arguments or {})
        await self._rpc("exchange_declare", None if passive else ("x", exchange), **fields)

    async def delete_exchange(self, exchange: str, *, if_unused: bool = False) -> None:
        await self._rpc("exchange_delete", None, exchange=exchange, if_unused=if_unused)
        self._forget(lambda key: key == ("x", exchange) or (key[0] == "xb" and exchange in
                                                             key[1:3]))

    async def declare_queue(self, queue: str = "", *, durable: bool = True,
                            exclusive: bool = False, auto_delete: bool = False,
                            passive: bool = False,
                            arguments: dict[str, Any] | None = None) -> tuple[str, int, int]:
        """queue.declare; (name, message count, consumer count)."""
        fields = dict(queue=queue, durable=durable, exclusive=exclusive,
                      auto_delete=auto_delete, passive=passive, arguments=arguments or {})
        remember = None if passive or not queue else ("q", queue)
        reply = await self._rpc("queue_declare", remember, **fields)
        assert isinstance(reply, commands.Queue.DeclareOk)
        return reply.queue or "", reply.message_count or 0, reply.consumer_count or 0

    async def delete_queue(self, queue: str, *, if_unused: bool = False,
                           if_empty: bool = False) -> int:
        """queue.delete; the number of messages deleted with it."""
        reply = await self._rpc("queue_delete", None, queue=queue, if_unused=if_unused,
                                if_empty=if_empty)
        self._forget(lambda key: key == ("q", queue) or (key[0] == "qb" and key[1] == queue))
        assert isinstance(reply, commands.Queue.DeleteOk)
        return reply.message_count or 0

    async def purge_queue(self, queue: str) -> int:
        reply = await self._rpc("queue_purge", None, queue=queue)
        assert isinstance(reply, commands.Queue.PurgeOk)
        return reply.message_count or 0

    async def bind_queue(self, queue: str, exchange: str, routing_key: str = "",
                         arguments: dict[str, Any] | None = None) -> None:
        await self._rpc("queue_bind", ("qb", queue, exchange, routing_key, repr(arguments)),
                        queue=queue, exchange=exchange, routing_key=routing_key,
                        arguments=arguments or {})

    async def unbind_queue(self, queue: str, exchange: str, routing_key: str = "",
                           arguments: dict[str, Any] | None = None) -> None:
        await self._rpc("queue_unbind", None, queue=queue, exchange=exchange,
                        routing_key=routing_key, arguments=arguments or {})
        self._topology.pop(("qb", queue, exchange, routing_key, repr(arguments)), None)

    async def bind_exchange(self, destination: str, source: str, routing_key: str = "",
                            arguments: dict[str, Any] | None = None) -> None:
        await self._rpc("exchange_bind",
                        ("xb", destination, source, routing_key, repr(arguments)),
                        destination=destination, source=source, routing_key=routing_key,
                        arguments=arguments or {})

    async def unbind_exchange(self, destination: str, source: str, routing_key: str = "",
                              arguments: dict[str, Any] | None = None) -> None:
        await self._rpc("exchange_unbind", None, destination=destination, source=source,
                        routing_key=routing_key, arguments=arguments or {})
        self._topology.pop(("xb", destination, source, routing_key, repr(arguments)), None)

    def _forget(self, match: Callable[[tuple[str, ...]], bool]) -> None:
        for key in [key for key in self._topology if match(key)]:
            del self._topology[key]

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      properties: commands.Basic.Properties | None = None, *,
                      mandatory: bool = False, retry: bool = False,
                      max_attempts: int = 10) -> None:
        """Publish and return once RabbitMQ confirms it (``PublishNacked``,
        ``PublishReturned`` otherwise). With ``retry``, a publish cut by a lost connection
        is sent again on the next one (at most ``max_attempts`` times)."""
        for attempt in range(1, max_attempts + 1):
            try:
                await self._publish_once(exchange, routing_key, body, properties, mandatory)
                return
            except ConnectionLost:
                if not retry or attempt == max_attempts:
                    raise
                await self._ready.wait()
        raise AssertionError("unreachable")

    async def _publish_once(self, exchange: str, routing_key: str, body: bytes,
                            properties: commands.Basic.Properties | None,
                            mandatory: bool) -> None:
        confirmed = await self.start_publish(exchange, routing_key, body, properties,
                                             mandatory=mandatory)
        await confirmed()

    async def start_publish(self, exchange: str, routing_key: str, body: bytes,
                            properties: commands.Basic.Properties | None = None, *,
                            mandatory: bool = False) -> Callable[[], Awaitable[None]]:
        """Send a publish (after any block) and return once it is written, without waiting
        for its confirm: the function returned waits for it and raises as ``publish`` does
        (``ConnectionLost`` included: nothing is sent again). Publishes started one after
        another from one task go out in that order."""
        await self._unblocked.wait()
        await self._ready.wait()
        link = self._current()
        if not link.publisher:
            async with self._publish_lock:
                if not link.publisher:
                    channel = await self._open_channel(link)
                    await self._call(link, channel, lambda: link.client.confirm_select(channel))
                    link.publisher = channel
        waiter = _Waiter()
        tag = link.client.publish(link.publisher, exchange, routing_key, body, properties,
                                  mandatory=mandatory)
        link.publishes[tag] = _Publish(waiter, exchange, routing_key, mandatory)
        await self._flush(link)
        return waiter.wait

    # -- consuming -----------------------------------------------------------------------

    async def consume(self, queue: str, *, prefetch: int = 100, no_ack: bool = False,
                      exclusive: bool = False, consumer_tag: str = "",
                      arguments: dict[str, Any] | None = None,
                      callback: Callable[[UpstreamMessage], None] | None = None) -> Consumer:
        """Subscribe to ``queue`` on a channel of its own with ``prefetch`` unacknowledged
        messages at most (0: no limit). The consumer is resubscribed after a reconnect."""
        tag = consumer_tag or f"gw-{secrets.token_hex(8)}"
        consumer = Consumer(self, queue, tag, prefetch, no_ack, exclusive, arguments or {},
                            callback)
        await self._ready.wait()
        await self._subscribe(self._current(), consumer)
        self._consumers[tag] = consumer
        return consumer

    async def _subscribe(self, link: _Link, consumer: Consumer) -> None:
        channel = await self._open_channel(link)
        client = link.client
        if consumer.prefetch:
            await self._call(link, channel,
                             lambda: client.basic_qos(channel, consumer.prefetch))
        consumer.channel = channel
        link.consumers[consumer.tag] = consumer
        try:
            await self._call(link, channel, lambda: client.basic_consume(
                channel, consumer.queue, consumer.tag, no_ack=consumer.no_ack,
                exclusive=consumer.exclusive, arguments=consumer.arguments))
        except BaseException:
            link.consumers.pop(consumer.tag, None)
            raise

    async def _cancel(self, consumer: Consumer) -> None:
        self._consumers.pop(consumer.tag, None)
        link = self._link
        if consumer.cancelled or link is None or consumer.tag not in link.consumers:
            consumer._end()
            return
        channel = consumer.channel
        with contextlib.suppress(ConnectionLost, ChannelError):
            await self._call(link, channel, lambda: link.client.basic_cancel(channel,
                                                                             consumer.tag))
            await self._call(link, channel, lambda: link.client.close_channel(channel))
        link.consumers.pop(consumer.tag, None)
        consumer._end()

    async def _settle(self, message: UpstreamMessage, how: str, requeue: bool) -> bool:
        link = self._link
        if (link is None or link.generation != message.generation or link.closed.is_set()
                or not link.client.is_open(message.channel)):
            return False
        client = link.client
        if how == "ack":
            client.ack(message.channel, message.delivery_tag)
        elif how == "nack":
            client.nack(message.channel, message.delivery_tag, requeue=requeue)
        else:
            client.reject(message.channel, message.delivery_tag, requeue=requeue)
        try:
            await self._flush(link)
        except ConnectionLost:
            return False
        return True


def _command(kind: str, fields: dict[str, Any]) -> Callable[[ClientConnection, int], None]:
    """``ClientConnection.<kind>(channel, **fields)`` as a function of client and channel."""

    def send(client: ClientConnection, channel: int) -> None:
        getattr(client, kind)(channel, **fields)

    return send


@contextlib.asynccontextmanager
async def connect(urls: Sequence[str], **options: Any) -> AsyncIterator[UpstreamConnection]:
    """Open an ``UpstreamConnection`` (keyword options as its constructor) for the block;
    ``UpstreamError`` if no node answers. An exception leaving the block comes out as
    itself, not in the exception group of the connection's task nursery."""
    connection = UpstreamConnection(urls, **options)
    link = await connection._open_any(rounds=1)
    try:
        async with trio.open_nursery() as nursery:
            connection._nursery = nursery
            connection._install(link)
            nursery.start_soon(connection._supervise)
            try:
                yield connection
            finally:
                await connection.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
