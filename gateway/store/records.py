"""The records of the store's log, written and read back.

A log is a sequence of records `[u32 length][u32 crc32][u8 kind][payload]`, the payload a
tuple in `gateway.store.serial` encoding; the kinds are below. A reader yields the records
up to the first torn or corrupt one (the tail of a write cut off by a crash, never reported
durable) and says how long the good prefix is.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from gateway.store.serial import DecodeError, decode, encode, encode_into

HEAD = struct.Struct(">II")
NOHEAD = bytes(HEAD.size)

# record kinds
PUT_EXCHANGE = 1
DEL_EXCHANGE = 2
PUT_QUEUE = 3
DEL_QUEUE = 4
PUT_BINDING = 5
DEL_BINDING = 6
MESSAGE = 7
ENQUEUE = 8
ACK = 9
PUT_USER = 10
DEL_USER = 11
PUT_VHOST = 12
DEL_VHOST = 13  # drops the vhost and everything in it: permissions, policies, topology
PUT_PERMISSION = 14
DEL_PERMISSION = 15
PUT_POLICY = 16
DEL_POLICY = 17
SEEDED = 18  # users/vhosts/permissions have been written once; the config no longer seeds
PUT_VALUE = 19  # a protocol's own durable value (MQTT retained messages, session state)
DEL_VALUE = 20
PUT_TOPIC_PERMISSION = 21
DEL_TOPIC_PERMISSION = 22
PUT_LIMITS = 23  # a vhost's or a user's runtime limits: (scope, name, {limit: value})
DEL_LIMITS = 24
DELIVERED = 25  # entries of one queue handed to consumers: (vhost, queue, seqs as int64s)
# a held delayed message: (vhost, exchange, due ms wall clock, message id, its exchange,
# routing key, properties, body, origin); removed by (vhost, message id) when routed
PUT_DELAYED = 26
DEL_DELAYED = 27

READ_CHUNK = 1024 * 1024  # bytes of the old log read at a time during recovery


def encode_record(kind: int, payload: tuple[Any, ...]) -> bytes:
    body = bytes((kind,)) + encode(payload)
    return HEAD.pack(len(body), zlib.crc32(body)) + body


def encode_record_into(out: bytearray, kind: int, payload: tuple[Any, ...]) -> None:
    """`encode_record`, written straight into a batch being built (a message body is copied once,
    into the batch)."""
    start = len(out)
    out += NOHEAD
    out.append(kind)
    encode_into(payload, out)
    with memoryview(out) as view:
        crc = zlib.crc32(view[start + 8:])
    HEAD.pack_into(out, start, len(out) - start - 8, crc)


class LogReader:
    """The records of a log file, read in chunks: (kind, payload, offset, frame length) of
    each, up to the first torn or corrupt one. `valid` is then the length of the good prefix."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.valid = 0

    def __iter__(self) -> Iterator[tuple[int, Any, int, int]]:
        buf = b""
        base = 0  # file offset of buf[0]
        pos = 0
        eof = False
        while True:
            if len(buf) - pos < 8 or (
                    len(buf) - pos < 8 + HEAD.unpack_from(buf, pos)[0]):
                if eof:
                    return
                more = self.f.read(READ_CHUNK)
                eof = not more
                base += pos
                buf = buf[pos:] + more
                pos = 0
                continue
            length, crc = HEAD.unpack_from(buf, pos)
            end = pos + 8 + length
            if length == 0:
                return
            body = memoryview(buf)[pos + 8:end]
            if zlib.crc32(body) != crc:
                return
            try:
                payload = decode(body[1:])
            except DecodeError:
                return
            kind = body[0]
            yield kind, payload, base + pos, end - pos
            pos = end
            self.valid = base + pos


def read_records(data: bytes | bytearray) -> tuple[list[tuple[int, Any]], int]:
    """The records in a buffer (a batch, a whole log) and the length of its valid prefix."""
    reader = LogReader(io.BytesIO(data))
    records = [(kind, payload) for kind, payload, _, _ in reader]
    return records, reader.valid


def pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise OSError(f"store: log truncated at {offset + len(data)}")
        data += more
    return data
