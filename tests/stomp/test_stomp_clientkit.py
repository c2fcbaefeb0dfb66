"""stomp.py made testable: one wrapper over its three protocol versions, a listener that
collects frames into queues read with deadlines, and the body of a fixture that disconnects
every client a test opened."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import stomp
from stomp.utils import Frame

TIMEOUT = 10.0  # seconds any single expected frame may take
VERSIONS = ("1.0", "1.1", "1.2")


class Collector(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: queue.Queue[Frame] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[Frame] = queue.Queue()
        self.heartbeats = 0
        self.disconnected: queue.Queue[bool] = queue.Queue()

    def on_message(self, frame: Frame) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame: Frame) -> None:
        self.errors.put(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_disconnected(self) -> None:
        self.disconnected.put(True)


class Peer:
    """One stomp.py connection of a given protocol version."""

    def __init__(self, port: int, version: str, *, vhost: str | None = "/",
                 heartbeats: tuple[int, int] = (0, 0)) -> None:
        self.version = version
        kwargs: dict[str, Any] = {"auto_decode": False}
        if version == "1.0":
            conn: Any = stomp.Connection10([("127.0.0.1", port)], **kwargs)
        else:
            cls = stomp.Connection11 if version == "1.1" else stomp.Connection12
            conn = cls([("127.0.0.1", port)], vhost=vhost, heartbeats=heartbeats, **kwargs)
        self.conn = conn
        self.listener = Collector()
        conn.set_listener("collector", self.listener)

    def connect(self, user: str = "guest", passcode: str = "guest", **headers: str) -> None:
        self.conn.connect(user, passcode, wait=True, headers=headers)

    def close(self) -> None:
        if self.conn.is_connected():
            try:
                self.conn.disconnect()
            except Exception:  # noqa: BLE001 - the broker may have closed it already
                pass

    # -- what came back --------------------------------------------------------------------

    def message(self, timeout: float = TIMEOUT) -> Frame:
        try:
            return self.listener.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MESSAGE within {timeout} s") from None

    def no_message(self, timeout: float = 0.3) -> None:
        try:
            frame = self.listener.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected MESSAGE {frame.headers} {frame.body!r}")

    def receipt(self, receipt_id: str, timeout: float = TIMEOUT) -> None:
        try:
            got = self.listener.receipts.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no RECEIPT {receipt_id} within {timeout} s") from None
        assert got == receipt_id

    def error(self, timeout: float = TIMEOUT) -> Frame:
        try:
            return self.listener.errors.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no ERROR within {timeout} s") from None

    def wait_disconnected(self, timeout: float = TIMEOUT) -> None:
        try:
            self.listener.disconnected.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"still connected after {timeout} s") from None

    # -- version-specific acknowledgements -------------------------------------------------

    def ack(self, msg: Frame, **kw: Any) -> None:
        h = msg.headers
        if self.version == "1.2":
            self.conn.ack(h["ack"], **kw)
        elif self.version == "1.1":
            self.conn.ack(h["message-id"], h["subscription"], **kw)
        else:
            self.conn.ack(h["message-id"], **kw)

    def nack(self, msg: Frame, **kw: Any) -> None:
        h = msg.headers
        if self.version == "1.2":
            self.conn.nack(h["ack"], **kw)
        elif self.version == "1.1":
            self.conn.nack(h["message-id"], h["subscription"], **kw)
        else:  # 1.0 has no NACK in stomp.py: send the frame as RabbitMQ accepts it
            self.conn.send_frame("NACK", {"message-id": h["message-id"], **kw})

    def subscribe(self, destination: str, sub_id: str, ack: str = "auto",
                  **headers: str) -> None:
        """SUBSCRIBE and wait for its receipt, so nothing sent afterwards is missed."""
        receipt = f"sub-{sub_id}"
        self.conn.subscribe(destination=destination, id=sub_id, ack=ack,
                            headers={"receipt": receipt, **headers})
        self.receipt(receipt)


def open_peers(broker: Any) -> Iterator[Callable[..., Peer]]:
    """For a `peers` fixture: `peers(version, connect=True, **options)` -> a connected
    stomp.py client; every client opened is disconnected at the end."""
    opened: list[Peer] = []
    port = broker.ports["stomp"]

    def make(version: str, connect: bool = True, **options: Any) -> Peer:
        peer = Peer(port, version, **options)
        opened.append(peer)
        if connect:
            peer.connect()
        return peer

    yield make
    for peer in opened:
        peer.close()
