"""One handler per client command; `TABLE` at the bottom is the table of contents.

A handler takes the session and the frame, acts on the core, and may return a callable to
run once the frame's RECEIPT is queued (SUBSCRIBE starts its deliveries that way, so the
receipt comes first). Problems are raised: `StompError` with the ERROR frame's message and
body, or the core's `BrokerError`; the session answers either with ERROR and closes.

Permissions are checked as RabbitMQ's STOMP plugin does through AMQP: configure to declare
a queue, write on an exchange to publish, write on a queue and read on an exchange to bind,
read on a queue to consume.

Which commands a state takes is `machine.py`'s business. A handler sees the session as
`Connection`, the part of it the handlers use, so this module does not import the session.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import gateway
from gateway.auth import access
from gateway.auth.service import LoginRefused
from gateway.core.errors import NotAllowed
from gateway.core.message import Message
from gateway.core.queue import Queue
from protocols.stomp.codec import StompCodec
from protocols.stomp.frames import SUPPORTED_VERSIONS, Command, Frame, StompError, Version
from protocols.stomp.machine import Local, StompMachine
from protocols.stomp.mapping import (
    TOPIC_EXCHANGE,
    Destination,
    Kind,
    parse_bool,
    parse_destination,
    parse_int,
    properties_from_headers,
    queue_options,
    subscription_queue_name,
    validate_publish,
)
from protocols.stomp.subscription import AckMode, Subscription, SubscriptionOwner

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, User
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost
    from protocols.admission import Admit


class Connection(SubscriptionOwner, Protocol):
    """What the handlers need of the connection (`session.StompSession` is one)."""

    machine: StompMachine
    broker: Broker
    auth: AuthService
    admit: Admit
    codec: StompCodec
    peer: tuple[str, int]
    loopback: bool
    clock: Callable[[], float]
    heartbeat_min: int
    anonymous_user: str | None
    loopback_users: frozenset[str]
    cert_user: str | None
    close_reason: str | None
    password_check: PendingCheck | None
    user: User | None
    vhost: VirtualHost | None
    subscriptions: dict[str, Subscription]
    transactions: dict[str, list[Frame]]
    declared: set[str]
    targets: dict[str, tuple[str, str]]
    alarm: bool
    read_paused: bool

    def send_frame(self, command: Command, headers: list[tuple[str, str]],
                   body: bytes = b"") -> None: ...

    def send_error(self, message: str, detail: str, receipt: str | None = None,
                   extra: tuple[tuple[str, str], ...] = ()) -> None: ...

    def connected(self, user: User, vhost: VirtualHost, send_interval: float,
                  recv_interval: float) -> None: ...

    def disconnect(self, receipt: str | None) -> None: ...

    def temp_queue(self, name: str) -> Queue: ...

    def start_subscription(self, sub: Subscription) -> None: ...

    def end_subscription(self, sub: Subscription, now: float) -> None: ...

    def settle(self, ack_id: str, *, ack: bool, requeue: bool, command: str) -> None: ...

    def end_transaction(self, tx: str) -> list[Frame]: ...

    def replay(self, frame: Frame) -> None: ...


After = Callable[[], None] | None
Handler = Callable[[Connection, Frame], After]

DEFAULT_VHOST: Final = "/"
MAX_TRANSACTIONS: Final = 16  # open at once on one connection (RabbitMQ's limit)
MAX_TX_ACTIONS: Final = 10000  # frames buffered in one transaction
MAX_TX_BYTES: Final = 64 * 1024 * 1024  # SEND bodies buffered in all open transactions
MAX_TARGETS: Final = 1024  # SEND destinations remembered per connection
_ACK_MODES: Final = {m.value: m for m in AckMode}


def _vh(s: Connection) -> VirtualHost:
    assert s.vhost is not None
    return s.vhost


def _user(s: Connection) -> User:
    assert s.user is not None
    return s.user


def _required(frame: Frame, name: str) -> str:
    value = frame.get(name)
    if value is None:
        raise StompError("Missing header",
                         f"{frame.command.value} requires the '{name}' header.")
    return value


# -- connection ----------------------------------------------------------------------------

class VersionMismatch(StompError):
    """Spec 1.2 "Protocol Negotiation": the ERROR carries a `version` header listing the
    versions the server supports."""

    headers = (("version", ",".join(v.value for v in SUPPORTED_VERSIONS)),)


def _negotiate(frame: Frame) -> Version:
    accept = frame.get("accept-version")
    if accept is None:
        return Version.V1_0  # spec 1.1: a CONNECT without accept-version is 1.0
    offered = {v.strip() for v in accept.split(",")}
    for version in reversed(SUPPORTED_VERSIONS):
        if version.value in offered:
            return version
    raise VersionMismatch("Version mismatch",
                     f"Supported protocol versions are "
                     f"{','.join(v.value for v in SUPPORTED_VERSIONS)}; the client accepts "
                     f"{accept}.")


def _heartbeat(s: Connection, frame: Frame) -> tuple[int, int]:
    """(sx, sy) in ms for CONNECTED, from the client's (cx, cy)."""
    value = frame.get("heart-beat", "0,0") or "0,0"
    parts = value.split(",")
    try:
        cx, cy = (int(p.strip()) for p in parts)
        if cx < 0 or cy < 0:
            raise ValueError(value)
    except ValueError as exc:
        raise StompError("Invalid heart-beat header",
                         f"heart-beat '{value}' is not two non-negative integers "
                         "separated by a comma") from exc
    floor = s.heartbeat_min
    sx = max(cy, floor) if cy else 0
    sy = max(cx, floor) if cx else 0
    return sx, sy


