"""One priority level of a queue's ready messages, able to keep most of them on disk.

Theory of operation
-------------------
A level is three FIFO parts, in delivery order: `head` (entries in memory, delivered
next), `pages` (runs of entries written out through the store's page file, each known in
memory only by a small reference) and `tail` (the newest entries, in memory, waiting to
fill a page). While the broker holds fewer message bytes in memory than its paging
threshold (`Meter.paging_threshold`), and nothing of the level is paged, every entry goes
to `head` and nothing touches the disk. Past the threshold, new entries go to `tail`; a
full tail is written as one page and its bodies leave memory. Once anything is paged, later
entries queue behind it in `tail` whatever the threshold says, so order is kept.

When `head` runs dry, the oldest page is read back whole (one `spill_read`) and becomes the
head; with no pages left, the tail becomes the head. Memory is thus bounded by the threshold
plus, per paging level, one page being filled and one being delivered; the pages themselves
cost a reference each (a few dozen bytes per few hundred messages).

The core does no I/O of its own: `Store.spill_write/spill_read/spill_free` do it (the page
file of a `DiskStore`, a dict in a `MemoryStore`). Unacked entries are never paged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from gateway.core.message import Message, Properties
from gateway.core.meter import Meter
from gateway.store.base import PROPERTY_FIELDS, Store
from gateway.store.serial import decode, encode

PAGE_BYTES = 512 * 1024  # a page is written when its tail holds this many body bytes
PAGE_ENTRIES = 4096  # ... or this many entries


class Paged(Protocol):
    """What a level keeps of a queue's entry (`gateway.core.queue.Entry`) and writes to a
    page."""

    message: Message
    seq: int
    redelivered: bool
    expires_at: float | None
    persisted: bool
    delivery_count: int


E = TypeVar("E", bound=Paged)

# makes an entry of the level's queue again from a page: (message, seq, expires_at,
# persisted)
NewEntry = Callable[[Message, int, float | None, bool], E]


class Page:
    __slots__ = ("ref", "count", "size")

    def __init__(self, ref: Any, count: int, size: int) -> None:
        self.ref = ref
        self.count = count
        self.size = size


class ReadyLevel(Generic[E]):
    """`meter`: the broker's; `store`: the one whose page file takes the pages;
    `new_entry`: makes an entry of the level's queue again when its page is read back."""

    __slots__ = ("meter", "store", "new_entry", "head", "pages", "tail", "tail_bytes",
                 "count")

    def __init__(self, meter: Meter, store: Store, new_entry: NewEntry[E]) -> None:
        self.meter = meter
        self.store = store
        self.new_entry = new_entry
        self.head: deque[E] = deque()
        self.pages: deque[Page] = deque()
        self.tail: list[E] = []
        self.tail_bytes = 0
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count

    @property
    def paged(self) -> bool:
        return bool(self.pages or self.tail)

    # -- adding ----------------------------------------------------------------------------

    def append(self, entry: E) -> None:
        self.count += 1
        meter = self.meter
        if not self.pages and not self.tail and meter.held_bytes <= meter.paging_threshold:
            self.head.append(entry)
            return
        self.tail.append(entry)
        self.tail_bytes += len(entry.message.body)
        if self.tail_bytes >= PAGE_BYTES or len(self.tail) >= PAGE_ENTRIES:
            self._write_tail()

    def appendleft(self, entry: E) -> None:
        self.count += 1
        self.head.appendleft(entry)

    def _write_tail(self) -> None:
        data = encode([_entry_tuple(e) for e in self.tail])
        ref = self.store.spill_write(data)
        self.pages.append(Page(ref, len(self.tail), len(data)))
        self.meter.held_bytes -= self.tail_bytes
        self.meter.paged_bytes += len(data)
        self.tail = []
        self.tail_bytes = 0

    # -- taking ----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Make `head` non-empty if the level holds anything; False when it is empty."""
        if self.head:
            return True
        if self.pages:
            page = self.pages.popleft()
            data = self.store.spill_read(page.ref)
            self.store.spill_free(page.ref)
            self.meter.paged_bytes -= page.size
            entries = [self._entry_from(t) for t in decode(data)]
            self.meter.held_bytes += sum(len(e.message.body) for e in entries)
            self.head.extend(entries)
            return True
        if self.tail:
            self.head.extend(self.tail)
            self.tail = []
            self.tail_bytes = 0
            return True
        return False

    def peek(self) -> E:
        self._fill()
        return self.head[0]

    def popleft(self) -> E:
        self._fill()
        self.count -= 1
        return self.head.popleft()

    def take(self, seqs: set[int]) -> list[E]:
        """Remove and return the entries with these seqs found in memory (head and tail;
        pages are not read), in order."""
        found = [e for e in self.head if e.seq in seqs]
        if found:
            self.head = deque(e for e in self.head if e.seq not in seqs)
        in_tail = [e for e in self.tail if e.seq in seqs]
        if in_tail:
            self.tail = [e for e in self.tail if e.seq not in seqs]
            self.tail_bytes -= sum(len(e.message.body) for e in in_tail)
            found.extend(in_tail)
        self.count -= len(found)
        return found

    def __iter__(self) -> Iterator[E]:
        """Every entry in order, reading pages without taking them (lazily)."""
        yield from list(self.head)
        for page in list(self.pages):
            data = self.store.spill_read(page.ref)
            for t in decode(data):
                yield self._entry_from(t)
        yield from list(self.tail)

    def clear(self) -> list[E]:
        """Empty the level; returns the entries that were in memory. Paged entries that were
        persisted are reported through `paged_persisted` before the pages are freed."""
        out = list(self.head)
        out.extend(self.tail)
        self.head.clear()
        self.tail = []
        self.tail_bytes = 0
        self.count = 0
        return out

    def drop_pages(self, settle: bool) -> list[int]:
        """Free every page; with `settle`, returns the seqs of the persisted entries in them
        (their store records must be acked)."""
        seqs: list[int] = []
        for page in self.pages:
            if settle:
                data = self.store.spill_read(page.ref)
                seqs.extend(t[0] for t in decode(data) if t[3])
            self.store.spill_free(page.ref)
            self.meter.paged_bytes -= page.size
        self.pages.clear()
        return seqs


    def _entry_from(self, t: list[Any]) -> E:
        props = Properties(**dict(zip(PROPERTY_FIELDS, t[8], strict=True)))
        entry = self.new_entry(Message(t[5], t[6], t[7], props, t[9], t[10]), t[0], t[2], t[3])
        entry.redelivered = t[1]
        entry.delivery_count = t[4]
        return entry


def _entry_tuple(e: Paged) -> tuple[Any, ...]:
    m = e.message
    p = m.properties
    return (e.seq, e.redelivered, e.expires_at, e.persisted, e.delivery_count,
            m.id, m.exchange, m.routing_key, [getattr(p, f) for f in PROPERTY_FIELDS],
            m.body, m.origin)
