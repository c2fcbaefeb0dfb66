"""Topic matching by a trie of words, built at bind time.

A binding key `a.*.#` is a path of words `a`, `*`, `#` from the root; the node it ends at
holds the binding's destinations. Matching a routing key walks the words once, following at
each node the literal child, the `*` child (exactly one word) and the `#` child (zero or
more words), so the cost grows with the key's length and the number of wildcard branches
taken, not with the number of bindings.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


def _words(key: str) -> list[str]:
    """An empty key has no words (RabbitMQ: `*` does not match "", `#` does)."""
    return key.split(".") if key else []


class _Node(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: dict[T, None] = {}  # ordered set


class TopicTrie(Generic[T]):
    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, value: T) -> bool:
        """Add `value` under `pattern`; False when it was already there."""
        node = self._root
        for word in _words(pattern):
            nxt = node.children.get(word)
            if nxt is None:
                nxt = node.children[word] = _Node()
            node = nxt
        if value in node.values:
            return False
        node.values[value] = None
        self._count += 1
        return True

    def remove(self, pattern: str, value: T) -> bool:
        """Remove `value` from `pattern`, pruning empty nodes; False when absent."""
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for word in _words(pattern):
            nxt = node.children.get(word)
            if nxt is None:
                return False
            path.append((node, word))
            node = nxt
        if value not in node.values:
            return False
        del node.values[value]
        self._count -= 1
        for parent, word in reversed(path):
            child = parent.children[word]
            if child.values or child.children:
                break
            del parent.children[word]
        return True

    def match(self, routing_key: str) -> dict[T, None]:
        """Every value whose pattern matches `routing_key`, each once, in a stable order."""
        out: dict[T, None] = {}
        words = _words(routing_key)
        self._walk(self._root, words, 0, out)
        return out

    def _walk(self, node: _Node[T], words: list[str], i: int, out: dict[T, None]) -> None:
        children = node.children
        if i == len(words):
            out.update(node.values)
            # trailing '#' nodes match zero further words
            hash_node = children.get("#")
            while hash_node is not None:
                out.update(hash_node.values)
                hash_node = hash_node.children.get("#")
            return
        word = words[i]
        child = children.get(word)
        if child is not None:
            self._walk(child, words, i + 1, out)
        star = children.get("*")
        if star is not None:
            self._walk(star, words, i + 1, out)
        hash_node = children.get("#")
        if hash_node is not None:
            # '#' consumes zero or more words: try every remaining split point
            for j in range(i, len(words) + 1):
                self._walk(hash_node, words, j, out)
