"""CONNECT and the end of a connection: login, client id, takeover, clean or resumed
session, CONNACK; then, when the connection leaves CONNECTED, its session kept or discarded
and its will published.

Persistent sessions map onto the core as RabbitMQ maps them: a durable queue with
`x-expires` = session expiry (capped by `mqtt.max_session_expiry`), bindings from
`amq.topic` that survive a restart. A will with a delay (MQTT 5) waits in a queue
`mqtt-will-<client id>` whose message TTL is the delay and whose dead-letter exchange is
`amq.topic` with the will's routing key, so the core's clock publishes it; a reconnect
deletes that queue before it fires [MQTT-3.1.3-9]. Such a delayed will is not retained
(as in RabbitMQ); an immediate one is.

A session belongs to the user who made it. A CONNECT by another user with the same client
id takes the connection over as the spec says, but never the session: it is handled as a
Clean Start (the old session, its queue and its messages are discarded; session present
is 0), so the new user sees nothing queued for the old one. Discarding a session that has a
queue is deleting that queue, so it needs the configure permission on it; without that the
CONNECT is refused (not authorized) and the old session stays as it was. Every check of a
CONNECT (the will's publish, a delayed will's queue, discarding) comes before any of it is
done (`gateway.auth.access`).

In front of a RabbitMQ cluster (`--backend rabbitmq`, `MQTTRegistry.cluster` set) a
session lives in RabbitMQ, not in one node: a CONNECT for a client id whose session this
node does not hold asks RabbitMQ for it (`_look_up`, in a worker thread like a password
check), makes the node's proxies of its queue and bindings (`_materialise`), and goes on
as for a session read back at start (`_recover`: the bindings are the subscriptions, their
arguments the options). A clean start deletes RabbitMQ's queue instead, without asking. An
accepted CONNECT tells the other nodes, which close their connection of that client id
and forget their proxies (`taken_over_elsewhere`); RabbitMQ's single active consumer on
the session queue keeps the two nodes from delivering at once meanwhile. A session's
owner is not known across nodes: a user with configure and read permission on the queue
resumes it, as one read back from a data directory written before owners were recorded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.auth import access
from gateway.core.errors import AccessRefused, BrokerError
from protocols.mqtt import persist
from protocols.mqtt.delivery import attach, attach_shared, resend_inflight
from protocols.mqtt.frames import (
    CONNACK_311,
    MQTT_5,
    Connack,
    Connect,
    Properties,
    ReasonCode,
)
from protocols.mqtt.handlers import route_publish
from protocols.mqtt.machine import HANDSHAKE, ConnState, Local
from protocols.mqtt.mapping import binding_key_to_filter, to_core, topic_to_routing_key
from protocols.mqtt.session_state import (
    SessionState,
    SubOptions,
    session_queue_name,
    will_queue_name,
)

if TYPE_CHECKING:
    from gateway.auth.service import LoginRefused, User
    from gateway.core.vhost import VirtualHost
    from protocols.mqtt.connection import Connection
    from protocols.mqtt.registry import Cluster, FoundSession, MQTTRegistry

log = logging.getLogger("gateway.mqtt")
NEVER = 0xFFFFFFFF


def _refuse(s: Connection, reason: ReasonCode, text: str) -> None:
    log.info("connection %s: CONNECT refused: %s", s.name, text)
    if s.version == MQTT_5:
        s.send(Connack(int(reason), False, Properties(reason_string=text[:200])))
    else:
        s.send(Connack(int(CONNACK_311.get(reason, 3))))
    s.transition(Local.REFUSE)


def new_client_id() -> str:
    return "gw-" + os.urandom(9).hex()


def _login(s: Connection, c: Connect, then: Callable[[], None]) -> None:
    """Log the client in; `then` continues the CONNECT once the user and vhost are set
    (at once, or after a slow password check that the I/O layer runs, see `login`)."""
    cfg = s.config
    vhost_name = cfg.default_vhost
    if c.username is None and c.password is None and s.cert_user is not None:
        # RabbitMQ's mqtt.ssl_cert_login: the certificate names the user, no password
        try:
            user = s.auth.authenticate_certificate(s.cert_user, loopback=s.loopback,
                                                   mechanism="MQTT")
        except BrokerError as err:
            log.info("connection %s: login refused: %s", s.name, getattr(err, "reason", err))
            _refuse(s, ReasonCode.NOT_AUTHORIZED, "certificate user refused")
            return
        _enter(s, user, vhost_name, then)
        return
    if c.username is None:
        if not cfg.allow_anonymous or c.password is not None:
            _refuse(s, ReasonCode.BAD_USER_NAME_OR_PASSWORD, "credentials required")
            return
        anonymous = s.auth.user(cfg.anonymous_user)
        if anonymous is None or (anonymous.name in s.loopback_users and not s.loopback):
            _refuse(s, ReasonCode.NOT_AUTHORIZED, "anonymous login refused")
            return
        _enter(s, anonymous, vhost_name, then)
        return
    name = c.username
    if ":" in name:  # RabbitMQ's `vhost:user`
        vhost_name, name = name.split(":", 1)
    try:
        password = (c.password or b"").decode("utf-8")
    except UnicodeDecodeError:
        password = ""

    def logged_in(result: User | LoginRefused) -> None:
        if s.machine.state not in HANDSHAKE:
            return  # the connection went meanwhile
        if isinstance(result, BrokerError):
            _refuse(s, ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")
            return
        _enter(s, result, vhost_name, then)

    check = s.auth.login(name, password, peer=s.peer[0], loopback=s.loopback,
                         protocol="MQTT", mechanism="MQTT", now=s.clock(), then=logged_in)
    if check is not None:  # `logged_in` is called once the I/O layer has run it
        s.password_check = check
        s.transition(Local.PASSWORD_CHECK)


def _enter(s: Connection, user: User, vhost_name: str, then: Callable[[], None]) -> None:
    try:
        s.auth.check_vhost(user, vhost_name)
    except BrokerError as err:
        _refuse(s, ReasonCode.NOT_AUTHORIZED, err.text)
        return
    try:
        s.admit(s, user.name, vhost_name)
    except BrokerError as err:  # a connection limit: 0x97, or 3 (server unavailable) on 3.1.1
        _refuse(s, ReasonCode.QUOTA_EXCEEDED, err.text)
        return
    s.vhost = s.broker.vhost(vhost_name)
    s.user = user
    then()


def connect(s: Connection, c: Connect) -> None:
    v5 = c.protocol_level == MQTT_5
    props = Properties()
    client_id = c.client_id
    if not client_id:
        if not c.clean_start and not v5:
            _refuse(s, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client id needs a clean session [MQTT-3.1.3-8]")
            return
        client_id = new_client_id()
        if v5:
            props = Properties(assigned_client_identifier=client_id)
    if len(client_id.encode("utf-8")) > 200:
        _refuse(s, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        return
    if c.will is not None and c.will.properties.payload_format_indicator == 1:
        try:
            c.will.payload.decode("utf-8")
        except UnicodeDecodeError:
            _refuse(s, ReasonCode.PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8")
            return
    if v5 and c.properties.authentication_method is not None:
        # no enhanced authentication method is offered [MQTT-4.12.0-1]
        _refuse(s, ReasonCode.BAD_AUTHENTICATION_METHOD,
                f"authentication method {c.properties.authentication_method!r} not supported")
        return
    _login(s, c, lambda: _connected(s, c, client_id, props))


def _will_refused(s: Connection, c: Connect, client_id: str, expiry: int) -> str | None:
    """Why the CONNECT's will may not be published (None: it may)."""
    will = c.will
    if will is None:
        return None
    assert s.user is not None and s.vhost is not None
    try:
        access.publish(s.auth, s.user, s.vhost, "amq.topic",
                       topic_to_routing_key(will.topic), client_id=client_id)
        if min(will.properties.will_delay_interval or 0, expiry) > 0:
            access.declare_queue(s.auth, s.user, s.vhost, will_queue_name(client_id),
                                 arguments=_will_queue_arguments(1, "will"))
    except AccessRefused as err:
        return f"will refused: {err.text}"
    return None


