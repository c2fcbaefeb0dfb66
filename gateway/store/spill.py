"""The page file: where queues past the memory threshold keep message bodies.

A queue that pages writes its newest ready messages in pages (a few hundred KiB each, one
`write` per page) and keeps only a small reference per page in memory; it reads a page back,
whole and in order, when its in-memory head runs dry. The file is scratch space, not a
durability mechanism: persistent messages are also in the log, so the page file is emptied
at every start, and truncated whenever no page in it is live any more.

Reads and writes are synchronous (`pwrite`/`pread` of whole pages, normally served by the
page cache); the core calls them through the store interface, so the core itself still
performs no I/O of its own and a `MemoryStore` can stand in for the page file in tests.
"""

from __future__ import annotations

import os
from pathlib import Path

PAGE_FILE = "pages.dat"


class PageFile:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / PAGE_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = 0
        self.live_bytes = 0
        self.live_pages = 0
        self.pinned = 0  # > 0 while a compaction may still read pages

    def write(self, data: bytes) -> tuple[int, int]:
        offset = self._end
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)
        self._end += len(data)
        self.live_bytes += len(data)
        self.live_pages += 1
        return offset, len(data)

    def read(self, ref: tuple[int, int]) -> bytes:
        offset, length = ref
        data = os.pread(self._fd, length, offset)
        while len(data) < length:  # pread may return short on some filesystems
            more = os.pread(self._fd, length - len(data), offset + len(data))
            if not more:
                raise OSError(f"page file truncated at {offset + len(data)}")
            data += more
        return data

    def free(self, ref: tuple[int, int]) -> None:
        self.live_bytes -= ref[1]
        self.live_pages -= 1
        if self.live_pages == 0 and not self.pinned and self._end:
            os.ftruncate(self._fd, 0)
            self._end = 0

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            try:
                self.path.unlink()
            except OSError:
                pass
