"""Sans-IO STOMP 1.0/1.1/1.2 codec: bytes in -> `Frame`/`Heartbeat` events, frames -> bytes.

Theory of operation
-------------------
`receive_data(bytes)` appends to one buffer; `next_event()` returns the next complete
event or `NEED_DATA`. Decoding walks the buffer with an offset, in four states:

    IDLE --EOL--> IDLE (a Heartbeat)       IDLE --other byte--> COMMAND
    COMMAND --line--> HEADERS --empty line--> BODY --NUL--> IDLE (a Frame)

Each limit is checked as soon as the bytes that break it are buffered, never after the
whole frame has arrived: a header line longer than `max_header_length`, more than
`max_headers` headers, or a frame (command + headers + body) over `max_frame_size` —
including one announced by a `content-length` over the limit, refused before its body is
read. Any violation raises `StompProtocolError`, after which the codec stays broken (every
later call raises it again): the session sends ERROR and closes.

Versions (set `version` once the session has negotiated it):
- 1.0: header values are taken as they are; a value carrying an end-of-line cannot be
  written and has it replaced by a space on output.
- 1.1: `\\n`, `\\c`, `\\\\` are escapes in header names and values; any other escape is a
  fatal error (spec 1.1 "Value Encoding"). 1.1 has no escape for CR, and a CR before LF
  reads as part of the end-of-line, so a CR is written as a space.
- 1.2: `\\r` as well; a line may end with CR LF (spec 1.2 "Augmented BNF").
Headers of CONNECT, STOMP and CONNECTED are never escaped (spec 1.2 "Value Encoding").
CR LF is accepted as an end-of-line in every version, as RabbitMQ accepts it.
Header names and values must be UTF-8 (spec 1.2 "Value Encoding"); bodies are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum, auto

from protocols.stomp.frames import (
    CLIENT_COMMANDS,
    NEED_DATA,
    UNESCAPED_COMMANDS,
    Command,
    Event,
    Frame,
    Heartbeat,
    NeedData,
    StompProtocolError,
    Version,
)

MAX_COMMAND_LINE = 32  # the longest command is 11 characters; a little slack for CR

_COMMANDS = {c.value.encode(): c for c in Command}

_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_12 = {**_UNESCAPE_11, "r": "\r"}
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": " "})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
_FLATTEN_10 = str.maketrans({"\n": " ", "\r": " "})


class _State(Enum):
    IDLE = auto()
    COMMAND = auto()
    HEADERS = auto()
    BODY = auto()


def escape(value: str, version: Version | None) -> str:
    """A header name or value as written on the wire in `version` (None: unescaped)."""
    if version is Version.V1_2:
        return value.translate(_ESCAPE_12)
    if version is Version.V1_1:
        return value.translate(_ESCAPE_11)
    return value.translate(_FLATTEN_10)


def unescape(raw: str, version: Version | None) -> str:
    if version is None or version is Version.V1_0 or "\\" not in raw:
        return raw
    table = _UNESCAPE_12 if version is Version.V1_2 else _UNESCAPE_11
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < n else ""
        value = table.get(nxt)
        if value is None:
            shown = "\\" + nxt if nxt else "\\ at the end of the header"
            raise StompProtocolError(
                "Bad header",
                f"undefined escape sequence {shown!r} in STOMP {version.value}; the "
                "defined ones are " + ", ".join("\\" + k for k in table))
        out.append(value)
        i += 2
    return "".join(out)


def encode_headers(headers: Iterable[tuple[str, str]], version: Version | None) -> bytes:
    """Header lines, each ending in LF, escaped for `version` (None or 1.0: not escaped,
    with end-of-lines flattened to spaces since they cannot be written)."""
    return "".join(
        [f"{escape(k, version)}:{escape(v, version)}\n" for k, v in headers]).encode("utf-8")


def encode_frame(command: Command, headers: Iterable[tuple[str, str]] | Mapping[str, str],
                 body: bytes, version: Version | None,
                 *, content_length: bool = True) -> bytes:
    """One frame; `content-length` is added (when asked) so the body may hold NUL bytes."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if content_length and (body or command in (Command.MESSAGE, Command.ERROR,
                                               Command.SEND)):
        items.append(("content-length", str(len(body))))
    esc = None if command in UNESCAPED_COMMANDS else version
    return b"".join((command.value.encode(), b"\n", encode_headers(items, esc), b"\n", body,
                     b"\x00"))


