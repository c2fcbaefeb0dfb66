"""Retained messages: one store per virtual host, indexed by topic level.

The store is a tree keyed by topic levels. A subscription's filter walks it once: a literal
level follows one child, `+` every child, `#` the whole subtree, so a wildcard subscriber
gets every retained message its filter matches (RabbitMQ sends retained messages only to
exact filters, rabbitmq-server#8824). Topics starting with `$` are not matched by a filter
starting with a wildcard [MQTT-4.7.2-1].

Limits bound the store (message count and payload bytes); a retained message over them is
not stored and the old one for its topic, if any, stays. The store is held in memory only:
retained messages do not survive a broker restart. Time (`now`) is an argument: a retained
message with a message expiry is dropped when found expired [MQTT-3.3.2-5].
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.mqtt.frames import Properties


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


class RetainedStore:
    def __init__(self, max_messages: int = 100_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._root = _Node()
        self.count = 0
        self.bytes = 0

    def set(self, message: Retained) -> bool:
        """Store (or replace) the retained message of its topic; an empty payload clears it
        [MQTT-3.3.1-6]. False when the limits refused it."""
        if not message.payload:
            self.clear(message.topic)
            return True
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
        path = topic.split("/")
        trail: list[tuple[_Node, str]] = []
        node = self._root
        for level in path:
            nxt = node.children.get(level)
            if nxt is None:
                return
            trail.append((node, level))
            node = nxt
        if node.message is None:
            return
        self.count -= 1
        self.bytes -= len(node.message.payload)
        node.message = None
        for parent, level in reversed(trail):
            child = parent.children[level]
            if child.message is not None or child.children:
                break
            del parent.children[level]

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
