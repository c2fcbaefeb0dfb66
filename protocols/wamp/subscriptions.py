"""A session's subscriptions: each is a queue of its own bound to `amq.topic`.

The queue is server-named, exclusive to the session and auto-deleted with it; its consumer
takes without acknowledgement (WAMP events have no acks) and turns each message into an
EVENT, after the WAMP-only filters that the core does not know: the prefix of a prefix
subscription (a string prefix), publisher exclusion (`exclude_me`, by the publishing
session in a header) and the publisher's black/whitelists. A subscriber that does not read
gets no credit, and its queue keeps at most `MAX_BACKLOG` events (older ones are dropped).
The session is seen as `context.SessionContext`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.info import ConsumerOwner
from protocols.wamp.context import SessionContext
from protocols.wamp.frames import Event
from protocols.wamp.mapping import (
    FILTER_HEADERS,
    H_PAYLOAD,
    H_PUBLICATION,
    H_SESSION,
    ORIGIN,
    TOPIC_EXCHANGE,
    TopicBinding,
    decode_payload,
    identity_details,
    routing_key_topic,
)
from protocols.wamp.router import global_id

if TYPE_CHECKING:
    from gateway.core.message import Message
    from gateway.core.queue import Entry, Queue

MAX_BACKLOG: Final = 10000  # events kept for a subscriber that does not read
PAYLOAD_CACHE: Final = "wamp.payload"
PUBLICATION_CACHE: Final = "wamp.publication"


def publication_id(message: Message) -> int:
    """The publication id of a message: the WAMP publisher's, or one made once per message
    for messages from other protocols (so every subscriber sees the same id)."""
    pub = message.cache.get(PUBLICATION_CACHE)
    if pub is None:
        headers = message.properties.headers or {}
        value = headers.get(H_PUBLICATION)
        pub = value if isinstance(value, int) and not isinstance(value, bool) else global_id()
        message.cache[PUBLICATION_CACHE] = pub
    return int(pub)


def message_payload(message: Message) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The message as WAMP args/kwargs, decoded once per message."""
    cached = message.cache.get(PAYLOAD_CACHE)
    if cached is None:
        props = message.properties
        marker = (props.headers or {}).get(H_PAYLOAD)
        cached = message.cache[PAYLOAD_CACHE] = decode_payload(
            message.body, props.content_type, marker, message.origin == ORIGIN)
    return cached


class Subscriber:
    """One subscription of one session: the core's `Consumer` of its queue."""

    __slots__ = ("session", "subs", "id", "topic", "match", "binding", "queue", "tag",
                 "no_ack", "exclusive", "priority")

    def __init__(self, subs: SubscriptionState, sub_id: int, topic: str, match: str,
                 binding: TopicBinding, queue: Queue) -> None:
        self.session = subs.session
        self.subs = subs
        self.id = sub_id
        self.topic = topic
        self.match = match
        self.binding = binding
        self.queue = queue
        self.tag = f"wamp-subscription-{sub_id}"
        self.no_ack = True
        self.exclusive = False
        self.priority = 0

    def owner(self) -> ConsumerOwner:
        return ConsumerOwner(self.session)

    def can_take(self) -> bool:
        return not self.session.output_blocked

    def deliver(self, entry: Entry) -> None:
        self.subs.event(self, entry.message)

    def cancelled(self) -> None:
        self.subs.revoked(self)


def _in(value: Any, lst: Any) -> bool:
    return isinstance(lst, list) and value in lst


class SubscriptionState:
    def __init__(self, session: SessionContext) -> None:
        self.session = session
        self.by_id: dict[int, Subscriber] = {}
        self.by_topic: dict[tuple[str, str], Subscriber] = {}

    def subscribe(self, topic: str, match: str, binding: TopicBinding) -> int:
        """Subscribe (or find the existing subscription of this session): its id."""
        s = self.session
        existing = self.by_topic.get((topic, match))
        if existing is not None:
            return existing.id
        assert s.vhost is not None and s.realm is not None
        vh = s.vhost
        now = s.clock()
        queue = vh.declare_queue("", exclusive=True, auto_delete=True, owner=s, now=now,
                                 arguments={"x-max-length": MAX_BACKLOG})
        try:
            vh.bind(queue, TOPIC_EXCHANGE, binding.key)
        except BaseException:
            vh.remove_queue(queue)
            raise
        sub_id = s.realm.subscription_id(topic, match)
        sub = Subscriber(self, sub_id, topic, match, binding, queue)
        self.by_id[sub_id] = sub
        self.by_topic[(topic, match)] = sub
        vh.consume(queue, sub, exclusive=False, now=now)
        return sub_id

    def unsubscribe(self, sub_id: int) -> bool:
        sub = self.by_id.pop(sub_id, None)
        if sub is None:
            return False
        self._drop(sub)
        return True

    def _drop(self, sub: Subscriber) -> None:
        s = self.session
        self.by_topic.pop((sub.topic, sub.match), None)
        if s.realm is not None:
            s.realm.release_subscription_id(sub.topic, sub.match)
        if not sub.queue.deleted:
            sub.queue.vhost.remove_queue(sub.queue)

    def revoked(self, sub: Subscriber) -> None:
        """Its queue was deleted (by an operator): forget it (no UNSUBSCRIBED is sent, as
        the client did not announce subscription revocation to rely on)."""
        if self.by_id.get(sub.id) is sub:
            del self.by_id[sub.id]
            self.by_topic.pop((sub.topic, sub.match), None)
            if self.session.realm is not None:
                self.session.realm.release_subscription_id(sub.topic, sub.match)

    def release(self) -> None:
        for sub in list(self.by_id.values()):
            self._drop(sub)
        self.by_id.clear()
        self.by_topic.clear()

    def kick(self) -> None:
        now = self.session.clock()
        for sub in list(self.by_id.values()):
            sub.queue.dispatch(now)

    # -- delivery ----------------------------------------------------------------------------

    def _excluded(self, headers: dict[str, Any]) -> bool:
        s = self.session
        me, authid, authrole = s.session_id, s.authid, s.authrole
        if headers.get(H_SESSION) == me:  # set by a publisher with exclude_me (default)
            return True
        h = FILTER_HEADERS
        if _in(me, headers.get(h["exclude"])) or _in(authid, headers.get(h["exclude_authid"])) \
                or _in(authrole, headers.get(h["exclude_authrole"])):
            return True
        for key, mine in (("eligible", me), ("eligible_authid", authid),
                          ("eligible_authrole", authrole)):
            allowed = headers.get(h[key])
            if allowed is not None and not _in(mine, allowed):
                return True
        return False

    def event(self, sub: Subscriber, message: Message) -> None:
        if not sub.binding.accepts(message.routing_key):
            return
        headers = message.properties.headers or {}
        if headers and message.origin == ORIGIN and self._excluded(headers):
            return
        details: dict[str, Any] = {}
        if sub.match != "exact":
            details["topic"] = routing_key_topic(message.routing_key)
        details.update(identity_details(message.origin, headers, "publisher"))
        args, kwargs = message_payload(message)
        self.session.send(Event(sub.id, publication_id(message), details, args, kwargs))