def _vhost_name(s: Connection, host: str | None) -> str:
    """The vhost a CONNECT asks for. Spec 1.2 recommends that clients put the host name
    they connected to in `host` (stomp.py does); RabbitMQ then refuses the connection
    ("Virtual host '127.0.0.1' access denied"), a frequent complaint. Here an IP address
    or `localhost` that names no vhost means the default vhost; other unknown names are
    refused."""
    if not host:
        return DEFAULT_VHOST
    if host not in s.broker.vhosts and (host == "localhost" or _is_ip(host)):
        return DEFAULT_VHOST
    return host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _without_password(s: Connection) -> User:
    """The user of a CONNECT without login: the client certificate's, or anonymous."""
    if s.cert_user is not None:
        # RabbitMQ's stomp.ssl_cert_login: the verified certificate names the user
        try:
            return s.auth.authenticate_certificate(s.cert_user, loopback=s.loopback,
                                                   mechanism="STOMP")
        except LoginRefused as err:
            s.close_reason = err.reason
            raise StompError("Bad CONNECT",
                             f"Access refused for user '{s.cert_user}'") from err
    # RabbitMQ's `default_user`: a CONNECT without login is the anonymous user, unless that
    # is switched off; a loopback-only user still needs a loopback peer
    name = s.anonymous_user
    user = s.auth.user(name) if name is not None else None
    if user is None or (user.name in s.loopback_users and not s.loopback):
        raise StompError("Bad CONNECT", "Access refused: the CONNECT frame has no login "
                         "header and anonymous login is not allowed.")
    return user


def connect(s: Connection, frame: Frame) -> After:
    version = _negotiate(frame)
    s.version = version
    s.codec.version = version
    sx, sy = _heartbeat(s, frame)
    login = frame.get("login")
    passcode = frame.get("passcode", "") or ""
    vhost = _vhost_name(s, frame.get("host"))
    if login is None:
        _connected(s, _without_password(s), vhost, version, sx, sy)
        return None
    receipt = frame.get("receipt")

    def logged_in(result: User | LoginRefused) -> None:
        if not s.machine.allows(Local.LOGGED_IN):
            return  # the connection went meanwhile
        try:
            if isinstance(result, LoginRefused):
                s.close_reason = result.reason
                raise StompError("Bad CONNECT", f"Access refused for user '{login}'")
            _connected(s, result, vhost, version, sx, sy)
        except StompError as exc:
            s.send_error(exc.message, exc.detail, receipt, exc.headers)

    # answered at once, or after a slow password check run by the I/O layer
    s.password_check = s.auth.login(login, passcode, peer=s.peer[0], loopback=s.loopback,
                                    protocol="STOMP", now=s.clock(), then=logged_in)
    return None


