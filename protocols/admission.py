"""Admission at login: the hook every session calls once it knows who logged in and where.

The server passes its `admit(session, user_name, vhost_name)` (`Admission.admit`); it
raises `NotAllowed` with RabbitMQ's wording to refuse, and each session turns that into its
protocol's refusal (AMQP 530, MQTT CONNACK 0x97 / 3, STOMP ERROR, WAMP ABORT). An AMQP
session also asks `admit_channel(session, user_name)` before it opens a channel (refused:
connection.close 530, as RabbitMQ's reader does). Sessions made without a server admit
everyone.

What is counted, over the server's live sessions of every protocol (TCP and WebSocket
alike), the session asking not included:
- the vhost's `max-connections` runtime limit (`gateway ctl set_vhost_limits`): sessions
  logged in to that vhost;
- the user's `max-connections` runtime limit (`set_user_limits`) and the config's
  `limits.max_connections_per_user`: sessions logged in as that user;
- the config's `limits.max_connections_per_address`: sessions from that address, logged in
  or not (a handshake holds resources too);
- at `channel.open`, the user's `max-channels`: AMQP channels open on all the user's
  connections.
The checks run in the event loop, between two sessions' input, so no two logins can both
take the last place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from gateway.core.errors import NotAllowed

if TYPE_CHECKING:
    from gateway.auth.service import AuthService

__all__ = ["Admission", "Admit", "AdmitChannel", "admit_all", "admit_any_channel"]

Admit = Callable[[object, str, str], None]
AdmitChannel = Callable[[object, str], None]


def admit_all(session: object, user: str, vhost: str) -> None:
    """The default: no connection limits."""


def admit_any_channel(session: object, user: str) -> None:
    """The default: no channel limits."""


class Admission:
    """Connection and channel limits, counted over `sessions` (the server's live set)."""

    def __init__(self, sessions: Collection[Any], auth: AuthService, *,
                 max_per_user: int = 0, max_per_address: int = 0) -> None:
        self.sessions = sessions
        self.auth = auth
        self.max_per_user = max_per_user  # config: 0 = no limit
        self.max_per_address = max_per_address

    def _others(self, session: object) -> list[Any]:
        return [s for s in self.sessions if s is not session and not s.closed]

    def admit(self, session: object, user: str, vhost: str) -> None:
        vhost_max = self.auth.vhost_limit(vhost, "max-connections")
        user_max = self.auth.user_limit(user, "max-connections")
        per_user = self.max_per_user
        per_address = self.max_per_address
        if vhost_max is None and user_max is None and not per_user and not per_address:
            return
        address = getattr(session, "peer", ("", 0))[0]
        in_vhost = users = addresses = 0
        for other in self._others(session):
            if other.peer[0] == address:
                addresses += 1
            if not other.authenticated:
                continue
            if other.user is not None and other.user.name == user:
                users += 1
            if other.vhost is not None and other.vhost.name == vhost:
                in_vhost += 1
        if vhost_max is not None and in_vhost >= vhost_max:
            raise NotAllowed(f"NOT_ALLOWED - access to vhost '{vhost}' refused for user "
                             f"'{user}': connection limit ({vhost_max}) is reached")
        for limit in (user_max, per_user or None):
            if limit is not None and users >= limit:
                raise NotAllowed(f"NOT_ALLOWED - connection refused for user '{user}': "
                                 f"user connection limit ({limit}) is reached")
        if per_address and addresses >= per_address:
            raise NotAllowed(f"NOT_ALLOWED - connection refused for {address}: connection "
                             f"limit per address ({per_address}) is reached")

    def admit_channel(self, session: object, user: str) -> None:
        limit = self.auth.user_limit(user, "max-channels")
        if limit is None:
            return
        count = len(getattr(session, "channels", ()))
        for other in self._others(session):
            if other.user is not None and other.user.name == user:
                count += len(getattr(other, "channels", ()))
        if count >= limit:
            raise NotAllowed(f"NOT_ALLOWED - number of channels opened for user '{user}' "
                             f"has reached the maximum allowed user limit of {limit}")
