"""A session's calls (caller side) and registrations (callee side), over the core.

A CALL of `proc` is a message to the queue named `proc` (default exchange) with
`reply_to` = this session's reply queue and a `correlation_id` naming the call, so any
consumer of that queue answers it: a WAMP callee (through its registration) or an AMQP RPC
server such as the RabbitMQ tutorials' `rpc_server.py`. A REGISTER consumes the queue
(`router.Registration`), so an AMQP RPC client's request reaches a WAMP callee as an
INVOCATION, and its YIELD goes back to the client's `reply_to` with the same correlation id.

Replies carry WAMP's extras in headers (`mapping.H_*`): progress, error URI. A call with a
timeout also sets the message's `expiration`, so it is not delivered after the caller gave
up. Timeouts and CANCEL answer the caller at once and INTERRUPT the callee that holds the
call; a call nobody took yet is skipped when it comes out of the queue. The session is
seen as `context.SessionContext`.

In front of a RabbitMQ cluster (`--backend rabbitmq`) the procedure's queue and the
caller's reply queue are RabbitMQ's (docs/upstream.md): a CALL goes there whether or not
this node knows a callee, so a callee on another node or an AMQP RPC server on RabbitMQ
answers it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.core.errors import AccessRefused
from gateway.core.message import Message, Properties
from protocols.wamp.context import SessionContext
from protocols.wamp.frames import Call, Error, Interrupt, Invocation, MessageType, Result, Yield
from protocols.wamp.mapping import (
    H_CALLER,
    H_CALLER_AUTHID,
    H_CALLER_AUTHROLE,
    H_ERROR,
    H_PAYLOAD,
    H_PROGRESS,
    H_RECEIVE_PROGRESS,
    H_SESSION,
    ORIGIN,
    Body,
    error_body,
    identity_details,
)
from protocols.wamp.router import Registration
from protocols.wamp.subscriptions import message_payload

if TYPE_CHECKING:
    from gateway.core.queue import Entry, Queue
    from gateway.core.vhost import VirtualHost

log = logging.getLogger("gateway.wamp")

SECONDS_BELOW: Final = 100  # CALL timeouts under this are seconds (autobahn), else ms (spec)


class NoSuchProcedure(Exception):
    pass


class AlreadyExists(Exception):
    pass


@dataclass(slots=True)
class PendingCall:
    request: int
    correlation_id: str
    deadline: float | None
    receive_progress: bool


@dataclass(slots=True)
class PendingInvocation:
    entry: Entry
    registration: Registration
    correlation_id: str | None
    reply_to: str | None
    from_wamp: bool
    receive_progress: bool


def timeout_seconds(value: Any) -> float | None:
    """CALL.Options.timeout as seconds: spec milliseconds, but autobahn sends the seconds
    its API takes unchanged, so small values are read as seconds. 0 or absent: none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value) if value < SECONDS_BELOW else value / 1000.0


class ReplyConsumer:
    """The consumer of a caller's reply queue (no acks: a reply is used once)."""

    __slots__ = ("rpc", "tag", "no_ack", "exclusive", "priority")

    def __init__(self, rpc: RpcState) -> None:
        self.rpc = rpc
        self.tag = "wamp-replies"
        self.no_ack = True
        self.exclusive = True
        self.priority = 0

    def can_take(self) -> bool:
        return not self.rpc.session.output_blocked

    def deliver(self, entry: Entry) -> None:
        self.rpc.reply(entry.message)

    def cancelled(self) -> None:
        self.rpc.reply_queue = None