def _connected(s: Connection, user: User, vhost: str, version: Version, sx: int,
               sy: int) -> None:
    login = user.name
    if not s.auth.vhost_exists(vhost) or vhost not in s.broker.vhosts:
        raise StompError("Bad CONNECT", f"Virtual host '{vhost}' access denied: it does not "
                         "exist.")
    try:
        s.auth.check_vhost(user, vhost)
    except NotAllowed as err:
        raise StompError("Bad CONNECT", f"Virtual host '{vhost}' access denied for user "
                         f"'{login}'") from err
    try:
        s.admit(s, login, vhost)
    except NotAllowed as err:  # a connection limit
        raise StompError("Connection refused", err.text) from err
    s.connected(user, s.broker.vhost(vhost), sx / 1000.0, sy / 1000.0)
    s.send_frame(Command.CONNECTED, [
        ("version", version.value),
        ("session", s.session_name),
        ("server", f"gateway/{gateway.__version__}"),
        ("heart-beat", f"{sx},{sy}"),
    ])


def disconnect(s: Connection, frame: Frame) -> After:
    s.disconnect(frame.get("receipt"))
    return None


# -- publishing ----------------------------------------------------------------------------

def _declare(s: Connection, name: str, frame: Frame, *, durable: bool, auto_delete: bool,
             exclusive: bool) -> Queue:
    opts = queue_options(frame.headers, durable=durable, auto_delete=auto_delete,
                         exclusive=exclusive)
    access.declare_queue(s.auth, _user(s), _vh(s), name, arguments=opts.arguments)
    return _vh(s).declare_queue(name, durable=opts.durable, auto_delete=opts.auto_delete,
                                exclusive=opts.exclusive, arguments=opts.arguments,
                                owner=s, now=s.clock())


def _publish_address(dest: Destination) -> tuple[str, str]:
    """(exchange, routing key) a SEND to `dest` will publish with, found without making
    anything (a temp queue's name, not known yet, is "": the default exchange has no topic
    permissions to check it against)."""
    kind = dest.kind
    if kind is Kind.TOPIC:
        return TOPIC_EXCHANGE, dest.name
    if kind is Kind.EXCHANGE:
        return dest.name, dest.key
    if kind is Kind.TEMP_QUEUE:
        return "", ""
    return "", dest.name


def _publish_target(s: Connection, dest: Destination, frame: Frame) -> tuple[str, str]:
    """(exchange, routing key) a SEND to `dest` publishes with; declares a /queue/ (or a
    temp queue) it names on first use."""
    kind = dest.kind
    if kind is Kind.QUEUE:
        if dest.name not in s.declared:
            _declare(s, dest.name, frame, durable=True, auto_delete=False, exclusive=False)
            s.declared.add(dest.name)
        return "", dest.name
    if kind is Kind.AMQ_QUEUE or kind is Kind.REPLY_QUEUE:
        return "", dest.name
    if kind is Kind.TOPIC:
        return TOPIC_EXCHANGE, dest.name
    if kind is Kind.EXCHANGE:
        return dest.name, dest.key
    return "", s.temp_queue(dest.name).name


