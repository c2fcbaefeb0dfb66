"""What a session's subscriptions, calls and message handlers need of the session.

`SessionContext` is the part of `session.WampSession` that `subscriptions.py` and `rpc.py`
use (handlers.py extends it), so none of them imports the session and the session imports
them all: a leaf module, typing only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.info import Connected

if TYPE_CHECKING:
    from gateway.core.vhost import VirtualHost
    from protocols.wamp.frames import Message
    from protocols.wamp.router import Realm


class SessionContext(Connected, Protocol):
    session_id: int
    authid: str
    authrole: str
    disclose: bool  # disclose every publisher and caller (as if each asked)
    output_blocked: bool
    clock: Callable[[], float]
    vhost: VirtualHost | None
    realm: Realm | None

    def send(self, msg: Message) -> bool: ...

    def check_publish(self, exchange: str, routing_key: str) -> None: ...

    def check_register(self, procedure: str) -> None: ...
