"""The permission decision of every operation, made here and nowhere else.

Each function below is one operation in RabbitMQ's terms ("How Permissions Work" in its
access-control guide): it names the configure / write / read permissions and the topic
permission the operation needs, checks them all, and raises the core's `AccessRefused`
(403) at the first one missing. Every path calls them: the AMQP handlers, MQTT, STOMP,
WAMP and the management API. A path calls the function *before* it creates, binds,
routes or takes anything, so a refused operation leaves nothing behind (a server-named
queue is named first, checked under that name, then declared under it).

| operation | configure | write | read | topic |
|---|---|---|---|---|
| declare exchange | exchange | alternate exchange (if any) | exchange (if an AE) | |
| delete exchange | exchange | | | |
| declare queue | queue | dead-letter exchange (if any) | queue (if a DLX) | |
| delete queue | queue | | | |
| bind / unbind | | destination | source exchange | read, binding key (1) |
| publish | | exchange | | write, routing key (1) |
| consume / get | | | queue | |
| purge | | | queue | |
| subscribe (declare + bind + consume) | queue | queue | exchange, queue | read, binding key |

(1) when the exchange (the source of a binding) is a topic exchange.
Passive declares need no permission (they only ask whether a thing exists), as in
RabbitMQ. The primitive questions (`AuthService.allowed`, `topic_allowed`) stay in the
service, so any other source of grants (token scopes) is consulted the same way here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from gateway.auth.service import AuthService, Permission, ResourceKind, User
    from gateway.core.vhost import VirtualHost

__all__ = [
    "bind",
    "consume",
    "declare_exchange",
    "declare_queue",
    "delete_exchange",
    "delete_queue",
    "get",
    "publish",
    "purge",
    "require",
    "require_topic",
    "subscribe",
    "subscribe_private",
    "unbind",
]

TOPIC: Final = "topic"
ALTERNATE_EXCHANGE: Final = "alternate-exchange"
DEAD_LETTER_EXCHANGE: Final = "x-dead-letter-exchange"


# -- the two primitives every operation is made of -----------------------------------------

def require(auth: AuthService, user: User, vhost: VirtualHost, permission: Permission,
            kind: ResourceKind, name: str) -> None:
    """One configure / write / read permission on a queue or exchange, or 403."""
    auth.check(user, vhost.name, permission, name, resource_kind=kind)


def require_topic(auth: AuthService, user: User, vhost: VirtualHost, exchange: str,
                  permission: Permission, key: str, *, client_id: str | None = None) -> None:
    """The topic permission on `key` when `exchange` is a topic exchange (RabbitMQ checks
    only those; an exchange that does not exist is left to fail with 404 after)."""
    x = vhost.exchanges.get(exchange)
    if x is not None and x.type == TOPIC:
        auth.check_topic(user, vhost.name, exchange, permission, key, client_id=client_id)


# -- exchanges -----------------------------------------------------------------------------

def declare_exchange(auth: AuthService, user: User, vhost: VirtualHost, name: str, *,
                     arguments: Mapping[str, Any] | None = None) -> None:
    """exchange.declare (not passive), the API's PUT of an exchange."""
    require(auth, user, vhost, "configure", "exchange", name)
    ae = (arguments or {}).get(ALTERNATE_EXCHANGE)
    if isinstance(ae, str):
        require(auth, user, vhost, "write", "exchange", ae)
        require(auth, user, vhost, "read", "exchange", name)


def delete_exchange(auth: AuthService, user: User, vhost: VirtualHost, name: str) -> None:
    require(auth, user, vhost, "configure", "exchange", name)


# -- queues --------------------------------------------------------------------------------

def declare_queue(auth: AuthService, user: User, vhost: VirtualHost, name: str, *,
                  arguments: Mapping[str, Any] | None = None) -> None:
    """queue.declare (not passive) under `name`, which for a server-named queue is the name
    the server is about to give it; every queue a protocol makes for its clients."""
    require(auth, user, vhost, "configure", "queue", name)
    dlx = (arguments or {}).get(DEAD_LETTER_EXCHANGE)
    if isinstance(dlx, str):
        require(auth, user, vhost, "write", "exchange", dlx)
        require(auth, user, vhost, "read", "queue", name)


