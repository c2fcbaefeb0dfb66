"""MQTT sessions driven by bytes for the session tests: clients made of the codec on one
side, real sessions over one in-memory Broker on the other; no sockets, time is a variable."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.base import MemoryStore, Store
from protocols.mqtt.codec import MQTTCodec, encode_packet
from protocols.mqtt.frames import (
    MQTT_5,
    MQTT_311,
    NEED_DATA,
    Connack,
    Connect,
    Packet,
    Properties,
    Will,
)
from protocols.mqtt.persist import take_over
from protocols.mqtt.registry import MQTTRegistry
from protocols.mqtt.session import MQTTSession


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


class World:
    """One broker, its auth, its clock: the server side every client of a test shares."""

    def __init__(self, store: Store | None = None, **mqtt: object) -> None:
        config = load_config()
        self.config = config
        self.mqtt_config = replace(config.mqtt, **mqtt)  # type: ignore[arg-type]
        self.clock = Clock()
        self.store: Store = store if store is not None else MemoryStore()
        self.broker = Broker(self.store, config.auth.vhosts)
        self.auth = AuthService(config.auth)

    @cached_property
    def mqtt_state(self) -> MQTTRegistry:
        """MQTT's sessions and retained messages, made as the server makes them: once, with
        the settings, after the store was read back (here: at the first client)."""
        state = MQTTRegistry(self.broker.durable, self.mqtt_config.retained_max_messages,
                          self.mqtt_config.retained_max_bytes)
        take_over(state, self.broker)
        return state

    def client(self, version: int = MQTT_311, *, loopback: bool = True) -> Client:
        return Client(self, version, loopback)


class Client:
    def __init__(self, world: World, version: int, loopback: bool) -> None:
        self.world = world
        self.version = version
        self.session = MQTTSession(
            world.broker, world.auth, world.mqtt_config, registry=world.mqtt_state,
            peer=("127.0.0.1", 5555),
            loopback=loopback, loopback_users=world.config.auth.loopback_users,
            clock=world.clock)
        self.codec = MQTTCodec(version=version, server=False)
        self._held: list[Packet] = []  # what arrived with the CONNACK

    def send(self, *packets: Packet) -> None:
        self.session.receive_data(b"".join(encode_packet(p, self.version) for p in packets))

    def raw(self, data: bytes) -> None:
        self.session.receive_data(data)

    def received(self) -> list[Packet]:
        self.codec.receive_data(self.session.data_to_send())
        out, self._held = self._held, []
        while (p := self.codec.next_event()) is not NEED_DATA:
            assert not isinstance(p, type(NEED_DATA))
            out.append(p)
        return out

    def connect(self, client_id: str = "c1", *, clean: bool = True, keepalive: int = 0,
                will: Will | None = None, username: str | None = None,
                password: bytes | None = None, properties: Properties | None = None
                ) -> Connack:
        self.send(Connect(client_id, self.version, clean, keepalive, will, username, password,
                          properties or Properties()))
        out = self.received()
        assert out and isinstance(out[0], Connack), out
        self._held = out[1:]
        return out[0]

    @property
    def closed(self) -> bool:
        return self.session.state.name in ("CLOSED", "CLOSING")


__all__ = ["MQTT_311", "MQTT_5", "Client", "Clock", "LaggingStore", "World"]
