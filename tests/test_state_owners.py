"""Every piece of state has an owner that is made with its settings and passed in.

The server makes the broker, the auth service, MQTT's state and WAMP's router with the
config's values; two servers (or two brokers, as in tests) share nothing; the vhosts are
held once (the broker's) and the auth service asks for them; no module keeps mutable state.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.auth.service import AuthService, User
from gateway.config import load_config, with_overrides
from gateway.core.broker import Broker
from gateway.server.app import Server
from gateway.server.connection import PASSWORD_CHECK_THREADS
from gateway.server.factories import SECRET_FILE
from gateway.store.base import MemoryStore
from protocols.amqp.session import AMQPSession

ROOT = Path(__file__).resolve().parent.parent


def server(data_dir: Path, text: str = "") -> Server:
    path = data_dir.parent / f"{data_dir.name}.toml"
    path.write_text(text)
    data_dir.mkdir()
    return Server(with_overrides(load_config(path), host="127.0.0.1", data_dir=data_dir))


def test_the_server_makes_the_broker_with_its_settings(tmp_path: Path) -> None:
    s = server(tmp_path / "a", "[store]\npaging_threshold = 4096\n"
                               "[limits]\nmax_queues_per_vhost = 3\n")
    assert s.broker.meter.paging_threshold == 4096
    assert s.broker.max_queues_per_vhost == 3
    s.recover()
    assert s.broker.vhost("/").max_queues == 3


def test_two_servers_share_no_state(tmp_path: Path) -> None:
    a, b = server(tmp_path / "a"), server(tmp_path / "b")
    assert a.mqtt_state is not b.mqtt_state
    assert a.mqtt_state.retained_max_messages == a.config.mqtt.retained_max_messages
    # the WAMP router is made at the first WAMP session, once, and keeps its secret in
    # its own server's data directory
    assert not (tmp_path / "a" / SECRET_FILE).exists()
    router = a.wamp_router
    assert a.wamp_router is router and b.wamp_router is not router
    assert (tmp_path / "a" / SECRET_FILE).read_bytes() == router.secret
    assert (tmp_path / "b" / SECRET_FILE).read_bytes() == b.wamp_router.secret
    assert router.secret != b.wamp_router.secret


def test_a_servers_password_checks_run_under_its_own_limiter(tmp_path: Path) -> None:
    a, b = server(tmp_path / "a"), server(tmp_path / "b")
    answers: list[object] = []
    pending = a.auth.login("guest", "guest", peer="127.0.0.1", protocol="AMQP", now=1.0,
                           then=answers.append)
    assert pending is not None and answers == []  # handed out, not run in the event loop
    assert pending.limiter is a.auth.check_limiter
    assert pending.limiter is not None
    assert pending.limiter.total_tokens == PASSWORD_CHECK_THREADS
    assert a.auth.check_limiter is not b.auth.check_limiter
    pending.finish(pending.verify())
    assert isinstance(answers[0], User)


def test_the_vhosts_are_held_once_by_the_broker() -> None:
    config = load_config()
    broker = Broker(MemoryStore(), ())
    auth = AuthService(config.auth, broker=broker)
    assert auth.list_vhosts() == list(broker.vhosts) == list(config.auth.vhosts)
    auth.add_vhost("orders")
    assert "orders" in broker.vhosts and auth.vhost_exists("orders")
    broker.delete_vhost("orders")  # whoever deletes it, both see the one set
    assert not auth.vhost_exists("orders") and "orders" not in auth.list_vhosts()
    broker.add_vhost("made-by-the-core")
    assert auth.vhost_exists("made-by-the-core")


def test_a_restored_vhost_list_keeps_the_stores_order() -> None:
    store = MemoryStore()
    broker = Broker(store, ())
    auth = AuthService(load_config().auth, store=store, broker=broker)
    state = store.recover()
    state.seeded = True
    state.vhosts = ["z", "/", "a"]
    auth.restore(state)
    assert auth.list_vhosts() == list(broker.vhosts) == ["z", "/", "a"]


def test_connection_ids_are_the_brokers() -> None:
    config = load_config()

    def session(broker: Broker) -> AMQPSession:
        return AMQPSession(broker, AuthService(config.auth, broker=broker),
                           peer=("127.0.0.1", 1), loopback=True, clock=lambda: 0.0)

    one, other = Broker(MemoryStore()), Broker(MemoryStore())
    assert [session(one).id for _ in range(3)] == [1, 2, 3]
    assert session(other).id == 1  # another broker counts its own


MUTABLE_MAKERS = {"WeakKeyDictionary", "WeakValueDictionary", "count", "CapacityLimiter",
                  "Semaphore", "Lock", "defaultdict", "Counter"}


def module_level_state(path: Path) -> list[str]:
    """`global` statements anywhere, and module-level names bound to a made-at-import
    mutable object of the kinds that held run-time state (weak maps keyed by broker or
    server, id counters, limiters)."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{path}:{node.lineno}: global {', '.join(node.names)}")
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Call):
            func = value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in MUTABLE_MAKERS:
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_keeps_run_time_state() -> None:
    found = [hit for package in ("gateway", "protocols")
             for path in sorted((ROOT / package).rglob("*.py"))
             for hit in module_level_state(path)]
    assert found == []
