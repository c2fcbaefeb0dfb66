"""What the broker holds in memory and on disk, and what it has received, shared by every
vhost and queue."""

from __future__ import annotations


class Meter:
    """What the broker holds, across vhosts: bytes of message bodies in queues (ready or
    unacked) in memory, which the server compares with the memory high-watermark, and bytes
    of pages on disk. Past `paging_threshold` held bytes, queues page new messages out
    (`gateway.core.paging`). Also the messages published, by origin protocol, and those of
    them no queue took (`received`, `unroutable`): plain counters the vhosts bump as they
    route, read by management's statistics and /metrics, so counting costs no event per
    publish."""

    __slots__ = ("held_bytes", "paged_bytes", "paging_threshold", "received", "unroutable")

    def __init__(self, paging_threshold: int = 2**62) -> None:
        self.held_bytes = 0
        self.paged_bytes = 0
        self.paging_threshold = paging_threshold
        self.received: dict[str, int] = {}
        self.unroutable: dict[str, int] = {}
