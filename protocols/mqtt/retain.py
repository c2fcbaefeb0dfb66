"""Retained messages: one store per virtual host, indexed by topic level.

The store is a tree keyed by topic levels. A subscription's filter walks it once: a literal
level follows one child, `+` every child, `#` the whole subtree, so a wildcard subscriber
gets every retained message its filter matches (RabbitMQ sends retained messages only to
exact filters, rabbitmq-server#8824). Topics starting with `$` are not matched by a filter
starting with a wildcard [MQTT-4.7.2-1].

Limits bound the store (message count and payload bytes); a retained message over them is
not stored and the old one for its topic, if any, stays. Time (`now`) is an argument: a
retained message with a message expiry is dropped when found expired [MQTT-3.3.2-5].

Retained messages are durable: given the broker's `Durable`, every change (set, replace, clear,
expiry) appends a keyed value record (space `mqtt.retained`, key `(vhost, topic)`) to the
store's batch, so a PUBACK/PUBREC that waits for the store's position after the publish
also waits for the retained message; `load` puts back what a restart read, without writing.

Shared (`shared`, in front of a RabbitMQ cluster: gateway/upstream/retained.py): the store's
values are a stream every node reads, so a clear is written even when this node holds no
message for the topic (another node may), and an expired message is dropped here without
writing (every node drops it on its own; a written clear could overtake a newer message
from another node). `load` and `drop` are how the stream's records come in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from protocols.mqtt.frames import NO_PROPERTIES, Properties

if TYPE_CHECKING:
    from gateway.core.durable import Durable

SPACE = "mqtt.retained"
_TUPLE_FIELDS = {"subscription_identifiers", "user_properties"}


@dataclass(frozen=True, slots=True)
class Retained:
    topic: str
    payload: bytes
    qos: int
    properties: Properties
    expires_at: float | None = None


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Retained | None = None


def to_value(message: Retained) -> list[Any]:
    """A retained message as the store keeps it (its topic is the record's key)."""
    props = {f.name: getattr(message.properties, f.name) for f in fields(Properties)
             if getattr(message.properties, f.name) != f.default}
    for name in _TUPLE_FIELDS & props.keys():
        props[name] = [list(v) if isinstance(v, tuple) else v for v in props[name]]
    return [message.payload, message.qos, props, message.expires_at]


def from_value(topic: str, value: list[Any]) -> Retained:
    payload, qos, props, expires_at = value
    for name in _TUPLE_FIELDS & props.keys():
        props[name] = tuple(tuple(v) if isinstance(v, list) else v for v in props[name])
    return Retained(topic, payload, qos, Properties(**props) if props else NO_PROPERTIES,
                    expires_at)


class RetainedStore:
    def __init__(self, max_messages: int = 100_000, max_bytes: int = 64 * 1024 * 1024,
                 *, vhost: str = "", durable: Durable | None = None,
                 shared: bool = False) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.vhost = vhost
        self.durable = durable  # None: kept in memory only
        self.shared = shared  # the durable values are a log every node reads
        self._root = _Node()
        self.count = 0
        self.bytes = 0

    def set(self, message: Retained) -> bool:
        """Store (or replace) the retained message of its topic; an empty payload clears it
        [MQTT-3.3.1-6]. False when the limits refused it."""
        if not message.payload:
            self.clear(message.topic)
            return True
        if not self.load(message):
            return False
        if self.durable is not None:
            self.durable.put_value(SPACE, (self.vhost, message.topic), to_value(message))
        return True

    def load(self, message: Retained) -> bool:
        """`set` without writing to the store (a message read back at start)."""
        node = self._root
        path = message.topic.split("/")
        existing = self._find(path)
        old = existing.message if existing is not None else None
        new_count = self.count + (0 if old is not None else 1)
        new_bytes = self.bytes + len(message.payload) - (len(old.payload) if old else 0)
        if new_count > self.max_messages or new_bytes > self.max_bytes:
            return False
        for level in path:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        node.message = message
        self.count, self.bytes = new_count, new_bytes
        return True

    def _find(self, path: list[str]) -> _Node | None:
        node = self._root
        for level in path:
            nxt = node.children.get(level)
            if nxt is None:
                return None
            node = nxt
        return node

    def clear(self, topic: str) -> None:
        """Clear the topic's retained message, and write it (when shared, even when this
        node holds none)."""
        removed = self.drop(topic)
        if self.durable is not None and (removed or self.shared):
            self.durable.delete_value(SPACE, (self.vhost, topic))

    def drop(self, topic: str) -> bool:
        """`clear` without writing; False if the topic had no retained message."""
        path = topic.split("/")
        trail: list[tuple[_Node, str]] = []
        node = self._root
        for level in path:
            nxt = node.children.get(level)
            if nxt is None:
                return False
            trail.append((node, level))
            node = nxt
        if node.message is None:
            return False
        self.count -= 1
        self.bytes -= len(node.message.payload)
        node.message = None
        for parent, level in reversed(trail):
            child = parent.children[level]
            if child.message is not None or child.children:
                break
            del parent.children[level]
        return True

    def all(self) -> list[Retained]:
        out: list[Retained] = []
        if self._root.message is not None:
            out.append(self._root.message)
        self._subtree(self._root, out, False)
        return out

    def get(self, topic: str) -> Retained | None:
        node = self._find(topic.split("/"))
        return node.message if node is not None else None

    def match(self, topic_filter: str, now: float) -> list[Retained]:
        """Every retained message whose topic the filter matches, expired ones dropped."""
        out: list[Retained] = []
        self._walk(self._root, topic_filter.split("/"), 0, out, True)
        live = [m for m in out if m.expires_at is None or m.expires_at > now]
        if len(live) != len(out):
            for m in out:
                if m.expires_at is not None and m.expires_at <= now:
                    if self.shared:
                        self.drop(m.topic)
                    else:
                        self.clear(m.topic)
        return live

    def _walk(self, node: _Node, levels: list[str], i: int, out: list[Retained],
              first: bool) -> None:
        if i == len(levels):
            if node.message is not None:
                out.append(node.message)
            return
        level = levels[i]
        if level == "#":
            # '#' matches the parent level too: `a/#` matches `a` [MQTT-4.7.1-2]
            if node.message is not None and not first:
                out.append(node.message)
            self._subtree(node, out, first)
            return
        if level == "+":
            for name, child in node.children.items():
                if first and name.startswith("$"):
                    continue
                self._walk(child, levels, i + 1, out, False)
            return
        exact = node.children.get(level)
        if exact is not None:
            self._walk(exact, levels, i + 1, out, False)

    def _subtree(self, node: _Node, out: list[Retained], first: bool) -> None:
        for name, child in node.children.items():
            if first and name.startswith("$"):
                continue
            if child.message is not None:
                out.append(child.message)
            self._subtree(child, out, False)