def _foreign(s: Connection, st: SessionState | None, clean_start: bool) -> bool:
    """Whether the session kept under this client id is another user's (so this CONNECT
    must not resume it). A session read back from a data directory written before owners
    were recorded is adopted, as RabbitMQ would resume it, by a user who may declare and
    consume its queue."""
    assert s.user is not None and s.vhost is not None
    owner = st.owner if st is not None else s.registry.owners.get(s.key)
    if owner:
        return owner != s.user.name
    if st is not None or clean_start:
        return False
    name = session_queue_name(s.client_id)
    if name not in s.vhost.queues:
        return False
    try:
        access.declare_queue(s.auth, s.user, s.vhost, name)
        access.consume(s.auth, s.user, s.vhost, name)
    except AccessRefused:
        return True
    return False


def _connected(s: Connection, c: Connect, client_id: str, props: Properties,
               looked_up: bool = False) -> None:
    """CONNECT, after the login: the session, CONNACK, and what a resumed session held."""
    cfg = s.config
    v5 = c.protocol_level == MQTT_5
    assert s.vhost is not None and s.user is not None
    if v5:
        expiry = c.properties.session_expiry_interval or 0
    else:
        expiry = 0 if c.clean_start else cfg.max_session_expiry
    granted_expiry = min(expiry, cfg.max_session_expiry)
    refused = _will_refused(s, c, client_id, granted_expiry)
    if refused is not None:
        _refuse(s, ReasonCode.NOT_AUTHORIZED, refused)
        return
    cluster = s.registry.cluster
    if cluster is not None and not looked_up and not _held(s, client_id):
        # in front of RabbitMQ, a session this node does not hold: RabbitMQ's is the one
        if will_queue_name(client_id) not in s.vhost.queues:
            cluster.discard(will_queue_name(client_id))  # a delayed will [MQTT-3.1.3-9]
        if not (c.clean_start and _may_delete(s, session_queue_name(client_id))):
            _look_up(s, c, client_id, props, cluster)
            return
        cluster.discard(session_queue_name(client_id))  # a clean start ends it, if any
    s.client_id = client_id
    key = s.key
    now = s.clock()
    for expired in s.registry.sweep(now):
        persist.forget(s.registry, expired)
    st = s.registry.sessions.get(key)
    clean = c.clean_start or _foreign(s, st, c.clean_start)
    queue_name = session_queue_name(client_id)
    if (clean or (st is not None and st.expired(now))) and queue_name in s.vhost.queues:
        try:  # discarding the session deletes its queue
            access.delete_queue(s.auth, s.user, s.vhost, queue_name)
        except AccessRefused as err:
            _refuse(s, ReasonCode.NOT_AUTHORIZED, f"session not discarded: {err.text}")
            return
    old = s.registry.active.get(key)
    if old is not None and old is not s:
        old.taken_over()
    # a new connection cancels a delayed will of the same client [MQTT-3.1.3-9]
    s.vhost.delete_queue(will_queue_name(client_id))
    if v5 and granted_expiry != expiry:
        props = _with(props, session_expiry_interval=granted_expiry)

    st = s.registry.sessions.get(key)
    if st is not None and (clean or st.expired(now)):
        discard(s, st)
        st = None
    elif st is None and clean:
        # a session from before a restart, not resumed: it ends here [MQTT-3.1.2-4]
        persist.forget_dormant(s.registry, *key)
        s.vhost.delete_queue(queue_name)
    if st is None and not clean:
        st = _recover(s, client_id)
    present = st is not None and not clean
    if st is None:
        st = SessionState(s.vhost.name, client_id)
        s.registry.sessions[key] = st
    st.owner = s.user.name
    st.expiry = granted_expiry
    persist.own(s.registry, st)
    st.disconnected_at = None
    s.st = st
    s.registry.active[key] = s

    s.keepalive = c.keepalive
    if cfg.max_keepalive and (c.keepalive == 0 or c.keepalive > cfg.max_keepalive):
        s.keepalive = cfg.max_keepalive
        if v5:
            props = _with(props, server_keep_alive=s.keepalive)
    if v5:
        cp = c.properties
        s.client_receive_maximum = cp.receive_maximum or 65535
        s.client_max_packet = cp.maximum_packet_size
        s.client_alias_maximum = cp.topic_alias_maximum or 0
        props = _with(props, topic_alias_maximum=cfg.topic_alias_maximum,
                      maximum_packet_size=cfg.max_packet_size,
                      receive_maximum=cfg.receive_maximum)
    s.will = c.will
    s.transition(Local.ACCEPT)
    s.send(Connack(0, present, props))
    if cluster is not None:
        cluster.connected(s.vhost.name, client_id)
    log.info("connection %s: MQTT %s session %s (%s)", s.name,
             "5.0" if v5 else "3.1.1", client_id, "resumed" if present else "new")
    if present:
        resend_inflight(s)
    queue = s.vhost.queues.get(session_queue_name(client_id))
    if queue is not None:
        attach(s, queue)
    for group, topic_filter, opts in list(st.shared.values()):
        attach_shared(s, group, topic_filter, opts)