def send(s: Connection, frame: Frame) -> After:
    destination = _required(frame, "destination")
    vh = _vh(s)
    target = s.targets.get(destination)
    if target is not None and target[1] not in vh.queues and destination.startswith(
            Kind.QUEUE.value):
        # deleted since this connection declared it: declare it again rather than let
        # the messages go nowhere (RabbitMQ's plugin remembers and drops them)
        s.declared.discard(target[1])
        target = None
    user = _user(s)
    if target is None:
        dest = parse_destination(destination)
        # the publish is checked before the queue it may declare is declared
        access.publish(s.auth, user, vh, *_publish_address(dest))
        target = _publish_target(s, dest, frame)
        if dest.kind is not Kind.TEMP_QUEUE:  # a temp queue may be gone and made anew
            if len(s.targets) >= MAX_TARGETS:
                s.targets.clear()
            s.targets[destination] = target
    exchange_name, key = target
    access.publish(s.auth, user, vh, exchange_name, key)
    props = properties_from_headers(frame.headers)
    validate_publish(props, user.name)
    exchange = vh.exchange_for_publish(exchange_name)
    reply_to = props.reply_to
    if reply_to is not None and reply_to.startswith(Kind.TEMP_QUEUE.value):
        props.reply_to = s.temp_queue(parse_destination(reply_to).name).name
    message = Message(vh.next_message_id(), exchange_name, key, props, frame.body, "stomp")
    vh.publish(exchange, key, message, s.clock())
    if s.alarm:
        s.read_paused = True
    return None


# -- subscriptions -------------------------------------------------------------------------

def _subscription_queue(s: Connection, dest: Destination, destination: str, sub_id: str,
                        frame: Frame, durable: bool) -> Queue:
    """The queue a /topic/ or /exchange/ subscription reads: its own, bound by the key."""
    vh = _vh(s)
    exchange = TOPIC_EXCHANGE if dest.kind is Kind.TOPIC else dest.name
    key = dest.name if dest.kind is Kind.TOPIC else dest.key
    vh.get_exchange(exchange)  # 404 before anything is declared
    name = frame.get("x-queue-name") or subscription_queue_name(destination, sub_id, durable)
    opts = queue_options(frame.headers, durable=durable, auto_delete=not durable,
                         exclusive=not durable)
    # every check of the subscription (declare, bind, consume) before any of it is done
    access.subscribe(s.auth, _user(s), vh, queue=name, exchange=exchange, binding_key=key,
                     arguments=opts.arguments)
    queue = _declare(s, name, frame, durable=durable, auto_delete=not durable,
                     exclusive=not durable)
    vh.bind(queue, exchange, key)
    return queue


def subscribe(s: Connection, frame: Frame) -> After:
    destination = _required(frame, "destination")
    dest = parse_destination(destination)
    sub_id = frame.get("id")
    if sub_id is None:
        if s.version is not Version.V1_0:
            raise StompError("Missing header", "SUBSCRIBE requires the 'id' header.")
        sub_id = destination  # 1.0: the destination names the subscription
    if sub_id in s.subscriptions:
        raise StompError("Duplicated subscription identifier",
                         f"A subscription with id '{sub_id}' already exists on this "
                         "connection.")
    mode = _ACK_MODES.get(frame.get("ack", "auto") or "auto")
    if mode is None:
        raise StompError("Invalid ack mode", f"ack '{frame.get('ack')}' is not one of auto, "
                         "client, client-individual.")
    prefetch = parse_int(frame.headers, "prefetch-count", 0, 2**31 - 1) or 0
    priority = parse_int(frame.headers, "x-priority", -(2**31), 2**31 - 1) or 0
    durable = parse_bool(frame.headers, "durable", False) or parse_bool(
        frame.headers, "persistent", False)
    vh = _vh(s)
    kind = dest.kind
    if kind is Kind.QUEUE:
        access.consume(s.auth, _user(s), vh, dest.name)  # before the queue is declared
        queue = _declare(s, dest.name, frame, durable=True, auto_delete=False,
                         exclusive=False)
        s.declared.add(dest.name)  # a later SEND in this session does not redeclare it
    elif kind is Kind.AMQ_QUEUE:
        access.consume(s.auth, _user(s), vh, dest.name)
        queue = vh.get_queue(dest.name, owner=s)
    elif kind is Kind.TOPIC or kind is Kind.EXCHANGE:
        if durable and frame.get("id") is None:
            raise StompError("Missing header", "A durable subscription needs an 'id' header.")
        queue = _subscription_queue(s, dest, destination, sub_id, frame, durable)
    else:
        raise StompError("Invalid destination",
                         f"'{destination}' is not a valid destination for 'SUBSCRIBE'.")
    sub = Subscription(s, sub_id, queue, destination, mode, prefetch=prefetch,
                       priority=priority, durable=durable)
    vh.consume(queue, sub, exclusive=False, now=s.clock())
    s.subscriptions[sub_id] = sub
    return lambda: s.start_subscription(sub)


