"""A STOMP client made of bytes, joined to a real session, core and auth; no sockets.

Time is a variable the test moves; the store may be told to lag, so a test decides when
writes become durable."""

from __future__ import annotations

from typing import Any

from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.base import MemoryStore
from protocols.stomp.codec import StompCodec, encode_frame
from protocols.stomp.frames import NEED_DATA, Command, Frame, Heartbeat, Version
from protocols.stomp.session import StompSession


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LaggingStore(MemoryStore):
    """A store whose writes become durable only when the test says so."""

    def _note(self) -> None:
        self.appended += 1

    def sync(self) -> None:
        self.durable = self.appended


class Client:
    def __init__(self, broker: Broker | None = None, *, store: Any = None,
                 clock: Clock | None = None, **options: Any) -> None:
        config = load_config()
        self.clock = clock or Clock()
        self.broker = broker or Broker(store if store is not None else MemoryStore(),
                                       config.auth.vhosts)
        self.session = StompSession(self.broker, AuthService(config.auth),
                                    peer=("127.0.0.1", 5555), loopback=True,
                                    clock=self.clock, **options)
        self.reader = StompCodec(accept=frozenset(Command))
        self.version: Version | None = None
        self.heartbeats = 0

    def raw(self, data: bytes) -> None:
        self.session.receive_data(data)

    def send(self, command: Command | str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> None:
        cmd = Command(command) if isinstance(command, str) else command
        items = list((headers or {}).items())
        self.raw(encode_frame(cmd, items, body, self.version, content_length=bool(body)))

    def frames(self) -> list[Frame]:
        self.reader.receive_data(self.session.data_to_send())
        out: list[Frame] = []
        while (event := self.reader.next_event()) is not NEED_DATA:
            if isinstance(event, Heartbeat):
                self.heartbeats += 1
            else:
                assert isinstance(event, Frame)
                out.append(event)
        return out

    def one(self, command: Command) -> Frame:
        frames = self.frames()
        assert [f.command for f in frames] == [command], frames
        return frames[0]

    def connect(self, version: str | None = "1.2", **headers: str) -> Frame:
        hdrs = {"login": "guest", "passcode": "guest", "host": "/"}
        if version is not None:
            hdrs["accept-version"] = version
        hdrs.update(headers)
        self.send(Command.CONNECT, hdrs)
        frames = self.frames()
        assert frames, "no answer to CONNECT"
        if frames[0].command is Command.CONNECTED:
            self.version = Version(frames[0].headers["version"])
            self.reader.version = self.version
        return frames[0]

    def error(self) -> Frame:
        frame = self.one(Command.ERROR)
        assert self.session.closed
        return frame