def _held(s: Connection, client_id: str) -> bool:
    """Whether this node holds the client id's session (state or queue)."""
    assert s.vhost is not None
    return ((s.vhost.name, client_id) in s.registry.sessions
            or session_queue_name(client_id) in s.vhost.queues)


def _may_delete(s: Connection, queue: str) -> bool:
    assert s.user is not None and s.vhost is not None
    try:
        access.delete_queue(s.auth, s.user, s.vhost, queue)
    except AccessRefused:
        return False
    return True


def _look_up(s: Connection, c: Connect, client_id: str, props: Properties,
             cluster: Cluster) -> None:
    """In front of RabbitMQ: the session is not held here, so ask RabbitMQ for it (in a
    worker thread, as a password check; input waits meanwhile), make this node's proxies of
    what it has, then go on with the CONNECT as for a session read back at start."""

    def found(answer: FoundSession | None) -> None:
        if s.machine.state not in HANDSHAKE:
            return  # the connection went meanwhile
        if answer is None:
            _refuse(s, ReasonCode.SERVER_UNAVAILABLE, "session lookup: RabbitMQ did not answer")
            return
        if _materialise(s, c, client_id, answer):
            _connected(s, c, client_id, props, looked_up=True)

    s.password_check = cluster.lookup(client_id, not c.clean_start, found)
    if s.machine.state is ConnState.CONNECT_WAIT:
        s.transition(Local.PASSWORD_CHECK)


