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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gateway.core.message import Message, Properties
from gateway.store.base import PROPERTY_FIELDS
from gateway.store.serial import decode, encode

if TYPE_CHECKING:
    from gateway.core.queue import Entry, Queue

PAGE_BYTES = 512 * 1024  # a page is written when its tail holds this many body bytes
PAGE_ENTRIES = 4096  # ... or this many entries


class Page:
    __slots__ = ("ref", "count", "size")

    def __init__(self, ref: Any, count: int, size: int) -> None:
        self.ref = ref
        self.count = count
        self.size = size


class ReadyLevel:
    __slots__ = ("queue", "head", "pages", "tail", "tail_bytes", "count")

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.head: deque[Entry] = deque()
        self.pages: deque[Page] = deque()
        self.tail: list[Entry] = []
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

    def append(self, entry: Entry) -> None:
        self.count += 1
        meter = self.queue.vhost.meter
        if not self.pages and not self.tail and meter.held_bytes <= meter.paging_threshold:
            self.head.append(entry)
            return
        self.tail.append(entry)
        self.tail_bytes += len(entry.message.body)
        if self.tail_bytes >= PAGE_BYTES or len(self.tail) >= PAGE_ENTRIES:
            self._write_tail()

    def appendleft(self, entry: Entry) -> None:
        self.count += 1
        self.head.appendleft(entry)

    def _write_tail(self) -> None:
        vh = self.queue.vhost
        data = encode([_entry_tuple(e) for e in self.tail])
        ref = vh.store.spill_write(data)
        self.pages.append(Page(ref, len(self.tail), len(data)))
        vh.meter.held_bytes -= self.tail_bytes
        vh.meter.paged_bytes += len(data)
        self.tail = []
        self.tail_bytes = 0

    # -- taking ----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Make `head` non-empty if the level holds anything; False when it is empty."""
        if self.head:
            return True
        if self.pages:
            page = self.pages.popleft()
            vh = self.queue.vhost
            data = vh.store.spill_read(page.ref)
            vh.store.spill_free(page.ref)
            vh.meter.paged_bytes -= page.size
            entries = [_entry_from(t, self.queue) for t in decode(data)]
            vh.meter.held_bytes += sum(len(e.message.body) for e in entries)
            self.head.extend(entries)
            return True
        if self.tail:
            self.head.extend(self.tail)
            self.tail = []
            self.tail_bytes = 0
            return True
        return False

    def peek(self) -> Entry:
        self._fill()
        return self.head[0]

    def popleft(self) -> Entry:
        self._fill()
        self.count -= 1
        return self.head.popleft()

    def take(self, seqs: set[int]) -> list[Entry]:
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

    def __iter__(self) -> Iterator[Entry]:
        """Every entry in order, reading pages without taking them (lazily)."""
        yield from list(self.head)
        for page in list(self.pages):
            data = self.queue.vhost.store.spill_read(page.ref)
            for t in decode(data):
                yield _entry_from(t, self.queue)
        yield from list(self.tail)

    def clear(self) -> list[Entry]:
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
        vh = self.queue.vhost
        seqs: list[int] = []
        for page in self.pages:
            if settle:
                data = vh.store.spill_read(page.ref)
                seqs.extend(t[0] for t in decode(data) if t[3])
            vh.store.spill_free(page.ref)
            vh.meter.paged_bytes -= page.size
        self.pages.clear()
        return seqs


def _entry_tuple(e: Entry) -> tuple[Any, ...]:
    m = e.message
    p = m.properties
    return (e.seq, e.redelivered, e.expires_at, e.persisted, e.delivery_count,
            m.id, m.exchange, m.routing_key, [getattr(p, f) for f in PROPERTY_FIELDS],
            m.body, m.origin)


def _entry_from(t: list[Any], queue: Queue) -> Entry:
    from gateway.core.queue import Entry

    props = Properties(**dict(zip(PROPERTY_FIELDS, t[8], strict=True)))
    entry = Entry(Message(t[5], t[6], t[7], props, t[9], t[10]), t[0], queue, t[2], t[3])
    entry.redelivered = t[1]
    entry.delivery_count = t[4]
    return entry
