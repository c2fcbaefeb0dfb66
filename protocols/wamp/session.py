"""One WAMP session (and the transport it rides on): messages in -> core calls, and back.

Theory of operation
-------------------
The WebSocket layer hands every received WebSocket message to `receive_message`; the codec
turns it into a typed message, which is handled to completion, synchronously, against the
core (`handlers.py` has one function per message type; `handlers.TABLE` is the table of
contents). What must go to the client is encoded at once and queued as whole messages in
the shared outbox (`protocols.outbox.MessageOutbox`: JSON as text, MessagePack as bytes),
which the WebSocket framing layer takes with `messages_to_send`, one WebSocket message
each; `wake` tells it there is something new when another connection's publish produced
it. No I/O and no awaits happen here.

The session's states, the messages each takes and where they lead are `machine.py`'s
tables (`WampMachine`); every message is put to it first.

A message that its state does not accept, or one the codec cannot read, is a protocol
violation (spec "Protocol Errors"): ABORT `wamp.error.protocol_violation`, everything the
session held is released, and the transport closes. A `BrokerError` from the core or auth
becomes an ERROR to that request alone, with a standard URI (`ERROR_URIS`).

Leaving the session (GOODBYE, ABORT, transport loss) releases what it held at once, so a
callee that reconnects does not meet its own stale registration (crossbar's #456): its
subscription queues are deleted, its registrations dropped, calls it was running answered
with `wamp.error.canceled` (or requeued when an AMQP client sent them), and its own calls
forgotten.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from gateway.auth import access
from gateway.auth.passwords import CRA_ITERATIONS, CRA_KEYLEN
from gateway.core.confirms import Confirms
from gateway.core.errors import BrokerError, ReplyCode
from gateway.info import ConnectionInfo
from protocols.admission import Admit, admit_all
from protocols.outbox import MessageOutbox
from protocols.wamp.codec import Serializer, WampCodec
from protocols.wamp.frames import (
    Abort,
    Authenticate,
    Challenge,
    Goodbye,
    Hello,
    Message,
    MessageType,
    ProtocolViolation,
    Welcome,
)
from protocols.wamp.handlers import TABLE
from protocols.wamp.machine import Local, State, WampMachine
from protocols.wamp.router import Realm, WampRouter
from protocols.wamp.rpc import RpcState
from protocols.wamp.subscriptions import SubscriptionState

if TYPE_CHECKING:
    from gateway.auth.login import PendingCheck
    from gateway.auth.service import AuthService, LoginRefused, User
    from gateway.core.broker import Broker
    from gateway.core.vhost import VirtualHost

log = logging.getLogger("gateway.wamp")

HELLO_TIMEOUT: Final = 10.0  # seconds a client has to establish a session


T = MessageType
__all__ = ["ROLES", "State", "WampSession", "broker_cra_lookup"]
PAUSING: Final = frozenset({T.PUBLISH, T.CALL, T.YIELD})  # paused by the memory alarm

# What WELCOME announces: exactly what this router implements (spec "Feature Announcement")
ROLES: Final[dict[str, dict[str, dict[str, bool]]]] = {
    "broker": {"features": {
        "publisher_exclusion": True,
        "publisher_identification": True,
        "pattern_based_subscription": True,
        "subscriber_blackwhite_listing": True,
    }},
    "dealer": {"features": {
        "caller_identification": True,
        "call_canceling": True,
        "call_timeout": True,
        "progressive_call_results": True,
        "shared_registration": True,
    }},
}

# BrokerError reply code -> WAMP error URI
ERROR_URIS: Final[dict[ReplyCode, str]] = {
    ReplyCode.ACCESS_REFUSED: "wamp.error.not_authorized",
    ReplyCode.NOT_ALLOWED: "wamp.error.not_authorized",
    ReplyCode.NOT_FOUND: "wamp.error.no_such_procedure",
    ReplyCode.RESOURCE_LOCKED: "wamp.error.procedure_already_exists",
    ReplyCode.PRECONDITION_FAILED: "wamp.error.invalid_argument",
}

AUTH_METHODS: Final = ("ticket", "wampcra", "anonymous")
AUTH_PROVIDER: Final = "gateway"

# A user's WAMP-CRA key, or None: (HMAC key, salt, iterations, keylen). With a salt, the key
# is the PBKDF2 key of the password that the client derives from the challenge's salt,
# iterations and keylen (the broker stores it when a password is set, see
# `gateway.auth.passwords.CraKey`); without one, the key is the shared secret itself. A
# password hash cannot give either, so a user who has only a hash has no WAMP-CRA.
CraSecret = tuple[bytes, str | None, int, int]
CraLookup = Callable[[str], CraSecret | None]
MAX_HELD: Final = 64  # messages a client may send while its password is being checked
CRA_REFUSED: Final = (
    "WAMP-CRA signature refused: wrong secret or no such user; a user whose password hash "
    "was imported has no WAMP-CRA key (a hash cannot check a WAMP-CRA signature): log in "
    "with ticket, or set the password on this broker (gateway ctl change_password)")


def _no_cra(_: str) -> CraSecret | None:
    return None


def decoy_cra_secret(secret: bytes, authid: str) -> CraSecret:
    """The WAMP-CRA key and salt shown for a name that has no key (no such user, or one with
    only a password hash): made from the broker's `secret` and the name, so the same name
    always gets the same salt, shaped like a real one (`derive_cra_key`: 16 random bytes,
    URL-safe base64), with the same iterations and key length; no client can sign with it."""
    name = authid.encode("utf-8", "surrogatepass")
    salt = hmac.new(secret, b"wampcra-salt\x00" + name, hashlib.sha256).digest()[:16]
    key = hmac.new(secret, b"wampcra-key\x00" + name, hashlib.sha256).digest()
    return (base64.b64encode(key), base64.urlsafe_b64encode(salt).rstrip(b"=").decode("ascii"),
            CRA_ITERATIONS, CRA_KEYLEN)


def cra_signature(key: bytes, challenge: str) -> str:
    return base64.b64encode(
        hmac.new(key, challenge.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def broker_cra_lookup(auth: AuthService) -> CraLookup:
    """WAMP-CRA keys of broker users: the salted key stored when their password was set."""
    def lookup(authid: str) -> CraSecret | None:
        key = auth.wampcra_key(authid)
        if key is None:
            return None
        return key.key.encode("ascii"), key.salt, key.iterations, key.keylen

    return lookup


class WampSession(MessageOutbox[bytes | str]):
    protocol_name = "WAMP 2 (WebSocket)"  # as the management API lists connections

    def __init__(
        self,
        broker: Broker,
        auth: AuthService,
        router: WampRouter,
        serializer: Serializer,
        *,
        peer: tuple[str, int],
        loopback: bool,
        clock: Callable[[], float],
        wake: Callable[[], None] = lambda: None,
        allow_anonymous: bool = False,
        anonymous_user: str = "guest",
        loopback_users: Iterable[str] = ("guest",),
        cra_lookup: CraLookup = _no_cra,
        disclose: bool = False,
        max_message_size: int = 16 * 1024 * 1024,
        high_water: int = 1024 * 1024,
        admit: Admit = admit_all,
    ) -> None:
        self.admit = admit
        self.broker = broker
        self.auth = auth
        self.router = router
        self.codec = WampCodec(serializer, max_message_size=max_message_size)
        self.serializer = serializer
        self.peer = peer
        self.loopback = loopback
        self.clock = clock
        self.wake = wake
        self.allow_anonymous = allow_anonymous
        self.anonymous_user = anonymous_user
        self.loopback_users = frozenset(loopback_users)
        self.cra_lookup = cra_lookup
        # disclose every publisher and caller to subscribers and callees, as if each had
        # asked with `disclose_me` (recent autobahn clients cannot ask)
        self.disclose = disclose
        self.high_water = high_water
        self.machine = WampMachine()
        self.started = clock()
        self.session_id = 0
        self.realm: Realm | None = None
        self.vhost: VirtualHost | None = None
        self.user: User | None = None
        self.authid = ""
        self.authrole = ""
        self.authmethod = ""
        self.client_roles: dict[str, Any] = {}
        self.client_properties: dict[str, Any] = {}
        self._pending_auth: tuple[str, Hello, str] | None = None  # method, hello, expected
        # a slow password check (ticket) the I/O layer runs in a thread; the messages
        # that arrive meanwhile wait in `_held`
        self.password_check: PendingCheck | None = None
        self._held: deque[bytes | str] = deque()
        self.init_outbox()
        self.alarm = False
        self.read_paused = False
        self.close_reason: str | None = None
        self._leaving = False
        self.subs = SubscriptionState(self)
        self.rpc = RpcState(self)
        # answers that wait for RabbitMQ (`--backend rabbitmq`: SUBSCRIBED after the bind,
        # REGISTERED after the procedure's queue is declared, PUBLISHED after the confirm)
        self.answers: Confirms[Message] = Confirms(broker.durable, self)

    # -- I/O boundary ----------------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        """Logged in with a vhost open (the handshake limits no longer apply)."""
        return self.vhost is not None

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def closed(self) -> bool:
        return self.machine.state is State.CLOSED

    def info(self) -> ConnectionInfo:
        """This session as management shows it."""
        return ConnectionInfo(
            self.protocol_name, "wamp", self.peer,
            self.user.name if self.user is not None else None,
            self.vhost.name if self.vhost is not None else None, self.closed,
            self.client_properties, pending_output=self.pending_output,
            blocked=self.read_paused)

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    def credit_returned(self) -> None:
        """The outbox drained below half its mark: subscriptions and calls held back go on."""
        self.subs.kick()
        self.rpc.kick()

    def send(self, msg: Message) -> bool:
        """Queue one message; False when the serializer cannot carry its values."""
        if self._leaving:
            return True
        try:
            data = self.codec.encode(msg)
        except ValueError as exc:
            log.warning("wamp session %d: cannot send %s: %s", self.session_id,
                        msg.TYPE.name, exc)
            return False
        self.emit(data)
        return True

    def receive_message(self, data: bytes | str) -> None:
        if self.closed:
            return
        if self.password_check is not None or self._held:
            if len(self._held) >= MAX_HELD:
                self.abort("wamp.error.protocol_violation", "too many messages before WELCOME")
                return
            self._held.append(data)
            return
        self._receive(data)

    def resume_input(self) -> None:
        """A password check finished: handle the messages that waited for it."""
        while self._held and self.password_check is None and not self.closed:
            self._receive(self._held.popleft())

    def _receive(self, data: bytes | str) -> None:
        try:
            msg = self.codec.decode(data)
            kind = msg.TYPE
            machine = self.machine
            if kind in machine.steady:  # handled in this state, which it leaves as it is
                handler = TABLE.get(kind)
                if handler is not None:
                    if self.alarm and kind in PAUSING:
                        self.read_paused = True
                    handler(self, msg)
                elif isinstance(msg, Hello):
                    self._on_hello(msg)
                elif isinstance(msg, Authenticate):
                    self._on_authenticate(msg)
                return
            before = machine.state
            if machine.process(kind):  # GOODBYE or ABORT: the machine moved on already
                self._leave_by(msg, before)
        except ProtocolViolation as exc:
            self.abort("wamp.error.protocol_violation", exc.text)

    def _leave_by(self, msg: Message, before: State) -> None:
        if isinstance(msg, Abort):
            log.info("wamp session %d: client aborted: %s", self.session_id, msg.reason)
            self._leave()
        elif isinstance(msg, Goodbye) and before is State.ESTABLISHED:
            self.send(Goodbye({}, "wamp.close.goodbye_and_out"))
            self._leave()
            self.started = self.clock()  # the transport may carry a new session (spec)

    def timer(self, now: float) -> None:
        machine = self.machine
        if machine.allows(Local.HELLO_DEADLINE) and self.session_id == 0 \
                and now - self.started > HELLO_TIMEOUT:
            self.abort("wamp.error.timeout", "no HELLO in time")
            return
        if machine.allows(Local.CALL_TIMEOUTS):
            self.rpc.expire(now)

    def next_deadline(self) -> float | None:
        """The earliest time `timer` has something to do (a call timeout), if any."""
        return self.rpc.next_deadline()

    def connection_lost(self) -> None:
        if self.machine.allows(Local.LOST):
            self._leave()
            self.machine.process(Local.LOST)

    def shutdown(self) -> None:
        """Broker shutdown: GOODBYE `wamp.close.system_shutdown`, then close."""
        target = self.machine.target(Local.SHUTDOWN)
        if target is State.CLOSING:
            self.send(Goodbye({"message": "broker shutdown"}, "wamp.close.system_shutdown"))
            self._leave()
            self.machine.process(Local.SHUTDOWN)
        elif target is State.CLOSED:
            self.abort("wamp.close.system_shutdown", "broker shutdown")

    def vhost_deleted(self, name: str) -> None:
        if self.machine.allows(Local.SEND_GOODBYE):
            self.send(Goodbye({"message": f"realm {name} deleted"}, "wamp.close.close_realm"))
            self._leave()
            self.machine.process(Local.SEND_GOODBYE)

    def memory_alarm(self, on: bool) -> None:
        self.alarm = on
        if not on:
            self.read_paused = False

    def flush_confirms(self) -> None:
        """Send the answers whose upstream operations RabbitMQ answered (nothing in WAMP
        waits for a disk of its own: its messages are transient)."""
        for msg in self.answers.confirm():
            self.send(msg)

    def send_when_durable(self, position: int, msg: Message) -> None:
        """Send `msg` once the store (in front of RabbitMQ: the upstream) reached
        `position`, after the answers waiting before it."""
        if not self.answers and self.broker.durable.is_durable(position):
            self.send(msg)
        else:
            self.answers.insert(position, msg)

    def abort(self, reason: str, message: str) -> None:
        if not self.machine.allows(Local.SEND_ABORT):
            return
        log.info("wamp session %s: abort %s: %s", self.name, reason, message)
        self.send(Abort({"message": message}, reason))
        self.close_reason = message
        self._leave()
        self.machine.process(Local.SEND_ABORT)

    # -- joining -----------------------------------------------------------------------------

    def _on_hello(self, msg: Hello) -> None:
        roles = msg.details.get("roles")
        if not isinstance(roles, dict) or not roles or not set(roles) <= {
                "publisher", "subscriber", "caller", "callee"}:
            raise ProtocolViolation("HELLO.Details.roles must name publisher, subscriber, "
                                    "caller and/or callee")
        self.client_roles = roles
        agent = msg.details.get("agent")
        # what the management API shows of the client (as AMQP's client properties)
        self.client_properties = {"roles": sorted(roles), "product": agent
                                  if isinstance(agent, str) else "unknown WAMP client"}
        realm = msg.realm
        if not self.auth.vhost_exists(realm):
            self.abort("wamp.error.no_such_realm", f"no realm (vhost) '{realm}'")
            return
        methods = msg.details.get("authmethods")
        authid = msg.details.get("authid")
        if methods is None:
            methods = ["anonymous"]
        if not isinstance(methods, list) or not isinstance(authid, str | None):
            raise ProtocolViolation("HELLO.Details.authmethods must be a list, authid a "
                                    "string")
        for method in methods:
            if method == "anonymous" and self.allow_anonymous:
                self._login_anonymous(msg)
                return
            if method == "ticket" and authid:
                self._pending_auth = ("ticket", msg, authid)
                self.machine.process(Local.CHALLENGE)
                self.send(Challenge("ticket", {}))
                return
            if method == "wampcra" and authid and self.cra_lookup is not _no_cra:
                # every name gets a challenge of the same shape, whether it is a user with
                # a key, a user with only a hash, or no user at all: nothing about the user
                # shows before the signature is checked
                self._challenge_cra(msg, authid)
                return
        self.abort("wamp.error.no_matching_auth_method" if methods != ["anonymous"]
                   else "wamp.error.not_authorized",
                   f"none of the authentication methods {methods} is available")

    def _login_anonymous(self, hello: Hello) -> None:
        user = self.auth.user(self.anonymous_user)
        if user is None or (user.name in self.loopback_users and not self.loopback):
            self.abort("wamp.error.not_authorized", "anonymous login refused")
            return
        self._join(hello, user, user.name, "anonymous")

    def _challenge_cra(self, hello: Hello, authid: str) -> None:
        self.session_id = self.router.realm(hello.realm).new_session_id()
        found = self.cra_lookup(authid) if self.auth.user(authid) is not None else None
        # a name with no key (no such user, or only a password hash) gets a challenge like
        # a user's, with a salt stable per name, that no signature can answer: names cannot
        # be probed. The challenge names no role: that is known only after the login.
        key, salt, iterations, keylen = found or decoy_cra_secret(self.router.secret, authid)
        challenge = json.dumps({
            "authid": authid, "authmethod": "wampcra", "authprovider": AUTH_PROVIDER,
            "nonce": secrets.token_urlsafe(24),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "session": self.session_id,
        }, separators=(",", ":"))
        extra: dict[str, Any] = {"challenge": challenge}
        if salt is not None:  # else a shared secret: the client signs with it as it is
            extra.update(salt=salt, iterations=iterations, keylen=keylen)
        signature = cra_signature(key, challenge)  # computed alike for every name
        expected = signature if found is not None else ""
        self._pending_auth = ("wampcra", hello, expected)
        self.machine.process(Local.CHALLENGE)
        self.send(Challenge("wampcra", extra))

    def _on_authenticate(self, msg: Authenticate) -> None:
        assert self._pending_auth is not None
        method, hello, expected = self._pending_auth
        self._pending_auth = None
        authid = hello.details.get("authid")
        assert isinstance(authid, str)
        now = self.clock()
        if method == "ticket":
            def logged_in(result: User | LoginRefused) -> None:
                if not self.machine.allows(Local.WELCOME):
                    return  # the transport went meanwhile
                if isinstance(result, BrokerError):
                    self.abort("wamp.error.authentication_failed", result.text)
                    return
                # (the user's name: a token's, not the authid the client sent with it)
                self._join(hello, result, result.name, method)

            # answered at once, or after a slow password check run by the I/O layer
            self.password_check = self.auth.login(
                authid, msg.signature, peer=self.peer[0], loopback=self.loopback,
                protocol="WAMP", mechanism="WAMP-ticket", now=now, then=logged_in)
            return
        if self.auth.login_blocked(self.peer[0], now):
            self.abort("wamp.error.authentication_failed",
                       "too many failed logins from this address; try again later")
            return
        found = self.auth.user(authid)
        if found is None or not expected or not hmac.compare_digest(
                expected.encode(), msg.signature.encode("utf-8", "replace")):
            self.auth.refuse_login(authid, peer=self.peer[0], protocol="WAMP", now=now,
                                   why="WAMP-CRA signature refused", mechanism="WAMP-CRA")
            # the same answer for a wrong secret, an unknown name and a user who has only
            # a password hash (imported from RabbitMQ), so it says what each can do
            self.abort("wamp.error.authentication_failed", CRA_REFUSED)
            return
        if authid in self.loopback_users and not self.loopback:
            self.abort("wamp.error.authentication_failed",
                       f"user '{authid}' can only connect via localhost")
            return
        self._join(hello, found, authid, method)

    @staticmethod
    def _role_of(user: User | None) -> str:
        if user is None:
            return "user"
        return "administrator" if "administrator" in user.tags else "user"

    def _join(self, hello: Hello, user: User, authid: str, method: str) -> None:
        try:
            self.auth.check_vhost(user, hello.realm)
        except BrokerError as err:
            self.abort("wamp.error.not_authorized", err.text)
            return
        try:
            self.admit(self, user.name, hello.realm)
        except BrokerError as err:  # a connection limit
            self.abort("wamp.error.not_authorized", err.text)
            return
        self.user = user
        self.vhost = self.broker.vhost(hello.realm)
        self.realm = self.router.realm(hello.realm)
        if not self.session_id:
            self.session_id = self.realm.new_session_id()
        self.realm.sessions[self.session_id] = self
        self.authid = authid
        self.authrole = "anonymous" if method == "anonymous" else self._role_of(user)
        self.authmethod = method
        self.machine.process(Local.WELCOME)
        self.send(Welcome(self.session_id, {
            "roles": ROLES,
            "realm": hello.realm,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": method,
            "authprovider": AUTH_PROVIDER,
            "agent": "gateway",
        }))

    # -- leaving ---------------------------------------------------------------------------

    def _leave(self) -> None:
        """Release everything the session held (subscriptions, registrations, calls)."""
        if self.realm is None:
            self.session_id = 0
            return
        # what releasing says to this session itself (the answer to a call it made to its
        # own registration, an INTERRUPT of it) is not sent: it has left
        self._leaving = True
        try:
            self.rpc.release()
            self.subs.release()
        finally:
            self._leaving = False
        self.realm.sessions.pop(self.session_id, None)
        self.realm = None
        self.session_id = 0

    # -- helpers for handlers ----------------------------------------------------------------

    def error_uri(self, err: BrokerError, default: str) -> str:
        return ERROR_URIS.get(err.code, default)

    # the permission checks of each operation (`gateway.auth.access`), made before it is done

    def check_publish(self, exchange: str, routing_key: str) -> None:
        """PUBLISH (to amq.topic) and CALL (to the procedure's queue, by the default
        exchange): write on the exchange and the topic write permission."""
        assert self.user is not None and self.vhost is not None
        access.publish(self.auth, self.user, self.vhost, exchange, routing_key)

    def check_subscribe(self, exchange: str, binding_key: str) -> None:
        """SUBSCRIBE: its queue is private (server-named, exclusive, gone with the
        subscription), so read on the exchange and the topic read permission."""
        assert self.user is not None and self.vhost is not None
        access.subscribe_private(self.auth, self.user, self.vhost, exchange=exchange,
                                 binding_key=binding_key)

    def check_register(self, procedure: str) -> None:
        """REGISTER: the procedure's queue is declared and consumed (configure, read)."""
        assert self.user is not None and self.vhost is not None
        access.declare_queue(self.auth, self.user, self.vhost, procedure)
        access.consume(self.auth, self.user, self.vhost, procedure)

    def check_topic(self, permission: str, routing_key: str) -> None:
        """RabbitMQ's topic permission on amq.topic for a routing (or binding) key."""
        assert self.user is not None and self.vhost is not None
        access.require_topic(self.auth, self.user, self.vhost, "amq.topic",
                             permission, routing_key)  # type: ignore[arg-type]

    def check(self, permission: str, kind: str, name: str) -> None:
        """One permission; the operations use `gateway.auth.access`'s functions."""
        assert self.user is not None and self.vhost is not None
        access.require(self.auth, self.user, self.vhost, permission,  # type: ignore[arg-type]
                       kind, name)  # type: ignore[arg-type]