def _materialise(s: Connection, c: Connect, client_id: str, answer: FoundSession) -> bool:
    """Declare and bind here what RabbitMQ has of the session (each declare and bind is
    sent upstream too, equal to what is there, so a no-op): the session queue with its
    subscriptions, which `_recover` turns into the session. A clean session's queue (not
    durable) is no session to resume: it is deleted. False: the CONNECT was refused."""
    vh = s.vhost
    assert vh is not None and s.user is not None
    now = s.clock()
    name = session_queue_name(client_id)
    try:
        found = answer.queue
        if found is None or name in vh.queues:
            return True
        try:  # resuming it declares it, and discarding it deletes it: configure either way
            access.declare_queue(s.auth, s.user, vh, name)
        except AccessRefused as err:
            _refuse(s, ReasonCode.NOT_AUTHORIZED, f"session not taken: {err.text}")
            return False
        cluster = s.registry.cluster
        assert cluster is not None
        with cluster.as_found(name):
            queue = vh.declare_queue(name, durable=found.durable,
                                     auto_delete=found.auto_delete, arguments=found.arguments,
                                     now=now)
        if not found.durable:
            vh.delete_queue(name)
            return True
        for key, args in found.bindings:
            vh.bind(queue, "amq.topic", key, args)
            if SubOptions.from_args(args) is None:
                # a binding without options (RabbitMQ's MQTT plugin makes them): QoS 1, as
                # the queue's name says; bound again with them (before the old one goes)
                vh.bind(queue, "amq.topic", key, SubOptions(1).binding_args())
                vh.unbind(queue, "amq.topic", key, args)
    except BrokerError as err:
        _refuse(s, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, f"session not taken: {err.text}")
        return False
    return True


def taken_over_elsewhere(registry: MQTTRegistry, vhost: VirtualHost | None,
                         client_id: str) -> bool:
    """Another gateway node accepted a CONNECT with this client id: the connection here,
    if any, is closed as taken over (DISCONNECT 0x8E on MQTT 5, its will published) and
    what this node holds of the session is forgotten, RabbitMQ's queue left as it is: the
    other node owns it now, and a later CONNECT here asks RabbitMQ again. True if a
    connection was closed."""
    if vhost is None or registry.cluster is None:
        return False
    key = (vhost.name, client_id)
    name = session_queue_name(client_id)
    with registry.cluster.local_only(name):
        old = registry.active.get(key)
        if old is not None:
            old.taken_over(elsewhere=True)
        st = registry.sessions.pop(key, None)
        if st is not None:
            persist.forget(registry, st)  # its owner and packet-id records here
        else:
            persist.forget_dormant(registry, *key)
        vhost.delete_queue(name)
    return old is not None


