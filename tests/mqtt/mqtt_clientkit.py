"""Real MQTT clients against the test broker: paho-mqtt peers with bounded waits, and a raw
socket peer (for what a library will not do on purpose: vanish without DISCONNECT, stay
silent past its keepalive)."""

from __future__ import annotations

import queue
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties as PahoProperties

from protocols.mqtt.codec import MQTTCodec, encode_packet
from protocols.mqtt.frames import NEED_DATA, Connect, Packet

TIMEOUT = 10.0  # seconds any single expected event may take
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


class Peer:
    """A paho client running its network loop in a thread; every wait is bounded."""

    def __init__(self, port: int, client_id: str, protocol: int = V311, *,
                 clean: bool = True, properties: PahoProperties | None = None,
                 will: tuple[str, bytes, int] | None = None, connect: bool = True) -> None:
        self.port = port
        self.protocol = protocol
        kwargs: dict[str, Any] = {}
        if protocol == V311:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, **kwargs)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.unsubacks: queue.Queue[Any] = queue.Queue()
        self.connack: Any = None
        self.session_present: bool | None = None
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        self.client.on_unsubscribe = lambda _c, _u, _mid, codes, _p: self.unsubacks.put(codes)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnected.put(rc)
        if will is not None:
            self.client.will_set(will[0], will[1], will[2])
        self._clean = clean
        self._properties = properties
        if connect:
            self.connect()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack = (rc, props)
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def connect(self) -> None:
        self.connected.clear()
        if self.protocol == V5:
            self.client.connect("127.0.0.1", self.port, clean_start=self._clean,
                                properties=self._properties)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def subscribe(self, topic: str | list[tuple[str, Any]], qos: int = 1,
                  properties: PahoProperties | None = None) -> list[Any]:
        if isinstance(topic, str):
            self.client.subscribe(topic, qos, properties=properties)
        else:
            self.client.subscribe(topic, properties=properties)
        try:
            return self.subacks.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no SUBACK") from None

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: PahoProperties | None = None) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish of {topic} not acknowledged"
        return info

    def message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {timeout} s") from None

    def no_message(self, timeout: float = 0.3) -> None:
        """Nothing arrives: bounded by `timeout` (only used after a message that would have
        come before any unwanted one, so the wait proves the absence)."""
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {msg.topic} {msg.payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RawPeer:
    """A client speaking through our own codec over a plain socket."""

    def __init__(self, port: int, connect: Connect) -> None:
        self.version = connect.protocol_level
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.codec = MQTTCodec(version=self.version, server=False)
        self.send(connect)

    def send(self, packet: Packet) -> None:
        self.sock.sendall(encode_packet(packet, self.version))

    def receive(self) -> Packet:
        while True:
            p = self.codec.next_event()
            if p is not NEED_DATA:
                assert not isinstance(p, type(NEED_DATA))
                return p
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.codec.receive_data(data)

    def close(self) -> None:
        self.sock.close()
