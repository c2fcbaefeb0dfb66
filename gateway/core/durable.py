"""The broker's durability as the protocols see it: store positions, the sessions waiting
for one, and the protocols' own keyed values. Protocols reach the store only through here.

Positions: every record the core appends to the store counts one, and `position` is the
count so far. Work whose records must be on disk before its answer goes (a publish to a
durable queue, a retained message, an MQTT session record) notes `position` before and
asks `since(mark)` after: the position to wait for, or 0 when nothing was written (nothing
to wait for). `reached()` is how far the store has made it durable. Answers wait in a
`gateway.core.confirms.Confirms` tracker, which registers here (`wait`); after each group
commit the server's store task takes the sessions to wake from `due()`.

Keyed values carry what a protocol keeps beyond the core's model (MQTT retained messages,
session records): a space name, a key (a flat tuple whose first item is the vhost) and any
value. The values read back at start wait here until their owner claims them
(`claim_values`); unclaimed ones are carried over by every snapshot as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.core.confirms import Waiter, Waiting

if TYPE_CHECKING:
    from gateway.core.confirms import Confirms
    from gateway.store.base import Recovered, Store

Key = tuple[Any, ...]


class Durable:
    __slots__ = ("_kept", "_store", "_values", "_waiting")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting = Waiting()
        # values read back from the store, by space, until their owner claims them
        self._values: dict[str, dict[Key, Any]] = {}
        # the claimed spaces whose owners give their live values to every snapshot
        self._kept: dict[str, Callable[[], dict[Key, Any]]] = {}

    # -- positions -------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The store position after everything written so far."""
        return self._store.appended

    def since(self, mark: int) -> int:
        """The position that what was written since `position` was `mark` waits for; 0
        when nothing was (it need not wait)."""
        appended = self._store.appended
        return appended if appended != mark else 0

    def is_durable(self, position: int) -> bool:
        return position <= self._store.durable

    def reached(self) -> int:
        """How far the store has made its records durable (settling first: when nothing
        pending is left to write, what was appended is durable at once)."""
        store = self._store
        store.settle()
        return store.durable

    # -- waiting ---------------------------------------------------------------------------

    def wait(self, position: int, tracker: Confirms[Any]) -> None:
        """Wake `tracker`'s session once `position` is durable (see `due`)."""
        self._waiting.add(position, tracker)

    def due(self) -> list[Waiter]:
        """The sessions whose trackers wait for a position the store has made durable,
        each once; called by the store task after each group commit."""
        return self._waiting.due(self.reached())

    def fail_waiting(self) -> list[Waiter]:
        """Forget every answer still waiting for a position (what it waits for failed:
        none of them may be sent as a success); their sessions, each once, to close."""
        sessions: dict[Waiter, None] = {}
        for tracker in self._waiting.trackers():
            tracker.clear()
            sessions[tracker.waiter] = None
        return list(sessions)

    @property
    def waiting(self) -> int:
        """How many trackers are registered."""
        return len(self._waiting)

    # -- keyed values ----------------------------------------------------------------------

    def put_value(self, space: str, key: Key, value: Any) -> None:
        self._store.put_value(space, key, value)

    def delete_value(self, space: str, key: Key) -> None:
        self._store.delete_value(space, key)

    def claim_values(self, space: str,
                     current: Callable[[], dict[Key, Any]] | None = None) -> dict[Key, Any]:
        """Take over the recovered values of one space (see `Recovered.values`): from then
        on their owner keeps them and writes their changes, and `current()` gives the
        space's live values to every snapshot (None: the owner adds them some other way)."""
        if current is not None:
            self._kept[space] = current
        return self._values.pop(space, {})

    def restore_values(self, values: dict[str, dict[Key, Any]]) -> None:
        for space, found in values.items():
            self._values.setdefault(space, {}).update(found)

    def vhost_deleted(self, name: str) -> None:
        for values in self._values.values():
            for key in [k for k in values if k[0] == name]:
                del values[key]

    def snapshot_into(self, state: Recovered) -> None:
        """Add the values to a snapshot: unclaimed ones as they were read, claimed ones as
        their owners keep them now."""
        for space, values in self._values.items():
            state.values[space] = dict(values)
        for space, current in self._kept.items():
            state.values.setdefault(space, {}).update(current())