def _with(props: Properties, **changes: object) -> Properties:
    return replace(props, **changes)  # type: ignore[arg-type]


def _recover(s: Connection, client_id: str) -> SessionState | None:
    """After a broker restart: the session's durable queue and its bindings, and the QoS 2
    exchanges it had open (``persist.py``)."""
    assert s.vhost is not None
    queue = s.vhost.queues.get(session_queue_name(client_id))
    records = s.registry.dormant.pop(s.key, None)
    if queue is None and not records:
        return None
    st = SessionState(s.vhost.name, client_id)
    for binding in queue.bound_by if queue is not None else ():
        if binding.source.name != "amq.topic":
            continue
        opts = SubOptions.from_args(dict(binding.arguments))
        if opts is not None:
            st.subscriptions[binding_key_to_filter(binding.routing_key)] = opts
    if records:
        persist.resume(s, st, queue, records)
    s.registry.sessions[s.key] = st
    return st


def discard(s: Connection, st: SessionState) -> None:
    """End a session for good: its queue, bindings and in-flight messages go."""
    assert s.vhost is not None
    for out in st.outgoing.values():
        if out.entry is not None and not out.entry.queue.deleted:
            out.entry.queue.requeue([out.entry], s.clock())
    persist.forget(s.registry, st)
    st.outgoing.clear()
    s.vhost.delete_queue(session_queue_name(st.client_id))
    s.registry.sessions.pop((st.vhost, st.client_id), None)


def end(s: Connection, *, publish_will: bool) -> None:
    """The connection left CONNECTED: detach from the core, keep or end the session, will."""
    st = s.st
    vhost = s.vhost
    if st is None or vhost is None:
        return
    now = s.clock()
    if s.registry.active.get(s.key) is s:
        del s.registry.active[s.key]
    _detach(s, now)
    # detach from the shared groups first: a requeue dispatches at once, and must not
    # hand the message straight back to this connection after its DISCONNECT
    for consumer in list(s.shared_consumers.values()):
        vhost.cancel(consumer.queue, consumer, now)
    s.shared_consumers.clear()
    for pid, out in list(st.outgoing.items()):
        # a shared subscription's messages go to another member of the group
        if out.entry is not None and out.entry.queue.name != session_queue_name(s.client_id):
            del st.outgoing[pid]
            out.entry.queue.requeue([out.entry], now)
    if publish_will and s.will is not None:
        _publish_will(s, st.expiry)
        _detach(s, now)  # a Response Topic in the will declared and attached the queue
    s.will = None
    if st.expiry == 0:
        discard(s, st)
    else:
        st.disconnected_at = now


def _detach(s: Connection, now: float) -> None:
    """Stop consuming the session queue, if this connection does."""
    if s.consumer is not None:
        s.consumer.queue.remove_consumer(s.consumer, now)
        s.consumer = None


def _will_queue_arguments(delay: int, routing_key: str) -> dict[str, object]:
    return {"x-message-ttl": delay * 1000, "x-dead-letter-exchange": "amq.topic",
            "x-dead-letter-routing-key": routing_key, "x-expires": delay * 1000 + 60_000}


def _publish_will(s: Connection, session_expiry: int) -> None:
    will = s.will
    assert will is not None and s.vhost is not None
    delay = min(will.properties.will_delay_interval or 0, session_expiry)
    if delay <= 0:
        route_publish(s, will.topic, will.payload, will.qos, will.retain,
                      replace(will.properties, will_delay_interval=None))
        return
    props = replace(will.properties, message_expiry_interval=None, will_delay_interval=None)
    rk = topic_to_routing_key(will.topic)
    name = will_queue_name(s.client_id)
    args = _will_queue_arguments(delay, rk)
    assert s.user is not None
    try:  # checked at CONNECT; permissions may have changed since
        access.declare_queue(s.auth, s.user, s.vhost, name, arguments=args)
    except AccessRefused as err:
        log.info("connection %s: delayed will dropped: %s", s.name, err.text)
        return
    queue = s.vhost.declare_queue(name, arguments=args, now=s.clock())
    message = to_core(will.topic, will.payload, will.qos, props, own_queue=None,
                      message_id=s.vhost.next_message_id())
    queue.enqueue(message, s.clock())
