"""One handler per message a client sends in an established session; `TABLE` at the bottom
is the table of contents. HELLO, AUTHENTICATE, GOODBYE and ABORT are the session's own
(`session.py`).

Each handler validates URIs and options (spec "URIs": loose rules, empty components only in
patterns; `wamp.` is reserved for the router), calls the core through the session's
subscription and RPC state, and answers. A `BrokerError` becomes an ERROR for that request
with a standard URI; nothing else is affected. Which messages a state takes is
`machine.py`'s business; a handler sees the session as `Session`, the part it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.core.errors import BrokerError
from gateway.core.message import Message, Properties
from protocols.wamp.context import SessionContext
from protocols.wamp.frames import (
    Call,
    Cancel,
    Error,
    MessageType,
    ProtocolViolation,
    Publish,
    Published,
    Register,
    Registered,
    Subscribe,
    Subscribed,
    Unregister,
    Unregistered,
    Unsubscribe,
    Unsubscribed,
    Yield,
)
from protocols.wamp.mapping import (
    FILTER_HEADERS,
    H_PAYLOAD,
    H_PUBLICATION,
    H_PUBLISHER,
    H_PUBLISHER_AUTHID,
    H_PUBLISHER_AUTHROLE,
    H_SESSION,
    ORIGIN,
    TOPIC_EXCHANGE,
    encode_payload,
    reserved_uri,
    subscription_binding,
    topic_routing_key,
    valid_uri,
)
from protocols.wamp.router import INVOKE_POLICIES, global_id
from protocols.wamp.rpc import AlreadyExists, NoSuchProcedure, RpcState
from protocols.wamp.subscriptions import SubscriptionState

if TYPE_CHECKING:
    from gateway.core.broker import Broker
    from protocols.wamp.frames import Message as Frame


class Session(SessionContext, Protocol):
    """What the handlers need of the session (`session.WampSession` is one)."""

    subs: SubscriptionState
    rpc: RpcState

    def check_subscribe(self, exchange: str, binding_key: str) -> None: ...

    def error_uri(self, err: BrokerError, default: str) -> str: ...

    @property
    def broker(self) -> Broker: ...

    def send_when_durable(self, position: int, msg: Frame) -> None: ...


MATCH_POLICIES: Final = ("exact", "prefix", "wildcard")
CANCEL_MODES: Final = ("skip", "kill", "killnowait")
T = MessageType


def _answer(s: Session, before: int, msg: Frame) -> None:
    """Answer a request; in front of a RabbitMQ cluster, once RabbitMQ answered what the
    request asked of it (since the store position `before`: a bind, a declare, a publish
    confirm), so a publish from another node after SUBSCRIBED reaches the subscription."""
    vh = s.vhost
    if vh is not None and vh.backend is not None:
        s.send_when_durable(s.broker.durable.since(before), msg)
    else:
        s.send(msg)


def _error(s: Session, request_type: MessageType, request: int, uri: str,
           message: str | None = None) -> None:
    args = [message] if message else None
    s.send(Error(request_type, request, {}, uri, args))


# -- publish/subscribe -----------------------------------------------------------------------

def publish(s: Session, m: Publish) -> None:
    opts = m.options
    ack = opts.get("acknowledge") is True
    if not valid_uri(m.topic) or reserved_uri(m.topic):
        if ack:
            _error(s, T.PUBLISH, m.request, "wamp.error.invalid_uri", f"invalid topic {m.topic!r}")
        return
    try:
        body = encode_payload(m.args, m.kwargs)
    except ValueError as exc:
        if ack:
            _error(s, T.PUBLISH, m.request, "wamp.error.invalid_argument", str(exc))
        return
    pub = global_id()
    headers: dict[str, Any] = {H_PUBLICATION: pub}
    if body.marker:
        headers[H_PAYLOAD] = body.marker
    if opts.get("exclude_me", True) is not False:
        headers[H_SESSION] = s.session_id
    if opts.get("disclose_me") is True or s.disclose:
        headers[H_PUBLISHER] = s.session_id
        headers[H_PUBLISHER_AUTHID] = s.authid
        headers[H_PUBLISHER_AUTHROLE] = s.authrole
    for option, header in FILTER_HEADERS.items():
        value = opts.get(option)
        if isinstance(value, list):
            headers[header] = value
    vh = s.vhost
    assert vh is not None
    key = topic_routing_key(m.topic)
    try:
        s.check_publish(TOPIC_EXCHANGE, key)
        exchange = vh.exchange_for_publish(TOPIC_EXCHANGE)
    except BrokerError as err:
        if ack:
            _error(s, T.PUBLISH, m.request, s.error_uri(err, "wamp.error.not_authorized"),
                   err.text)
        return
    props = Properties(content_type=body.content_type, message_id=str(pub), headers=headers)
    message = Message(vh.next_message_id(), TOPIC_EXCHANGE, key, props, body.data, ORIGIN)
    before = s.broker.durable.position
    vh.publish(exchange, key, message, s.clock())
    if ack:
        _answer(s, before, Published(m.request, pub))


def subscribe(s: Session, m: Subscribe) -> None:
    match = m.options.get("match", "exact")
    if match not in MATCH_POLICIES:
        _error(s, T.SUBSCRIBE, m.request, "wamp.error.invalid_argument",
               f"unknown match policy {match!r}")
        return
    if not valid_uri(m.topic, allow_empty=match != "exact"):
        _error(s, T.SUBSCRIBE, m.request, "wamp.error.invalid_uri", f"invalid topic {m.topic!r}")
        return
    try:
        binding = subscription_binding(m.topic, match)
    except ValueError:
        _error(s, T.SUBSCRIBE, m.request, "wamp.error.invalid_uri", f"invalid prefix {m.topic!r}")
        return
    before = s.broker.durable.position
    try:
        s.check_subscribe(TOPIC_EXCHANGE, binding.key)
        sub_id = s.subs.subscribe(m.topic, match, binding)
    except BrokerError as err:
        _error(s, T.SUBSCRIBE, m.request, s.error_uri(err, "wamp.error.not_authorized"),
               err.text)
        return
    _answer(s, before, Subscribed(m.request, sub_id))


def unsubscribe(s: Session, m: Unsubscribe) -> None:
    if s.subs.unsubscribe(m.subscription):
        s.send(Unsubscribed(m.request))
    else:
        _error(s, T.UNSUBSCRIBE, m.request, "wamp.error.no_such_subscription")


# -- remote procedure calls ------------------------------------------------------------------

def call(s: Session, m: Call) -> None:
    if not valid_uri(m.procedure):
        _error(s, T.CALL, m.request, "wamp.error.invalid_uri",
               f"invalid procedure {m.procedure!r}")
        return
    try:
        body = encode_payload(m.args, m.kwargs)
    except ValueError as exc:
        _error(s, T.CALL, m.request, "wamp.error.invalid_argument", str(exc))
        return
    try:
        s.rpc.call(m, body)
    except NoSuchProcedure:
        _error(s, T.CALL, m.request, "wamp.error.no_such_procedure",
               f"no callee registered for procedure '{m.procedure}'")
    except BrokerError as err:
        _error(s, T.CALL, m.request, s.error_uri(err, "wamp.error.not_authorized"), err.text)


def cancel(s: Session, m: Cancel) -> None:
    mode = m.options.get("mode", "killnowait")
    if mode not in CANCEL_MODES:
        mode = "killnowait"
    s.rpc.cancel(m.request, mode)


def register(s: Session, m: Register) -> None:
    opts = m.options
    match = opts.get("match", "exact")
    invoke = opts.get("invoke", "single")
    if match != "exact":
        _error(s, T.REGISTER, m.request, "wamp.error.invalid_argument",
               "pattern-based registrations are not supported")
        return
    if invoke not in INVOKE_POLICIES:
        _error(s, T.REGISTER, m.request, "wamp.error.invalid_argument",
               f"unknown invocation policy {invoke!r}")
        return
    if not valid_uri(m.procedure) or reserved_uri(m.procedure):
        _error(s, T.REGISTER, m.request, "wamp.error.invalid_uri",
               f"invalid procedure {m.procedure!r}")
        return
    before = s.broker.durable.position
    try:
        reg, start = s.rpc.register(m.procedure, invoke)
    except AlreadyExists:
        _error(s, T.REGISTER, m.request, "wamp.error.procedure_already_exists",
               f"procedure '{m.procedure}' is already registered")
        return
    except BrokerError as err:
        _error(s, T.REGISTER, m.request,
               s.error_uri(err, "wamp.error.procedure_already_exists"), err.text)
        return
    _answer(s, before, Registered(m.request, reg.id))
    if start:
        s.rpc.start(reg)


def unregister(s: Session, m: Unregister) -> None:
    if s.rpc.unregister(m.registration):
        s.send(Unregistered(m.request))
    else:
        _error(s, T.UNREGISTER, m.request, "wamp.error.no_such_registration")


def yield_(s: Session, m: Yield) -> None:
    try:
        body = encode_payload(m.args, m.kwargs)
    except ValueError as exc:
        s.rpc.error(Error(T.INVOCATION, m.request, {}, "wamp.error.invalid_argument",
                          [str(exc)]))
        return
    s.rpc.yield_(m, body)


def error(s: Session, m: Error) -> None:
    if m.request_type != T.INVOCATION:
        raise ProtocolViolation(f"ERROR for request type {m.request_type} from a client")
    s.rpc.error(m)


TABLE: Final[dict[MessageType, Callable[[Session, Any], None]]] = {
    T.PUBLISH: publish,
    T.SUBSCRIBE: subscribe,
    T.UNSUBSCRIBE: unsubscribe,
    T.CALL: call,
    T.CANCEL: cancel,
    T.REGISTER: register,
    T.UNREGISTER: unregister,
    T.YIELD: yield_,
    T.ERROR: error,
}
