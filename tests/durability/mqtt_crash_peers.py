"""paho-mqtt clients for the MQTT crash tests: a peer whose network loop runs in a thread
of the test (no automatic reconnect, so a client of a killed broker stays dead until the
test reconnects it), and a publisher of numbered messages that knows which were confirmed.
Every wait is a bounded deadline loop.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from conftest import Broker
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

_PUBLISH_Q2 = re.compile(r"Received PUBLISH \(d\d, q2, r\d, m(\d+)\)")
_PUBREL = re.compile(r"Received PUBREL \(Mid: (\d+)\)")
HOST = "127.0.0.1"
WAIT = 8.0  # seconds any one expected event may take
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@dataclass
class Got:
    """One PUBLISH as the subscriber's application saw it."""

    payload: str
    dup: bool
    retain: bool
    qos: int
    mid: int
    topic: str = ""


class Peer:
    """A paho client whose network loop runs in a thread of ours (no automatic reconnect,
    so a client of a killed broker stays dead). `ack` decides, per QoS 1 message, whether
    to PUBACK it at once (manual acks); QoS 2 is acknowledged by paho itself."""

    def __init__(self, port: int, client_id: str, version: MQTTProtocolVersion, *,
                 clean: bool, ack: Callable[[Got], bool] | None = None) -> None:
        kwargs: dict[str, Any] = {"clean_session": clean} if version == V311 else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=version, manual_ack=ack is not None, **kwargs)
        self.client.max_inflight_messages_set(100)
        self.port = port
        self.version = version
        self.clean = clean
        self.ack = ack
        self.lock = threading.Lock()
        self.got: list[Got] = []
        self.unacked: dict[str, int] = {}  # QoS 1 payload -> mid, delivered and held
        self.puback_mids: set[int] = set()  # PUBACK/PUBCOMP received for our publishes
        self.subacks = 0
        self.session_present: bool | None = None
        self.connected = threading.Event()
        self.dead = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_log = self._on_log
        # QoS 2 PUBLISHes received (PUBREC sent) whose PUBREL has not been read yet
        self.held_qos2: set[int] = set()
        # when this says so, the network thread stops reading (the socket stays open)
        self.stall_when: Callable[[], bool] | None = None
        self.stalled = threading.Event()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        assert not rc.is_failure, f"CONNECT refused: {rc}"
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got = Got(msg.payload.decode(), bool(msg.dup), bool(msg.retain), msg.qos, msg.mid,
                  msg.topic)
        with self.lock:
            self.got.append(got)
            if got.qos == 1 and self.ack is not None:
                if self.ack(got):
                    self.client.ack(got.mid, 1)
                else:
                    self.unacked[got.payload] = got.mid

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            self.puback_mids.add(mid)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        assert all(not c.is_failure for c in codes), f"SUBSCRIBE refused: {codes}"
        with self.lock:
            self.subacks += 1

    def _on_log(self, _c: Any, _u: Any, _level: int, text: str) -> None:
        # paho's own log lines are the public view of its QoS 2 receive state
        found = _PUBLISH_Q2.match(text) or _PUBREL.match(text)
        if found is not None:
            with self.lock:
                if text.startswith("Received PUBLISH"):
                    self.held_qos2.add(int(found.group(1)))
                else:
                    self.held_qos2.discard(int(found.group(1)))

    def held(self) -> int:
        with self.lock:
            return len(self.held_qos2)

    def _run(self) -> None:
        for _ in range(100_000):  # bounded: at most ~100 s at 1 ms a turn, far past any test
            if self._stop.is_set():
                return
            if self.client.loop(timeout=0.01) != mqtt.MQTT_ERR_SUCCESS:
                self.dead.set()
                return
            if self.stall_when is not None and self.stall_when():
                self.stalled.set()
                return

    def open(self, *, expiry: int = 600) -> bool:
        """Connect (resuming the session unless `clean`); returns session present."""
        props = None
        if self.version == V5:
            props = PahoProperties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if self.clean else expiry
            self.client.connect(HOST, self.port, keepalive=30, clean_start=self.clean,
                                properties=props)
        else:
            self.client.connect(HOST, self.port, keepalive=30)
        self._thread.start()
        assert self.connected.wait(WAIT), "no CONNACK"
        assert self.session_present is not None
        return self.session_present

    def subscribe(self, topic_filter: str, qos: int) -> None:
        with self.lock:
            before = self.subacks
        self.client.subscribe(topic_filter, qos)
        assert wait_for(lambda: self.subacks > before), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos, retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed: {info.rc}"
        return info.mid

    def confirmed(self, mid: int) -> bool:
        with self.lock:
            return mid in self.puback_mids

    def snapshot(self) -> list[Got]:
        with self.lock:
            return list(self.got)

    def payloads(self) -> list[str]:
        with self.lock:
            return [g.payload for g in self.got]

    def reconnect(self) -> bool:
        """After the broker restarted: connect again with the same client object (which
        keeps its side of the session: QoS 2 messages received and not yet released) and
        a new network thread; returns session present."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(WAIT)
        self._stop = threading.Event()
        self.stall_when = None
        self.stalled.clear()
        self.connected.clear()
        self.dead.clear()
        self.session_present = None
        deadline = time.monotonic() + WAIT
        while True:  # the restarted broker may take a moment to listen again
            try:
                self.client.reconnect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=self._thread.name)
        self._thread.start()
        assert self.connected.wait(WAIT), "no CONNACK after reconnecting"
        assert self.session_present is not None
        return self.session_present

    def close(self, graceful: bool = True) -> None:
        if graceful and not self.dead.is_set():
            self.client.disconnect()
            wait_for(self.dead.is_set, 2.0)  # paho's loop returns once DISCONNECT is out
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(WAIT)
        assert not self._thread.is_alive()
        if self.client.socket() is not None:
            self.client.disconnect()


class Stream:
    """A publisher that sends numbered messages of one QoS and knows which were confirmed
    (PUBACK for QoS 1, PUBCOMP for QoS 2)."""

    def __init__(self, broker: Broker, name: str, version: MQTTProtocolVersion,
                 topic: str, qos: int) -> None:
        self.peer = Peer(mqtt_port(broker), name, version, clean=True)
        self.peer.open()
        self.name = name
        self.topic = topic
        self.qos = qos
        self.mids: dict[int, str] = {}

    def send(self, count: int) -> None:
        base = len(self.mids)
        for n in range(base, base + count):
            payload = f"{self.name}-{n}"
            self.mids[self.peer.publish(self.topic, payload.encode(), self.qos)] = payload

    def confirmed(self) -> set[str]:
        with self.peer.lock:
            return {p for mid, p in self.mids.items() if mid in self.peer.puback_mids}

    def sent(self) -> set[str]:
        return set(self.mids.values())


def mqtt_port(broker: Broker) -> int:
    port = broker.ports["mqtt"]
    assert port, "the broker has no MQTT listener"
    return port