class RpcState:
    def __init__(self, session: SessionContext) -> None:
        self.session = session
        self.calls: dict[int, PendingCall] = {}
        self.by_cid: dict[str, int] = {}
        self.reply_queue: Queue | None = None
        self._cids = itertools.count(1)
        self.registrations: dict[int, Registration] = {}
        self.invocations: dict[int, PendingInvocation] = {}
        self._next_invocation = 1

    # -- the Callee protocol ------------------------------------------------------------------

    @property
    def session_id(self) -> int:
        return self.session.session_id

    @property
    def output_blocked(self) -> bool:
        return self.session.output_blocked

    def _vh(self) -> VirtualHost:
        assert self.session.vhost is not None
        return self.session.vhost

    # -- caller ------------------------------------------------------------------------------

    def _reply_queue(self) -> Queue:
        q = self.reply_queue
        if q is None or q.deleted:
            s = self.session
            q = self._vh().declare_queue("", exclusive=True, owner=s, now=s.clock())
            self.reply_queue = q
            self._vh().consume(q, ReplyConsumer(self), exclusive=True, now=s.clock())
        return q

    def call(self, msg: Call, body: Body) -> None:
        """Send the call to the procedure's queue; `NoSuchProcedure` if nobody serves it."""
        s = self.session
        vh = self._vh()
        queue = vh.queues.get(msg.procedure)
        if vh.backend is None and (queue is None or not queue.consumers):
            # (in front of a RabbitMQ cluster the callee may be on another node, or an AMQP
            # RPC server: the call goes to RabbitMQ, which knows)
            raise NoSuchProcedure(msg.procedure)
        s.check_publish("", msg.procedure)
        now = s.clock()
        reply_queue = self._reply_queue()
        cid = f"wamp-{s.session_id}-{next(self._cids)}"
        opts = msg.options
        headers: dict[str, Any] = {H_SESSION: s.session_id}
        if body.marker:
            headers[H_PAYLOAD] = body.marker
        receive_progress = opts.get("receive_progress") is True
        if receive_progress:
            headers[H_RECEIVE_PROGRESS] = True
        if opts.get("disclose_me") is True or s.disclose:
            headers[H_CALLER] = s.session_id
            headers[H_CALLER_AUTHID] = s.authid
            headers[H_CALLER_AUTHROLE] = s.authrole
        timeout = timeout_seconds(opts.get("timeout"))
        props = Properties(content_type=body.content_type, correlation_id=cid,
                           reply_to=reply_queue.name, headers=headers,
                           expiration=None if timeout is None else str(int(timeout * 1000)))
        self.calls[msg.request] = PendingCall(
            msg.request, cid, None if timeout is None else now + timeout, receive_progress)
        self.by_cid[cid] = msg.request
        message = Message(vh.next_message_id(), "", msg.procedure, props, body.data, ORIGIN)
        if not vh.publish(vh.exchanges[""], msg.procedure, message, now).routed:
            self._forget(msg.request)
            raise NoSuchProcedure(msg.procedure)

    def _forget(self, request: int) -> PendingCall | None:
        call = self.calls.pop(request, None)
        if call is not None:
            self.by_cid.pop(call.correlation_id, None)
        return call

    def reply(self, message: Message) -> None:
        props = message.properties
        cid = props.correlation_id
        request = self.by_cid.get(cid) if cid is not None else None
        if request is None:
            return  # a late reply to a call canceled or timed out
        call = self.calls[request]
        headers = props.headers or {}
        args, kwargs = message_payload(message)
        s = self.session
        if headers.get(H_PROGRESS) is True:
            if call.receive_progress:
                s.send(Result(request, {"progress": True}, args, kwargs))
            return
        self._forget(request)
        error = headers.get(H_ERROR)
        if isinstance(error, str) and error:
            s.send(Error(MessageType.CALL, request, {}, error, args, kwargs))
        else:
            s.send(Result(request, {}, args, kwargs))

    def cancel(self, request: int, mode: str, reason: str = "wamp.error.canceled") -> None:
        call = self._forget(request)
        if call is None:
            return
        self._stop_remote(call.correlation_id, mode, reason)
        self.session.send(Error(MessageType.CALL, request, {}, reason))

    def _stop_remote(self, cid: str, mode: str, reason: str) -> None:
        realm = self.session.realm
        if realm is None:
            return
        held = realm.inflight.pop(cid, None)
        if held is None:
            realm.cancel_before_delivery(cid)
        elif mode != "skip":
            callee, invocation = held
            callee.interrupt(invocation, mode, reason)

    def expire(self, now: float) -> None:
        for call in [c for c in self.calls.values()
                     if c.deadline is not None and c.deadline <= now]:
            self.cancel(call.request, "killnowait", "wamp.error.timeout")

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.calls.values() if c.deadline is not None]
        return min(deadlines) if deadlines else None

    # -- callee ------------------------------------------------------------------------------

    def register(self, procedure: str, invoke: str) -> tuple[Registration, bool]:
        """Register as a callee of `procedure`: (registration, True when its consumer must
        still be started, after REGISTERED is sent)."""
        s = self.session
        realm = s.realm
        assert realm is not None
        # REGISTER may declare the procedure's queue (configure) and consumes it (read):
        # the same check for whoever registers, the first callee or one joining a shared
        # registration, before anything changes
        s.check_register(procedure)
        existing = realm.registrations.get(procedure)
        if existing is not None:
            if existing.invoke_policy == "single" or invoke != existing.invoke_policy \
                    or self in existing.callees:
                raise AlreadyExists(procedure)
            existing.callees.append(self)
            self.registrations[existing.id] = existing
            return existing, False
        vh = self._vh()
        queue = vh.queues.get(procedure)
        created = queue is None
        if queue is None:
            queue = vh.declare_queue(procedure, now=s.clock())
        elif queue.consumers or queue.exclusive_owner is not None:
            raise AlreadyExists(procedure)  # an AMQP consumer already serves it
        reg = realm.add_registration(procedure, invoke, queue, created)
        reg.callees.append(self)
        self.registrations[reg.id] = reg
        return reg, True

    def start(self, reg: Registration) -> None:
        try:
            self._vh().consume(reg.queue, reg, exclusive=True, now=self.session.clock())
        except AccessRefused:  # not possible after the checks in `register`
            log.warning("registration %s could not consume its queue", reg.procedure)

    def unregister(self, reg_id: int) -> bool:
        reg = self.registrations.pop(reg_id, None)
        if reg is None:
            return False
        self._leave_registration(reg)
        return True

    def _leave_registration(self, reg: Registration) -> None:
        if self in reg.callees:
            reg.callees.remove(self)
        if reg.callees:
            return
        realm = self.session.realm
        if realm is not None:
            realm.drop_registration(reg)
        q = reg.queue
        if not q.deleted:
            q.vhost.cancel(q, reg, self.session.clock())
            _drop_unused_queue(reg)

    def registration_revoked(self, reg: Registration) -> None:
        self.registrations.pop(reg.id, None)
        if self.session.realm is not None:
            self.session.realm.drop_registration(reg)

    def invoke(self, reg: Registration, entry: Entry) -> None:
        s = self.session
        message = entry.message
        props = message.properties
        headers = props.headers or {}
        cid = props.correlation_id
        realm = s.realm
        if cid is not None and realm is not None and cid in realm.canceled:
            del realm.canceled[cid]
            entry.queue.ack(entry)
            return
        from_wamp = message.origin == ORIGIN and H_SESSION in headers
        inv_id = self._next_invocation
        self._next_invocation = inv_id + 1
        receive_progress = headers.get(H_RECEIVE_PROGRESS) is True
        self.invocations[inv_id] = PendingInvocation(entry, reg, cid, props.reply_to,
                                                     from_wamp, receive_progress)
        if from_wamp and cid is not None and realm is not None:
            realm.inflight[cid] = (self, inv_id)
        details: dict[str, Any] = {}
        if receive_progress:
            details["receive_progress"] = True
        details.update(identity_details(message.origin, headers, "caller"))
        args, kwargs = message_payload(message)
        s.send(Invocation(inv_id, reg.id, details, args, kwargs))

    def interrupt(self, inv_id: int, mode: str, reason: str) -> None:
        if inv_id in self.invocations:
            self.session.send(Interrupt(inv_id, {"mode": mode, "reason": reason}))

    def _reply(self, inv: PendingInvocation, body: Body, extra: dict[str, Any]) -> None:
        if not inv.reply_to:
            return  # a request without reply_to wants no answer
        vh = self._vh()
        headers: dict[str, Any] = dict(extra)
        if body.marker:
            headers[H_PAYLOAD] = body.marker
        props = Properties(content_type=body.content_type, correlation_id=inv.correlation_id,
                           headers=headers or None)
        message = Message(vh.next_message_id(), "", inv.reply_to, props, body.data, ORIGIN)
        vh.publish(vh.exchanges[""], inv.reply_to, message, self.session.clock())

    def _settle(self, inv_id: int) -> None:
        inv = self.invocations.pop(inv_id)
        realm = self.session.realm
        if inv.correlation_id is not None and realm is not None:
            held = realm.inflight.get(inv.correlation_id)
            if held is not None and held[0] is self:
                del realm.inflight[inv.correlation_id]
        inv.entry.queue.ack(inv.entry)

    def yield_(self, msg: Yield, body: Body) -> None:
        inv = self.invocations.get(msg.request)
        if inv is None:
            return  # interrupted and already answered, or unknown: nothing to relay
        if msg.options.get("progress") is True:
            if inv.receive_progress:
                self._reply(inv, body, {H_PROGRESS: True})
            return
        self._reply(inv, body, {})
        self._settle(msg.request)

    def error(self, msg: Error) -> None:
        inv = self.invocations.get(msg.request)
        if inv is None:
            return
        self._reply(inv, error_body(msg.args, msg.kwargs), {H_ERROR: msg.error})
        self._settle(msg.request)

    def kick(self) -> None:
        now = self.session.clock()
        for reg in list(self.registrations.values()):
            reg.queue.dispatch(now)

    # -- leaving -----------------------------------------------------------------------------

    def release(self) -> None:
        """The session ends: drop registrations, answer or requeue the calls it was
        running, and stop its own calls."""
        left = list(self.registrations.values())
        for reg in left:
            self._leave_registration(reg)
        self.registrations.clear()
        now = self.session.clock()
        for inv_id, inv in list(self.invocations.items()):
            if inv.from_wamp:
                self._reply(inv, error_body(None, None), {H_ERROR: "wamp.error.canceled"})
                self._settle(inv_id)
            else:
                self.invocations.pop(inv_id)
                inv.entry.queue.requeue([inv.entry], now)  # at-least-once for AMQP clients
        for reg in left:
            _drop_unused_queue(reg)
        for call in list(self.calls.values()):
            self._stop_remote(call.correlation_id, "killnowait", "wamp.error.canceled")
        self.calls.clear()
        self.by_cid.clear()
        q = self.reply_queue
        if q is not None and not q.deleted:
            q.vhost.remove_queue(q)
        self.reply_queue = None


def _drop_unused_queue(reg: Registration) -> None:
    """Delete the queue a registration declared, once nobody uses it and it is empty."""
    q = reg.queue
    if reg.created_queue and not q.deleted and not q.consumers and not q.message_count \
            and not q.unacked:
        q.vhost.remove_queue(q)