def delete_queue(auth: AuthService, user: User, vhost: VirtualHost, name: str) -> None:
    require(auth, user, vhost, "configure", "queue", name)


def consume(auth: AuthService, user: User, vhost: VirtualHost, queue: str) -> None:
    """basic.consume, and every subscription reading a queue."""
    require(auth, user, vhost, "read", "queue", queue)


def get(auth: AuthService, user: User, vhost: VirtualHost, queue: str) -> None:
    """basic.get, the API's get and browse of messages."""
    require(auth, user, vhost, "read", "queue", queue)


def purge(auth: AuthService, user: User, vhost: VirtualHost, queue: str) -> None:
    require(auth, user, vhost, "read", "queue", queue)


# -- bindings ------------------------------------------------------------------------------

def bind(auth: AuthService, user: User, vhost: VirtualHost, *, source: str,
         destination: str, destination_kind: ResourceKind, routing_key: str,
         client_id: str | None = None) -> None:
    """queue.bind / exchange.bind: write on the destination, read on the source, and the
    topic read permission on the binding key when the source is a topic exchange (a
    binding key is what a consumer reads by: `#` on amq.topic reads every message)."""
    require(auth, user, vhost, "write", destination_kind, destination)
    require(auth, user, vhost, "read", "exchange", source)
    require_topic(auth, user, vhost, source, "read", routing_key, client_id=client_id)


def unbind(auth: AuthService, user: User, vhost: VirtualHost, *, source: str,
           destination: str, destination_kind: ResourceKind, routing_key: str) -> None:
    """queue.unbind / exchange.unbind: the same checks as bind (RabbitMQ's binding_action)."""
    bind(auth, user, vhost, source=source, destination=destination,
         destination_kind=destination_kind, routing_key=routing_key)


# -- publishing ----------------------------------------------------------------------------

def publish(auth: AuthService, user: User, vhost: VirtualHost, exchange: str,
            routing_key: str, *, client_id: str | None = None) -> None:
    """basic.publish and every other way a message enters an exchange (MQTT PUBLISH and
    will, STOMP SEND, WAMP PUBLISH and CALL, the API's publish): write on the exchange and
    the topic write permission on the routing key when it is a topic exchange."""
    require(auth, user, vhost, "write", "exchange", exchange)
    require_topic(auth, user, vhost, exchange, "write", routing_key, client_id=client_id)


# -- subscriptions: a protocol's declare + bind + consume in one ---------------------------

def subscribe(auth: AuthService, user: User, vhost: VirtualHost, *, queue: str,
              exchange: str, binding_key: str, arguments: Mapping[str, Any] | None = None,
              declare: bool = True, client_id: str | None = None) -> None:
    """A subscription that declares (`declare`) a queue, binds it from `exchange` and
    consumes it (an MQTT SUBSCRIBE, a STOMP SUBSCRIBE to /topic/ or /exchange/): all of
    its checks, before any of it is done."""
    if declare:
        declare_queue(auth, user, vhost, queue, arguments=arguments)
    bind(auth, user, vhost, source=exchange, destination=queue, destination_kind="queue",
         routing_key=binding_key, client_id=client_id)
    consume(auth, user, vhost, queue)


def subscribe_private(auth: AuthService, user: User, vhost: VirtualHost, *, exchange: str,
                      binding_key: str) -> None:
    """A subscription through a queue the client never sees or names (WAMP SUBSCRIBE: a
    server-named exclusive queue that lives and dies with the subscription, as AMQP's
    direct reply-to pseudo-queue): read on the exchange and the topic read permission."""
    require(auth, user, vhost, "read", "exchange", exchange)
    require_topic(auth, user, vhost, exchange, "read", binding_key)
