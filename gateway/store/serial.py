"""A compact tagged binary encoding for the values the store writes.

AMQP header tables carry str, bytes, bool, int, float, Decimal, datetime, None, lists and
nested tables; JSON cannot keep bytes, Decimal and datetime apart from strings, and pickle
would make the data directory executable. This encoding keeps every one of those types
exactly, and is private to the store's file format.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

_LEN = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_TIME = struct.Struct(">qB")  # microseconds since the epoch, 1 if timezone-aware
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class DecodeError(ValueError):
    pass


def encode(value: Any) -> bytes:
    out = bytearray()
    _enc(value, out)
    return bytes(out)


def encode_into(value: Any, out: bytearray) -> None:
    """`encode`, appended to `out` (no copy of its own)."""
    _enc(value, out)


def _enc(v: Any, out: bytearray) -> None:
    if v is None:
        out += b"N"
    elif v is True:
        out += b"T"
    elif v is False:
        out += b"F"
    elif isinstance(v, int):
        if -(2**63) <= v < 2**63:
            out += b"i"
            out += _I64.pack(v)
        else:
            raw = v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)
            out += b"I" + _LEN.pack(len(raw)) + raw
    elif isinstance(v, float):
        out += b"f"
        out += _F64.pack(v)
    elif isinstance(v, str):
        raw = v.encode("utf-8", "surrogatepass")
        out += b"s" + _LEN.pack(len(raw)) + raw
    elif isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        out += b"b" + _LEN.pack(len(raw)) + raw
    elif isinstance(v, Decimal):
        raw = str(v).encode()
        out += b"d" + _LEN.pack(len(raw)) + raw
    elif isinstance(v, datetime):
        # exact to the microsecond over years 1-9999; a naive datetime stays naive
        aware = v.tzinfo is not None
        micros = (v - (_EPOCH_UTC if aware else _EPOCH)) // _MICROSECOND
        out += b"t"
        out += _TIME.pack(micros, aware)
    elif isinstance(v, dict):
        out += b"m" + _LEN.pack(len(v))
        for k, item in v.items():
            _enc(str(k), out)
            _enc(item, out)
    elif isinstance(v, (list, tuple)):
        out += b"l" + _LEN.pack(len(v))
        for item in v:
            _enc(item, out)
    else:
        raise TypeError(f"cannot store a value of type {type(v).__name__}")


def decode(data: bytes | bytearray | memoryview) -> Any:
    value, pos = _dec(memoryview(data), 0)
    if pos != len(data):
        raise DecodeError("trailing bytes")
    return value


def _dec(buf: memoryview, pos: int) -> tuple[Any, int]:
    try:
        tag = buf[pos]
        pos += 1
        if tag == 0x4E:  # N
            return None, pos
        if tag == 0x54:  # T
            return True, pos
        if tag == 0x46:  # F
            return False, pos
        if tag == 0x69:  # i
            return _I64.unpack_from(buf, pos)[0], pos + 8
        if tag == 0x66:  # f
            return _F64.unpack_from(buf, pos)[0], pos + 8
        if tag == 0x74:  # t
            micros, aware = _TIME.unpack_from(buf, pos)
            if aware > 1:
                raise DecodeError("bad datetime flag")
            base = _EPOCH_UTC if aware else _EPOCH
            return base + micros * _MICROSECOND, pos + _TIME.size
        if tag in (0x73, 0x62, 0x64, 0x49):  # s b d I
            (n,) = _LEN.unpack_from(buf, pos)
            pos += 4
            raw = bytes(buf[pos:pos + n])
            if len(raw) != n:
                raise DecodeError("truncated")
            pos += n
            if tag == 0x73:
                return raw.decode("utf-8", "surrogatepass"), pos
            if tag == 0x62:
                return raw, pos
            if tag == 0x64:
                return Decimal(raw.decode()), pos
            return int.from_bytes(raw, "big", signed=True), pos
        if tag == 0x6D:  # m
            (n,) = _LEN.unpack_from(buf, pos)
            pos += 4
            d: dict[str, Any] = {}
            for _ in range(n):
                k, pos = _dec(buf, pos)
                if not isinstance(k, str):
                    raise DecodeError("table key is not a string")
                d[k], pos = _dec(buf, pos)
            return d, pos
        if tag == 0x6C:  # l
            (n,) = _LEN.unpack_from(buf, pos)
            pos += 4
            items = []
            for _ in range(n):
                item, pos = _dec(buf, pos)
                items.append(item)
            return items, pos
    except (IndexError, struct.error) as exc:
        raise DecodeError("truncated") from exc
    except (UnicodeDecodeError, InvalidOperation, OverflowError, RecursionError) as exc:
        raise DecodeError(f"invalid value: {exc}") from exc
    raise DecodeError(f"unknown tag {tag:#x}")
