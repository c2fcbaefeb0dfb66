"""Exchanges: where a publish is routed to queues (and to other exchanges).

Each exchange type keeps its bindings in the structure that makes its routing cheap: a dict
by routing key for direct, a set for fanout, a word trie for topic, a list of header
matchers for headers. Destinations are `Queue` or `Exchange` objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.core.errors import PreconditionFailed
from gateway.core.topic import TopicTrie

if TYPE_CHECKING:
    from gateway.core.policy import Policy
    from gateway.core.queue import Queue

    Destination: TypeAlias = "Queue | Exchange"

ROUTING_TYPES = ("direct", "fanout", "topic", "headers")
# the RabbitMQ community plugin's delayed-message exchange: routes by its `x-delayed-type`
# (one of ROUTING_TYPES) once a message's `x-delay` has passed (gateway.core.delayed)
DELAYED_TYPE = "x-delayed-message"
EXCHANGE_TYPES = (*ROUTING_TYPES, DELAYED_TYPE)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class Binding:
    source: Exchange
    destination: Destination
    routing_key: str
    arguments: dict[str, Any] = field(hash=False, compare=False)
    args_key: Any = None  # frozen arguments, part of the binding's identity

    @staticmethod
    def make(
        source: Exchange, destination: Destination, key: str, arguments: dict[str, Any] | None
    ) -> Binding:
        args = dict(arguments or {})
        return Binding(source, destination, key, args, _freeze(args))


class Exchange:
    __slots__ = (
        "name", "type", "durable", "auto_delete", "internal", "arguments", "vhost_name",
        "bindings", "_direct", "_fanout", "_topic", "_topic_refs", "_headers", "deleted", "policy",
        "kind", "delayed",
    )

    def __init__(
        self,
        name: str,
        type: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
        vhost_name: str = "/",
    ) -> None:
        if type not in EXCHANGE_TYPES:
            raise ValueError(type)
        # how it routes: its type, or for a delayed-message exchange its x-delayed-type
        kind = (arguments or {}).get("x-delayed-type") if type == DELAYED_TYPE else type
        if kind not in ROUTING_TYPES:
            raise ValueError(kind)
        self.kind: str = kind
        self.delayed = type == DELAYED_TYPE
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        self.vhost_name = vhost_name
        self.bindings: dict[Binding, None] = {}
        self._direct: dict[str, dict[Destination, int]] = {}
        self._fanout: dict[Destination, int] = {}
        self._topic: TopicTrie[Destination] = TopicTrie()
        # bindings per (key, destination) in the trie: they differ by arguments only, and
        # the last one removed takes the trie entry with it (a count, not a scan: O(1))
        self._topic_refs: dict[tuple[str, Destination], int] = {}
        self._headers: list[Binding] = []
        self.deleted = False
        self.policy: Policy | None = None  # set by the vhost

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, {self.type!r})"

    @property
    def alternate_exchange(self) -> str | None:
        ae = self.arguments.get("alternate-exchange")
        if ae is None and self.policy is not None:
            ae = self.policy.definition.get("alternate-exchange")  # arguments win
        return ae if isinstance(ae, str) else None

    def equivalent(
        self, type: str, durable: bool, auto_delete: bool, internal: bool,
        arguments: dict[str, Any],
    ) -> bool:
        return (
            self.type == type and self.durable == durable and self.auto_delete == auto_delete
            and self.internal == internal and _freeze(self.arguments) == _freeze(arguments)
        )

    # -- bindings -------------------------------------------------------------------------

    def add_binding(self, binding: Binding) -> bool:
        if binding in self.bindings:
            return False
        if self.kind == "headers":
            _validate_x_match(binding.arguments)
        self.bindings[binding] = None
        dest, key = binding.destination, binding.routing_key
        if self.kind == "direct":
            dests = self._direct.setdefault(key, {})
            dests[dest] = dests.get(dest, 0) + 1
        elif self.kind == "fanout":
            self._fanout[dest] = self._fanout.get(dest, 0) + 1
        elif self.kind == "topic":
            self._topic.add(key, dest)
            pair = (key, dest)
            self._topic_refs[pair] = self._topic_refs.get(pair, 0) + 1
        else:
            self._headers.append(binding)
        return True

    def remove_binding(self, binding: Binding) -> bool:
        if binding not in self.bindings:
            return False
        del self.bindings[binding]
        dest, key = binding.destination, binding.routing_key
        if self.kind == "direct":
            dests = self._direct[key]
            _decrement(dests, dest)
            if not dests:
                del self._direct[key]
        elif self.kind == "fanout":
            _decrement(self._fanout, dest)
        elif self.kind == "topic":
            pair = (key, dest)
            _decrement(self._topic_refs, pair)
            if pair not in self._topic_refs:
                self._topic.remove(key, dest)
        else:
            self._headers.remove(binding)
        return True

    # -- routing ---------------------------------------------------------------------------

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> Iterable[Destination]:
        if self.kind == "direct":
            return self._direct.get(routing_key, ())
        if self.kind == "topic":
            return self._topic.match(routing_key)
        if self.kind == "fanout":
            return self._fanout
        hdrs = headers or {}
        return {b.destination: None for b in self._headers if headers_match(b.arguments, hdrs)}


def _decrement(counts: dict[Any, int], key: Any) -> None:
    n = counts[key] - 1
    if n:
        counts[key] = n
    else:
        del counts[key]


def _validate_x_match(arguments: dict[str, Any]) -> None:
    mode = arguments.get("x-match", "all")
    if mode not in ("all", "any", "all-with-x", "any-with-x"):
        raise PreconditionFailed(f"Invalid x-match field value {mode!r}; expected all, any, "
                                 "all-with-x, or any-with-x")


def headers_match(binding_args: dict[str, Any], headers: dict[str, Any]) -> bool:
    """RabbitMQ's headers-exchange rule: `x-match` all (default) or any; binding arguments
    starting with `x-` are ignored unless the mode ends in `-with-x`; an argument with a
    void (None) value only needs the header to be present."""
    mode = binding_args.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    want_all: bool = mode.startswith("all")
    for key, value in binding_args.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        present = key in headers
        ok = present and (value is None or headers[key] == value)
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all
