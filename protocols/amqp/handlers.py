"""One handler per AMQP channel method; `TABLE` at the bottom is the table of contents.

Each handler first asks `gateway.auth.access` for its operation's permissions (the
decision every protocol shares: configure to declare or delete, write to publish or bind
into, read to consume, get, purge or bind from, topic permissions on publish and bind),
then calls the core, and answers; a refused operation has created nothing. Errors
propagate as `BrokerError`; the session closes the channel or the connection with their
reply code. Which methods a channel takes in which state is `machine.py`'s business
(`CHANNEL_METHODS` are the keys of `TABLE`); channel.close and its close-ok end the channel
and are the session's. A handler sees the session as `Connection`, what it needs of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands

from gateway.auth import access
from gateway.core.errors import (
    BrokerError,
    NotImplementedFeature,
    PreconditionFailed,
    ReplyCode,
)
from gateway.core.message import Message
from gateway.core.queue import Queue
from gateway.core.vhost import server_queue_name
from protocols.amqp.channel import REPLY_TO, Channel, ChannelOwner
from protocols.amqp.frames import reply
from protocols.amqp.machine import ChannelLocal
from protocols.amqp.mapping import CACHE_KEY, from_amqp, validate_publish

if TYPE_CHECKING:
    from gateway.auth.service import AuthService, User
    from gateway.core.vhost import VirtualHost

C = commands


class Connection(ChannelOwner, Protocol):
    """What the handlers need of the connection (`session.AMQPSession` is one)."""

    auth: AuthService
    user: User | None
    vhost: VirtualHost | None

    def confirm_channel(self, ch: Channel) -> None: ...


Handler = Callable[[Connection, Channel, Any], None]


def _vh(s: Connection) -> VirtualHost:
    assert s.vhost is not None
    return s.vhost


def _user(s: Connection) -> User:
    assert s.user is not None
    return s.user


# -- channel -------------------------------------------------------------------------------

def channel_close_ok(s: Connection, ch: Channel, m: C.Channel.CloseOk) -> None:
    pass  # a close-ok for no close of ours: nothing to do


def channel_flow(s: Connection, ch: Channel, m: C.Channel.Flow) -> None:
    active = bool(m.active)
    ch.machine.process(ChannelLocal.FLOW_RESUME if active else ChannelLocal.FLOW_STOP)
    s.send_method(ch.number, C.Channel.FlowOk(active))
    if active:
        ch.kick(s.clock())


def channel_flow_ok(s: Connection, ch: Channel, m: C.Channel.FlowOk) -> None:
    pass


# -- exchange ------------------------------------------------------------------------------

def exchange_declare(s: Connection, ch: Channel, m: C.Exchange.Declare) -> None:
    vh = _vh(s)
    args = dict(m.arguments or {})
    if not m.passive:
        access.declare_exchange(s.auth, _user(s), vh, m.exchange, arguments=args)
    vh.declare_exchange(m.exchange, m.exchange_type, passive=m.passive, durable=m.durable,
                        auto_delete=m.auto_delete, internal=m.internal, arguments=args)
    if not m.nowait:
        s.send_method(ch.number, C.Exchange.DeclareOk())


def exchange_delete(s: Connection, ch: Channel, m: C.Exchange.Delete) -> None:
    access.delete_exchange(s.auth, _user(s), _vh(s), m.exchange)
    _vh(s).delete_exchange(m.exchange, if_unused=m.if_unused)
    if not m.nowait:
        s.send_method(ch.number, C.Exchange.DeleteOk())


def exchange_bind(s: Connection, ch: Channel, m: C.Exchange.Bind) -> None:
    vh = _vh(s)
    access.bind(s.auth, _user(s), vh, source=m.source, destination=m.destination,
                destination_kind="exchange", routing_key=m.routing_key)
    dest = vh.get_exchange(m.destination)
    vh.bind(dest, m.source, m.routing_key, m.arguments)
    if not m.nowait:
        s.send_method(ch.number, C.Exchange.BindOk())


def exchange_unbind(s: Connection, ch: Channel, m: C.Exchange.Unbind) -> None:
    vh = _vh(s)
    access.unbind(s.auth, _user(s), vh, source=m.source, destination=m.destination,
                  destination_kind="exchange", routing_key=m.routing_key)
    dest = vh.get_exchange(m.destination)
    vh.unbind(dest, m.source, m.routing_key, m.arguments)
    if not m.nowait:
        s.send_method(ch.number, C.Exchange.UnbindOk())


# -- queue ---------------------------------------------------------------------------------

def queue_declare(s: Connection, ch: Channel, m: C.Queue.Declare) -> None:
    vh = _vh(s)
    name = m.queue
    if name == REPLY_TO or name.startswith(REPLY_TO + "."):
        # the pseudo-queue of direct reply-to always "exists"
        if not m.nowait:
            s.send_method(ch.number, reply(C.Queue.DeclareOk, queue=name, message_count=0,
                                                consumer_count=0))
        return
    args = dict(m.arguments or {})
    server_named = not name and not m.passive
    if server_named:
        name = server_queue_name()  # named first, so the check sees the name it will have
    if not m.passive:
        access.declare_queue(s.auth, _user(s), vh, name, arguments=args)
    q = vh.declare_queue(name, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
                         auto_delete=m.auto_delete, arguments=args, owner=s, now=s.clock(),
                         server_named=server_named)
    ch.last_queue = q.name
    if not m.nowait:
        s.send_method(ch.number, reply(C.Queue.DeclareOk, queue=q.name,
                                        message_count=q.message_count,
                                        consumer_count=q.consumer_count))


def _queue(s: Connection, ch: Channel, name: str) -> Queue:
    return _vh(s).get_queue(ch.queue_name(name), owner=s)


def queue_bind(s: Connection, ch: Channel, m: C.Queue.Bind) -> None:
    name = ch.queue_name(m.queue)
    key = m.routing_key if (m.routing_key or m.queue) else name
    access.bind(s.auth, _user(s), _vh(s), source=m.exchange, destination=name,
                destination_kind="queue", routing_key=key)
    q = _vh(s).get_queue(name, owner=s)
    _vh(s).bind(q, m.exchange, key, m.arguments)
    if not m.nowait:
        s.send_method(ch.number, C.Queue.BindOk())


def queue_unbind(s: Connection, ch: Channel, m: C.Queue.Unbind) -> None:
    name = ch.queue_name(m.queue)
    access.unbind(s.auth, _user(s), _vh(s), source=m.exchange, destination=name,
                  destination_kind="queue", routing_key=m.routing_key)
    q = _vh(s).get_queue(name, owner=s)
    _vh(s).unbind(q, m.exchange, m.routing_key, m.arguments)
    s.send_method(ch.number, C.Queue.UnbindOk())


def queue_purge(s: Connection, ch: Channel, m: C.Queue.Purge) -> None:
    name = ch.queue_name(m.queue)
    access.purge(s.auth, _user(s), _vh(s), name)
    n = _vh(s).purge_queue(name, owner=s)
    if not m.nowait:
        s.send_method(ch.number, C.Queue.PurgeOk(n))


def queue_delete(s: Connection, ch: Channel, m: C.Queue.Delete) -> None:
    name = ch.queue_name(m.queue)
    access.delete_queue(s.auth, _user(s), _vh(s), name)
    n = _vh(s).delete_queue(name, if_unused=m.if_unused, if_empty=m.if_empty, owner=s)
    if not m.nowait:
        s.send_method(ch.number, C.Queue.DeleteOk(n))


# -- basic ---------------------------------------------------------------------------------

def basic_qos(s: Connection, ch: Channel, m: C.Basic.Qos) -> None:
    if m.prefetch_size:
        raise NotImplementedFeature(
            f"NOT_IMPLEMENTED - prefetch_size!=0 ({m.prefetch_size})")
    if m.global_:
        ch.global_prefetch = m.prefetch_count
    else:
        ch.prefetch = m.prefetch_count
    s.send_method(ch.number, C.Basic.QosOk())
    ch.kick(s.clock())


def basic_consume(s: Connection, ch: Channel, m: C.Basic.Consume) -> None:
    vh = _vh(s)
    now = s.clock()
    name = m.queue
    if name == REPLY_TO:
        if not m.no_ack:
            raise PreconditionFailed("PRECONDITION_FAILED - reply consumer cannot acknowledge")
        if ch.reply_queue is not None and not ch.reply_queue.deleted:
            raise PreconditionFailed("PRECONDITION_FAILED - reply consumer already set")
        tag = ch.consumer_tag(m.consumer_tag)
        q = vh.declare_queue(f"{REPLY_TO}.{tag}.{s.id}.{ch.number}", exclusive=True,
                             auto_delete=True, owner=s, now=now, hidden=True)
        ch.reply_queue = q
        if not m.nowait:
            s.send_method(ch.number, C.Basic.ConsumeOk(tag))
        ch.add_consumer(q, tag, True, True, None, now)
        return
    name = ch.queue_name(name)
    access.consume(s.auth, _user(s), vh, name)
    q = vh.get_queue(name, owner=s)
    tag = ch.consumer_tag(m.consumer_tag)
    # consume-ok must precede the first delivery: answer, then attach the consumer
    consumer_ok = C.Basic.ConsumeOk(tag)
    if q.consumers and (m.exclusive or any(c.exclusive for c in q.consumers)):
        vh.consume(q, _NoConsumer(), exclusive=m.exclusive, now=now)  # raises 403
    if not m.nowait:
        s.send_method(ch.number, consumer_ok)
    ch.add_consumer(q, tag, m.no_ack, m.exclusive, m.arguments, now)


class _NoConsumer:
    """Stands in to run the exclusivity checks before consume-ok is sent."""

    tag = ""
    no_ack = True
    exclusive = False
    priority = 0

    def can_take(self) -> bool:
        return False

    def deliver(self, entry: Any) -> None:  # pragma: no cover - never given one
        raise AssertionError

    def cancelled(self) -> None:  # pragma: no cover
        pass


def basic_cancel(s: Connection, ch: Channel, m: C.Basic.Cancel) -> None:
    tag = m.consumer_tag or ""
    consumer = ch.consumers.get(tag)
    ch.cancel(tag, s.clock())
    if consumer is not None and consumer.queue is ch.reply_queue:
        ch.reply_queue = None
    if not m.nowait:
        s.send_method(ch.number, C.Basic.CancelOk(tag))


def basic_get(s: Connection, ch: Channel, m: C.Basic.Get) -> None:
    name = ch.queue_name(m.queue)
    access.get(s.auth, _user(s), _vh(s), name)
    q = _vh(s).get_queue(name, owner=s)
    ch.get(q, m.no_ack, s.clock())


def basic_ack(s: Connection, ch: Channel, m: C.Basic.Ack) -> None:
    if ch.tx:
        ch.tx_acks.append(("ack", m.delivery_tag or 0, m.multiple, False))
        return
    ch.settle(m.delivery_tag or 0, m.multiple, ack=True, requeue=False, now=s.clock())


def basic_nack(s: Connection, ch: Channel, m: C.Basic.Nack) -> None:
    if ch.tx:
        ch.tx_acks.append(("nack", m.delivery_tag, m.multiple, m.requeue))
        return
    ch.settle(m.delivery_tag, m.multiple, ack=False, requeue=m.requeue, now=s.clock())


def basic_reject(s: Connection, ch: Channel, m: C.Basic.Reject) -> None:
    if ch.tx:
        ch.tx_acks.append(("nack", m.delivery_tag or 0, False, m.requeue))
        return
    ch.settle(m.delivery_tag or 0, False, ack=False, requeue=m.requeue, now=s.clock())


def basic_recover(s: Connection, ch: Channel, m: Any) -> None:
    if not m.requeue:
        # as RabbitMQ: redelivery to the same consumer without requeueing is not offered
        raise BrokerError("NOT_IMPLEMENTED - requeue=false", ReplyCode.NOT_IMPLEMENTED)
    ch.requeue_all(s.clock())
    ch.kick(s.clock())
    if isinstance(m, C.Basic.Recover):
        s.send_method(ch.number, C.Basic.RecoverOk())


def publish(s: Connection, ch: Channel, m: C.Basic.Publish,
            properties: C.Basic.Properties, body: bytes, raw_properties: bytes | None = None
            ) -> None:
    """basic.publish with its content (called by the session for each `Content`).
    This is the per-message path: checks that almost never fire are guarded inline."""
    vh = s.vhost
    assert vh is not None and s.user is not None
    if m.immediate:
        raise BrokerError("NOT_IMPLEMENTED - immediate=true", ReplyCode.NOT_IMPLEMENTED)
    name = m.exchange
    access.publish(s.auth, s.user, vh, name, m.routing_key)
    exchange = ch.publish_exchanges.get(name)
    if exchange is None or exchange.deleted:
        exchange = ch.publish_exchanges[name] = vh.exchange_for_publish(name)
    props = from_amqp(properties)
    if props.user_id is not None or props.expiration is not None:
        validate_publish(props, s.user.name)
    message = Message(vh.next_message_id(), name, m.routing_key, props, body)
    if raw_properties is not None:
        message.cache[CACHE_KEY] = raw_properties
    if props.reply_to is not None:
        ch.resolve_reply_to(message)
    if ch.tx:
        ch.tx_publishes.append(((exchange, m.routing_key, message), m.mandatory))
        return
    _route(s, ch, exchange, m.routing_key, message, m.mandatory)


def _route(s: Connection, ch: Channel, exchange: Any, routing_key: str, message: Message,
           mandatory: bool) -> None:
    confirm = ch.confirm
    if confirm:
        durable = s.broker.durable
        before = durable.position
    ch.stats_publish += 1
    result = _vh(s).publish(exchange, routing_key, message, s.clock())
    if mandatory and not result.routed:
        s.send_content(ch.number, reply(C.Basic.Return, reply_code=312, reply_text="NO_ROUTE",
                                        exchange=exchange.name, routing_key=routing_key),
                       message)
    if confirm:
        seq = ch.publish_seq = ch.publish_seq + 1
        ch.confirms.insert(durable.since(before), -seq if result.rejected else seq)


# -- confirm and tx ------------------------------------------------------------------------

def confirm_select(s: Connection, ch: Channel, m: C.Confirm.Select) -> None:
    if ch.tx:
        raise PreconditionFailed("PRECONDITION_FAILED - cannot switch from tx to confirm "
                                 "mode")
    ch.confirm = True
    s.confirm_channel(ch)
    if not m.nowait:
        s.send_method(ch.number, C.Confirm.SelectOk())


def tx_select(s: Connection, ch: Channel, m: C.Tx.Select) -> None:
    if ch.confirm:
        raise PreconditionFailed("PRECONDITION_FAILED - cannot switch from confirm to tx "
                                 "mode")
    ch.tx = True
    s.send_method(ch.number, C.Tx.SelectOk())


def tx_commit(s: Connection, ch: Channel, m: C.Tx.Commit) -> None:
    if not ch.tx:
        raise PreconditionFailed("PRECONDITION_FAILED - channel is not transactional")
    now = s.clock()
    publishes, ch.tx_publishes = ch.tx_publishes, []
    acks, ch.tx_acks = ch.tx_acks, []
    for (exchange, routing_key, message), mandatory in publishes:
        if exchange.deleted:
            continue
        _route(s, ch, exchange, routing_key, message, mandatory)
    for kind, tag, multiple, requeue in acks:
        ch.settle(tag, multiple, ack=kind == "ack", requeue=requeue, now=now)
    s.send_method(ch.number, C.Tx.CommitOk())


def tx_rollback(s: Connection, ch: Channel, m: C.Tx.Rollback) -> None:
    if not ch.tx:
        raise PreconditionFailed("PRECONDITION_FAILED - channel is not transactional")
    ch.tx_publishes.clear()
    ch.tx_acks.clear()
    s.send_method(ch.number, C.Tx.RollbackOk())


TABLE: dict[type, Handler] = {
    C.Channel.CloseOk: channel_close_ok,
    C.Channel.Flow: channel_flow,
    C.Channel.FlowOk: channel_flow_ok,
    C.Exchange.Declare: exchange_declare,
    C.Exchange.Delete: exchange_delete,
    C.Exchange.Bind: exchange_bind,
    C.Exchange.Unbind: exchange_unbind,
    C.Queue.Declare: queue_declare,
    C.Queue.Bind: queue_bind,
    C.Queue.Unbind: queue_unbind,
    C.Queue.Purge: queue_purge,
    C.Queue.Delete: queue_delete,
    C.Basic.Qos: basic_qos,
    C.Basic.Consume: basic_consume,
    C.Basic.Cancel: basic_cancel,
    C.Basic.Get: basic_get,
    C.Basic.Ack: basic_ack,
    C.Basic.Nack: basic_nack,
    C.Basic.Reject: basic_reject,
    C.Basic.Recover: basic_recover,
    C.Basic.RecoverAsync: basic_recover,
    C.Confirm.Select: confirm_select,
    C.Tx.Select: tx_select,
    C.Tx.Commit: tx_commit,
    C.Tx.Rollback: tx_rollback,
}
