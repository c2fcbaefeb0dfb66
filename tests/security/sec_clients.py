"""Logins over every protocol with real clients, each returning True (in) or False (refused):
pika, paho-mqtt, stomp.py, autobahn (WAMP ticket or WAMP-CRA), httpx (management API).
Also the STOMP and WebSocket tests' client kits for this folder's tests (made importable
here rather than by a conftest.py, whose module name other folders' conftests share)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions

_TESTS = Path(__file__).resolve().parent.parent
for _folder in ("stomp", "websocket"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

from ab_client import JoinFailed, join, leave  # noqa: E402
from test_stomp_clientkit import Peer as StompPeer  # noqa: E402

__all__ = ["TIMEOUT", "JoinFailed", "StompPeer", "join", "leave", "amqp_login",
           "http_login", "mqtt_login", "stomp_login", "wamp_login", "ws_url"]

TIMEOUT = 10.0


def amqp_login(broker: Any, user: str, password: str) -> bool:
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=broker.ports["amqp"], credentials=pika.PlainCredentials(
            user, password), connection_attempts=1, socket_timeout=TIMEOUT)
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
        return False
    return True


def mqtt_login(broker: Any, user: str, password: str, client_id: str) -> bool:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    done = threading.Event()
    result: list[int] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(int(getattr(rc, "value", rc)))
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.ports["mqtt"])
    client.loop_start()
    try:
        assert done.wait(TIMEOUT), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] == 0


def stomp_login(broker: Any, user: str, password: str) -> bool:
    peer = StompPeer(broker.ports["stomp"], "1.2")
    try:
        peer.connect(user, password)
    except Exception:  # noqa: BLE001 - stomp.py raises on the ERROR frame's close
        return False
    ok = peer.conn.is_connected()
    peer.close()
    return bool(ok)


def ws_url(broker: Any) -> str:
    return f"ws://127.0.0.1:{broker.ports['http']}/ws"


def wamp_login(broker: Any, user: str, password: str, method: str = "ticket") -> str:
    """The authmethod of the joined session, or the ABORT reason."""
    async def main() -> str:
        try:
            s = await join(ws_url(broker), authmethods=[method], authid=user, secret=password)
        except JoinFailed as exc:
            return exc.reason
        details = s.details
        await leave(s)
        return str(details.authmethod)

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def http_login(broker: Any, user: str, password: str) -> bool:
    response = httpx.get(f"http://127.0.0.1:{broker.ports['http']}/api/whoami",
                         auth=(user, password), timeout=TIMEOUT)
    return response.status_code == 200