def unsubscribe(s: Connection, frame: Frame) -> After:
    sub_id = frame.get("id")
    if sub_id is None:
        if s.version is Version.V1_0 and frame.get("destination") is not None:
            sub_id = frame.get("destination")
        else:
            raise StompError("Missing header", "UNSUBSCRIBE requires the 'id' header.")
    assert sub_id is not None
    sub = s.subscriptions.get(sub_id)
    if sub is None:
        return None  # nothing to end; RabbitMQ answers this without an error too
    s.end_subscription(sub, s.clock())
    # a durable topic subscription ends for good with the same durable header (RabbitMQ)
    if sub.durable and (parse_bool(frame.headers, "durable", False)
                        or parse_bool(frame.headers, "persistent", False)):
        queue = sub.queue
        if not queue.deleted:
            access.delete_queue(s.auth, _user(s), _vh(s), queue.name)
            _vh(s).delete_queue(queue.name, owner=s)
    return None


# -- acknowledgements ----------------------------------------------------------------------

def _ack_id(s: Connection, frame: Frame) -> str:
    # 1.2 names the message by `id` (the MESSAGE's `ack` header), 1.0/1.1 by `message-id`;
    # either is accepted in every version, the version's own first
    names = ("id", "message-id") if s.version is Version.V1_2 else ("message-id", "id")
    for name in names:
        value = frame.get(name)
        if value is not None:
            return value
    raise StompError("Missing header",
                     f"{frame.command.value} requires the '{names[0]}' header.")


def ack(s: Connection, frame: Frame) -> After:
    s.settle(_ack_id(s, frame), ack=True, requeue=False, command="ACK")
    return None


def nack(s: Connection, frame: Frame) -> After:
    requeue = parse_bool(frame.headers, "requeue", True)
    s.settle(_ack_id(s, frame), ack=False, requeue=requeue, command="NACK")
    return None


# -- transactions --------------------------------------------------------------------------

def begin(s: Connection, frame: Frame) -> After:
    tx = _required(frame, "transaction")
    if tx in s.transactions:
        raise StompError("Bad transaction", f"Transaction {tx} is already open.")
    if len(s.transactions) >= MAX_TRANSACTIONS:
        raise StompError("Bad transaction", f"At most {MAX_TRANSACTIONS} transactions may "
                         "be open on one connection.")
    s.transactions[tx] = []
    return None


def _end_tx(s: Connection, frame: Frame) -> list[Frame]:
    return s.end_transaction(_required(frame, "transaction"))


def commit(s: Connection, frame: Frame) -> After:
    for action in _end_tx(s, frame):
        s.replay(action)
    return None


def abort(s: Connection, frame: Frame) -> After:
    _end_tx(s, frame)
    return None


TABLE: dict[Command, Handler] = {
    Command.CONNECT: connect,
    Command.STOMP: connect,
    Command.SEND: send,
    Command.SUBSCRIBE: subscribe,
    Command.UNSUBSCRIBE: unsubscribe,
    Command.ACK: ack,
    Command.NACK: nack,
    Command.BEGIN: begin,
    Command.COMMIT: commit,
    Command.ABORT: abort,
    Command.DISCONNECT: disconnect,
}
