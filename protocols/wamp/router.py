"""WAMP state that spans sessions of one realm: ids, registrations and calls in flight.

Everything that moves messages is the core's: a subscription is a queue bound to
`amq.topic`, a registration consumes the queue named after its procedure, a call is a
message to that queue with `reply_to` + `correlation_id`. What the core has no notion of
lives here, per realm (= vhost):

- the sessions by id (global-scope ids, random in [1, 2^53]);
- subscription ids, one per (topic, match) shared by every session subscribed to it;
- registrations: one core consumer per procedure that picks among the callees of a shared
  registration by its policy (single, roundrobin, random, first, last);
- calls in flight to a WAMP callee, by correlation id, so a CANCEL or a timeout reaches
  the callee as INTERRUPT; calls canceled before any callee took them are skipped when
  they come out of the queue.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from protocols.wamp.frames import MAX_ID

if TYPE_CHECKING:
    from gateway.core.queue import Entry, Queue

INVOKE_POLICIES: Final = ("single", "roundrobin", "random", "first", "last")
CANCELED_KEPT: Final = 10000  # canceled-before-delivery correlation ids remembered per realm


def global_id() -> int:
    """A global-scope id: random, uniform in [1, 2^53] (spec "IDs")."""
    return secrets.randbelow(MAX_ID) + 1


class Callee(Protocol):
    """What a registration needs from a WAMP session that registered it."""

    @property
    def session_id(self) -> int: ...

    @property
    def output_blocked(self) -> bool: ...

    def invoke(self, registration: Registration, entry: Entry) -> None: ...

    def registration_revoked(self, registration: Registration) -> None: ...

    def interrupt(self, invocation: int, mode: str, reason: str) -> None: ...


class Registration:
    """One procedure registered by one or more WAMP callees; the core's `Consumer` of the
    procedure's queue (exclusive, so no AMQP consumer competes for its calls)."""

    __slots__ = ("id", "procedure", "invoke_policy", "queue", "callees", "tag", "no_ack",
                 "exclusive", "priority", "_next", "created_queue", "_rng")

    def __init__(self, reg_id: int, procedure: str, invoke_policy: str, queue: Queue,
                 created_queue: bool) -> None:
        self.id = reg_id
        self.procedure = procedure
        self.invoke_policy = invoke_policy
        self.queue = queue
        self.created_queue = created_queue
        self.callees: list[Callee] = []  # in the order they registered
        self.tag = f"wamp-registration-{reg_id}"
        self.no_ack = False
        self.exclusive = True
        self.priority = 0
        self._next = 0
        self._rng = random.Random()

    def _ready(self) -> list[Callee]:
        return [c for c in self.callees if not c.output_blocked]

    def can_take(self) -> bool:
        return any(not c.output_blocked for c in self.callees)

    def pick(self) -> Callee | None:
        ready = self._ready()
        if not ready:
            return None
        policy = self.invoke_policy
        if policy in ("single", "first"):
            return ready[0]
        if policy == "last":
            return ready[-1]
        if policy == "random":
            return self._rng.choice(ready)
        callee = ready[self._next % len(ready)]  # roundrobin
        self._next += 1
        return callee

    def deliver(self, entry: Entry) -> None:
        callee = self.pick()
        assert callee is not None  # the queue asked can_take() first
        callee.invoke(self, entry)

    def cancelled(self) -> None:
        """The queue was deleted under the registration: every callee loses it."""
        for callee in list(self.callees):
            callee.registration_revoked(self)
        self.callees.clear()


class Realm:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[int, Any] = {}
        self._sub_ids: dict[tuple[str, str], list[int]] = {}  # (topic, match) -> [id, refs]
        self._router_ids = itertools.count(1)
        self.registrations: dict[str, Registration] = {}
        self.registrations_by_id: dict[int, Registration] = {}
        # correlation id -> (callee, invocation id) while a WAMP callee holds the call
        self.inflight: dict[str, tuple[Callee, int]] = {}
        self.canceled: dict[str, None] = {}

    def new_session_id(self) -> int:
        while True:
            sid = global_id()
            if sid not in self.sessions:
                return sid

    # -- subscription ids ------------------------------------------------------------------

    def subscription_id(self, topic: str, match: str) -> int:
        """The id of (topic, match), shared by every session; counts one more holder."""
        held = self._sub_ids.get((topic, match))
        if held is None:
            held = self._sub_ids[(topic, match)] = [next(self._router_ids), 0]
        held[1] += 1
        return held[0]

    def release_subscription_id(self, topic: str, match: str) -> None:
        held = self._sub_ids.get((topic, match))
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del self._sub_ids[(topic, match)]

    # -- registrations ---------------------------------------------------------------------

    def add_registration(self, procedure: str, invoke_policy: str, queue: Queue,
                         created_queue: bool) -> Registration:
        reg = Registration(next(self._router_ids), procedure, invoke_policy, queue,
                           created_queue)
        self.registrations[procedure] = reg
        self.registrations_by_id[reg.id] = reg
        return reg

    def drop_registration(self, reg: Registration) -> None:
        if self.registrations.get(reg.procedure) is reg:
            del self.registrations[reg.procedure]
        self.registrations_by_id.pop(reg.id, None)

    # -- calls -----------------------------------------------------------------------------

    def cancel_before_delivery(self, correlation_id: str) -> None:
        self.canceled[correlation_id] = None
        while len(self.canceled) > CANCELED_KEPT:
            del self.canceled[next(iter(self.canceled))]


class WampRouter:
    """The realms of one broker, made on first use."""

    def __init__(self, clock: Callable[[], float] | None = None, *,
                 secret: bytes | None = None) -> None:
        self.realms: dict[str, Realm] = {}
        self.clock = clock
        # the broker's own secret behind the WAMP-CRA challenges of names that have no key
        # (`session.decoy_cra_secret`): kept across restarts by the server, random otherwise
        self.secret = secret or secrets.token_bytes(32)

    def realm(self, name: str) -> Realm:
        realm = self.realms.get(name)
        if realm is None:
            realm = self.realms[name] = Realm(name)
        return realm