class StompCodec:
    def __init__(self, *, max_frame_size: int = 4 * 1024 * 1024, max_headers: int = 100,
                 max_header_length: int = 8192,
                 accept: frozenset[Command] = CLIENT_COMMANDS) -> None:
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        self.accept = accept
        self.version: Version | None = None
        self._buf = bytearray()
        self._pos = 0  # where the next unread byte of the current frame or line is
        self._start = 0  # where the current frame starts in the buffer
        self._state = _State.IDLE
        self._error: StompProtocolError | None = None
        self._command: Command | None = None
        self._headers: dict[str, str] = {}
        self._count = 0
        self._length: int | None = None
        self._body_at = 0

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._error is not None:
            return
        if self._start and self._start * 2 >= len(self._buf):
            del self._buf[:self._start]
            self._pos -= self._start
            self._body_at -= self._start
            self._start = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._start

    def next_event(self) -> Event | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except StompProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _next(self) -> Event | NeedData:
        while True:
            state = self._state
            if state is _State.IDLE:
                event = self._idle()
                if event is not None:
                    return event
                if self._state is _State.IDLE:
                    return NEED_DATA
            elif state is _State.COMMAND:
                if not self._command_line():
                    return NEED_DATA
            elif state is _State.HEADERS:
                if not self._header_lines():
                    return NEED_DATA
            else:
                frame = self._body()
                if frame is None:
                    return NEED_DATA
                return frame

    def _idle(self) -> Heartbeat | None:
        buf = self._buf
        start = self._start
        if start >= len(buf):
            return None
        first = buf[start]
        if first == 0x0A:
            self._start = start + 1
            return Heartbeat()
        if first == 0x0D:
            if start + 1 >= len(buf):
                return None
            if buf[start + 1] == 0x0A:
                self._start = start + 2
                return Heartbeat()
        self._state = _State.COMMAND
        self._pos = start
        return None

    def _line(self, limit: int, what: str) -> bytes | None:
        """The next line from `_pos` without its EOL, or None when not all here yet."""
        buf = self._buf
        end = buf.find(b"\n", self._pos)
        if end < 0:
            if len(buf) - self._pos > limit:
                raise StompProtocolError(what, f"a line over {limit} bytes")
            self._check_frame_size(len(buf))
            return None
        if end - self._pos > limit:
            raise StompProtocolError(what, f"a line over {limit} bytes")
        line = bytes(buf[self._pos:end])
        self._pos = end + 1
        self._check_frame_size(self._pos)
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _check_frame_size(self, upto: int) -> None:
        if upto - self._start > self.max_frame_size:
            raise StompProtocolError(
                "Frame too large", f"the frame is over the maximum frame size of "
                f"{self.max_frame_size} bytes")

    def _command_line(self) -> bool:
        line = self._line(MAX_COMMAND_LINE, "Unknown command")
        if line is None:
            return False
        command = _COMMANDS.get(line)
        if command is None or command not in self.accept:
            shown = line.decode("utf-8", "replace")
            raise StompProtocolError("Unknown command", f"'{shown}' is not a STOMP command")
        self._command = command
        self._headers = {}
        self._count = 0
        self._length = None
        self._state = _State.HEADERS
        return True

    def _header_lines(self) -> bool:
        assert self._command is not None
        escaped = None if self._command in UNESCAPED_COMMANDS else self.version
        if self._header_block(escaped):
            return True
        # the block is not all here: take the complete lines one by one, so the limits
        # are enforced before the rest arrives
        while True:
            line = self._line(self.max_header_length, "Header too long")
            if line is None:
                return False
            if not line:
                self._state = _State.BODY
                self._body_at = self._pos
                return True
            self._count += 1
            if self._count > self.max_headers:
                raise StompProtocolError(
                    "Too many headers", f"a frame may have at most {self.max_headers} headers")
            colon = line.find(b":")
            if colon <= 0:
                shown = line[:64].decode("utf-8", "replace")
                raise StompProtocolError(
                    "Malformed frame", f"header line {shown!r} is not of the form name:value")
            try:
                name = line[:colon].decode("utf-8")
                value = line[colon + 1:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise StompProtocolError(
                    "Bad header", f"header is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start})") from exc
            name = unescape(name, escaped)
            value = unescape(value, escaped)
            if name not in self._headers:  # spec 1.2: the first occurrence wins
                self._headers[name] = value
            if name == "content-length" and self._length is None:
                self._length = self._content_length(value)

    def _header_block(self, escaped: Version | None) -> bool:
        """Fast path: when the blank line ending the headers is buffered, decode the whole
        block at once. False when it is not here yet."""
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\n\n", pos - 1)  # pos - 1 is the command line's LF
        # a CR LF blank line may start before the first LF LF (which it can overlap)
        crlf = buf.find(b"\n\r\n", pos - 1, end + 2 if end >= 0 else len(buf))
        if crlf >= 0:
            end, skip = crlf, 3
        elif end >= 0:
            skip = 2
        else:
            return False
        body_at = end + skip
        self._check_frame_size(body_at)
        if end < pos:  # no headers at all
            self._finish_headers(body_at)
            return True
        block = bytes(buf[pos:end])
        lines = block.split(b"\n")
        if self._count + len(lines) > self.max_headers:
            raise StompProtocolError(
                "Too many headers", f"a frame may have at most {self.max_headers} headers")
        if len(block) > self.max_header_length and max(map(len, lines)) > \
                self.max_header_length:
            raise StompProtocolError("Header too long",
                                     f"a line over {self.max_header_length} bytes")
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StompProtocolError(
                "Bad header", f"header is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start})") from exc
        headers = self._headers
        strip = "\r" in text
        for line in text.split("\n"):
            if strip and line.endswith("\r"):
                line = line[:-1]
            name, colon, value = line.partition(":")
            if not colon or not name:
                raise StompProtocolError(
                    "Malformed frame", f"header line {line[:64]!r} is not of the form "
                    "name:value")
            if escaped is not None and "\\" in line:
                name = unescape(name, escaped)
                value = unescape(value, escaped)
            if name not in headers:  # spec 1.2: the first occurrence wins
                headers[name] = value
                if name == "content-length":
                    self._pos = body_at
                    self._length = self._content_length(value)
        self._count += len(lines)
        self._finish_headers(body_at)
        return True

    def _finish_headers(self, body_at: int) -> None:
        self._pos = body_at
        self._body_at = body_at
        self._state = _State.BODY

    def _content_length(self, value: str) -> int:
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise StompProtocolError("Invalid content-length",
                                     f"content-length {value!r} is not a non-negative integer")
        length = int(text)
        if self._pos - self._start + length > self.max_frame_size:
            raise StompProtocolError(
                "Frame too large", f"content-length {length} is over the maximum frame size "
                f"of {self.max_frame_size} bytes")
        return length

    def _body(self) -> Frame | None:
        buf = self._buf
        start = self._body_at
        length = self._length
        if length is not None:
            end = start + length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise StompProtocolError(
                    "Malformed frame", f"the body of content-length {length} is not "
                    "followed by a NUL byte")
        else:
            end = buf.find(b"\x00", self._pos)
            if end < 0:
                self._pos = len(buf)
                self._check_frame_size(len(buf))
                return None
            self._check_frame_size(end)
        body = bytes(buf[start:end])
        assert self._command is not None
        frame = Frame(self._command, self._headers, body)
        self._start = end + 1
        self._pos = self._start
        self._state = _State.IDLE
        self._command = None
        self._headers = {}
        return frame

    # -- output ----------------------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        return encode_frame(frame.command, frame.headers, frame.body, self.version)

    @staticmethod
    def heartbeat() -> bytes:
        return b"\n"
