"""Users, vhosts and permissions from RabbitMQ (gateway/auth/upstream.py) against a private
RabbitMQ node: logins checked by RabbitMQ through `AuthService` the way a session drives it
(login -> PendingCheck -> worker thread -> finish), vhost access, and permissions set in
RabbitMQ decided by `gateway.auth.access` exactly as RabbitMQ decides them for pika."""

from __future__ import annotations

import queue
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion

from gateway.auth import access
from gateway.auth.login import PendingCheck
from gateway.auth.service import AuthService, LoginRefused, User
from gateway.auth.upstream import (
    Node,
    RabbitMQAuthConfig,
    RabbitMQUsers,
    UpstreamUnavailable,
    amqp_login,
)
from gateway.config import load_config, with_overrides
from gateway.core.errors import AccessRefused, NotAllowed
from gateway.server.app import Server
from gateway.server.connection import run_password_check

from .rabbit import Cluster, free_port


class Admin:
    """RabbitMQ's HTTP API as its administrator: what the tests set up in RabbitMQ."""

    def __init__(self, node: Cluster) -> None:
        self.node = node.nodes[0]
        self.http = httpx.Client(base_url=self.node.management_url, timeout=10)

    def put(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.put(path, json=body)
        assert response.status_code in (201, 204), response.text

    def user(self, password: str, *, tags: str = "", vhost: str | None = "/",
             perms: tuple[str, str, str] = (".*", ".*", ".*")) -> str:
        name = f"dev{secrets.token_hex(4)}"
        self.put(f"/api/users/{name}", {"password": password, "tags": tags})
        if vhost is not None:
            self.permissions(name, vhost, *perms)
        return name

    def permissions(self, name: str, vhost: str, configure: str, write: str,
                    read: str) -> None:
        self.put(f"/api/permissions/{_q(vhost)}/{name}",
                 {"configure": configure, "write": write, "read": read})

    def topic_permissions(self, name: str, vhost: str, exchange: str, write: str,
                          read: str) -> None:
        self.put(f"/api/topic-permissions/{_q(vhost)}/{name}",
                 {"exchange": exchange, "write": write, "read": read})

    def vhost(self) -> str:
        name = f"vh{secrets.token_hex(3)}"
        self.put(f"/api/vhosts/{name}", {})
        return name


def _q(vhost: str) -> str:
    return "%2F" if vhost == "/" else vhost


@pytest.fixture
def admin(rabbit_node: Cluster) -> Iterator[Admin]:
    a = Admin(rabbit_node)
    yield a
    a.http.close()


def users_of(cluster: Cluster, **config: Any) -> RabbitMQUsers:
    node = cluster.nodes[0]
    return RabbitMQUsers.from_urls(cluster.urls(), node.management_url, config)


def service(users: RabbitMQUsers, **auth: Any) -> AuthService:
    config = replace(load_config().auth, **auth)
    return AuthService(config, inline_checks=False, source=users)


def login(auth: AuthService, name: str, password: str, peer: str = "10.1.2.3"
          ) -> tuple[User | LoginRefused | None, PendingCheck | None]:
    """`AuthService.login` as a session calls it: the answer if given at once, and the
    PendingCheck the I/O layer must run otherwise."""
    answers: list[User | LoginRefused] = []
    pending = auth.login(name, password, peer=peer, protocol="MQTT", now=0.0,
                         then=answers.append)
    return (answers[0] if answers else None), pending


async def settle(auth: AuthService, name: str, password: str, peer: str = "10.1.2.3"
                 ) -> User | LoginRefused:
    """A login through the server's own runner of PendingChecks (a worker thread)."""
    answers: list[User | LoginRefused] = []
    pending = auth.login(name, password, peer=peer, protocol="MQTT", now=0.0,
                         then=answers.append)
    if pending is not None:
        assert not answers
        await run_password_check(pending)
    assert len(answers) == 1
    return answers[0]


# -- the password check itself ---------------------------------------------------------------

def test_amqp_handshake_checks_the_password(rabbit_node: Cluster, admin: Admin) -> None:
    name = admin.user("right-pw")
    nodes = [Node.parse(u) for u in rabbit_node.urls()]
    assert amqp_login(nodes, name, "right-pw")
    assert not amqp_login(nodes, name, "wrong-pw")
    assert not amqp_login(nodes, f"nobody{secrets.token_hex(3)}", "right-pw")
    # a user with no access to the vhost the check opens: the password was still right
    # (RabbitMQ refused the vhost with 530 after accepting it)
    lonely = admin.user("pw2", vhost=None)
    assert amqp_login(nodes, lonely, "pw2")
    assert not amqp_login(nodes, lonely, "pw3")
    # a dead node first: the next one answers
    dead = Node("127.0.0.1", free_port())
    assert amqp_login([dead, *nodes], name, "right-pw")
    with pytest.raises(UpstreamUnavailable):
        amqp_login([dead], name, "right-pw", timeout=2)


# -- logins through AuthService ------------------------------------------------------------------

async def test_login_is_checked_by_rabbitmq(rabbit_node: Cluster, admin: Admin) -> None:
    users = users_of(rabbit_node)
    auth = service(users)
    name = admin.user("s3cret", tags="monitoring,custom")
    answer, pending = login(auth, name, "s3cret")
    assert answer is None and pending is not None  # a round trip: the I/O layer's to run
    await run_password_check(pending)
    user = auth.user(name)
    assert user is not None and user.tags == ("monitoring", "custom")  # RabbitMQ's tags

    for who, password in ((name, "wrong"), (f"nobody{secrets.token_hex(3)}", "s3cret"),
                          (name, "")):
        refused = await settle(auth, who, password)
        assert isinstance(refused, LoginRefused)
        assert refused.code == 403 and "Login was refused" in refused.text

    # vhosts: RabbitMQ's, and the user's permission rows on them
    logged_in = await settle(auth, name, "s3cret")
    assert isinstance(logged_in, User)
    auth.check_vhost(logged_in, "/")
    other = admin.vhost()
    await users.refresh()  # the new vhost, known after the next refresh
    with pytest.raises(NotAllowed) as refused_vhost:
        auth.check_vhost(logged_in, other)
    assert refused_vhost.value.code == 530
    assert f"access to vhost '{other}' refused for user '{name}'" in str(refused_vhost.value)
    with pytest.raises(NotAllowed, match="vhost nothere not found"):
        auth.check_vhost(logged_in, "nothere")
    assert auth.vhost_exists(other) and not auth.vhost_exists("nothere")


async def test_a_success_is_cached_briefly_and_failures_never(rabbit_node: Cluster,
                                                               admin: Admin) -> None:
    users = users_of(rabbit_node, auth_cache_ttl=600)
    auth = service(users)
    name = admin.user("first")
    assert isinstance(await settle(auth, name, "first"), User)
    # answered at once from the cache: no PendingCheck, no upstream connection; the
    # password changed in RabbitMQ meanwhile, so only the cache can have said yes
    admin.put(f"/api/users/{name}", {"password": "second", "tags": ""})
    answer, pending = login(auth, name, "first")
    assert pending is None and isinstance(answer, User)
    # another password is not in the cache: asked upstream (the new one works)
    answer, pending = login(auth, name, "second")
    assert answer is None and pending is not None
    await run_password_check(pending)
    wrong = await settle(auth, name, "third")
    assert isinstance(wrong, LoginRefused)
    again, pending = login(auth, name, "third")  # a failure is asked again, not cached
    assert again is None and pending is not None

    # auth_cache_ttl 0: every login goes to RabbitMQ
    uncached = service(users_of(rabbit_node, auth_cache_ttl=0))
    assert isinstance(await settle(uncached, name, "second"), User)
    answer, pending = login(uncached, name, "second")
    assert answer is None and pending is not None


async def test_failed_login_limit_applies(rabbit_node: Cluster, admin: Admin) -> None:
    auth = service(users_of(rabbit_node), failed_login_limit=3, failed_login_window=600,
                   failed_login_block=600)
    name = admin.user("pw")
    for _ in range(3):
        assert isinstance(await settle(auth, name, "guess", peer="10.9.9.9"), LoginRefused)
    # blocked: refused at once, even with the right password, and RabbitMQ is not asked
    answer, pending = login(auth, name, "pw", peer="10.9.9.9")
    assert pending is None and isinstance(answer, LoginRefused)
    assert "blocked" in answer.reason
    assert isinstance(await settle(auth, name, "pw", peer="10.9.9.10"), User)


async def test_rabbitmq_down_refuses_without_counting(rabbit_node: Cluster,
                                                      admin: Admin) -> None:
    dead = f"amqp://127.0.0.1:{free_port()}/%2F"
    users = RabbitMQUsers.from_urls([dead], rabbit_node.nodes[0].management_url,
                                    {"auth_timeout": 2})
    auth = service(users, failed_login_limit=2, failed_login_window=600,
                   failed_login_block=600)
    name = admin.user("pw")
    for _ in range(3):
        refused = await settle(auth, name, "pw", peer="10.7.7.7")
        assert isinstance(refused, LoginRefused)
        assert "RabbitMQ did not answer" in refused.reason
    assert not auth.login_blocked("10.7.7.7", 0.0)


def test_loopback_users_still_apply(rabbit_node: Cluster, admin: Admin) -> None:
    name = admin.user("pw")
    auth = service(users_of(rabbit_node), loopback_users=frozenset({name}))
    with pytest.raises(LoginRefused):
        auth.authenticate(name, "pw", peer="10.1.1.1")
    assert auth.authenticate(name, "pw", peer="127.0.0.1", loopback=True).name == name


# -- permissions: what RabbitMQ allows, access.py allows -------------------------------------

def _rabbit_allows(cluster: Cluster, name: str, password: str,
                   operation: Callable[[Any], object]) -> bool:
    """Whether RabbitMQ lets the user do `operation` on a fresh channel (pika)."""
    params = pika.URLParameters(cluster.nodes[0].url(name, password))
    with pika.BlockingConnection(params) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        try:
            operation(channel)
            conn.process_data_events(0.2)
            if not channel.is_open:
                return False
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 403, exc
            return False
        return True


def test_permissions_and_topic_permissions_as_rabbitmq_decides(
        rabbit_node: Cluster, admin: Admin) -> None:
    name = admin.user("pw", perms=("^dev-", "^dev-|^amq\\.topic$", "^dev-|^amq\\.topic$"))
    admin.topic_permissions(name, "/", "amq.topic", "^sensors\\.{username}\\.",
                            "^sensors\\.")
    with pika.BlockingConnection(pika.URLParameters(rabbit_node.nodes[0].url())) as conn:
        conn.channel().queue_declare("admin-only", durable=False)
        conn.channel().queue_declare("dev-existing", durable=False)
    auth = service(users_of(rabbit_node))
    user = auth.authenticate(name, "pw", peer="10.1.2.3")
    vhost = auth._broker.vhosts["/"]  # the core's vhost: amq.topic is a topic exchange

    def both(operation: Callable[[Any], object], check: Callable[[], None]) -> bool:
        try:
            check()
            gateway = True
        except AccessRefused as exc:
            assert exc.code == 403
            gateway = False
        rabbit = _rabbit_allows(rabbit_node, name, "pw", operation)
        assert gateway == rabbit, (gateway, rabbit)
        return gateway

    q = f"dev-{secrets.token_hex(3)}"
    cases: list[tuple[bool, Callable[[Any], object], Callable[[], None]]] = [
        (True, lambda ch: ch.queue_declare(q, auto_delete=True),
         lambda: access.declare_queue(auth, user, vhost, q)),
        (False, lambda ch: ch.queue_declare("other-q", auto_delete=True),
         lambda: access.declare_queue(auth, user, vhost, "other-q")),
        (True, lambda ch: ch.exchange_declare("dev-x", "topic", auto_delete=True),
         lambda: access.declare_exchange(auth, user, vhost, "dev-x")),
        (False, lambda ch: ch.exchange_declare("x-other", "topic", auto_delete=True),
         lambda: access.declare_exchange(auth, user, vhost, "x-other")),
        (True, lambda ch: ch.queue_bind("dev-existing", "amq.topic", f"sensors.{name}.t"),
         lambda: access.bind(auth, user, vhost, source="amq.topic",
                             destination="dev-existing", destination_kind="queue",
                             routing_key=f"sensors.{name}.t")),
        (False, lambda ch: ch.queue_bind("dev-existing", "amq.topic", "alarms.#"),
         lambda: access.bind(auth, user, vhost, source="amq.topic",
                             destination="dev-existing", destination_kind="queue",
                             routing_key="alarms.#")),
        (False, lambda ch: ch.queue_bind("admin-only", "amq.topic", "sensors.x"),
         lambda: access.bind(auth, user, vhost, source="amq.topic",
                             destination="admin-only", destination_kind="queue",
                             routing_key="sensors.x")),
        (True, lambda ch: ch.basic_publish("amq.topic", f"sensors.{name}.t", b"m"),
         lambda: access.publish(auth, user, vhost, "amq.topic", f"sensors.{name}.t")),
        (False, lambda ch: ch.basic_publish("amq.topic", "sensors.someone-else.t", b"m"),
         lambda: access.publish(auth, user, vhost, "amq.topic", "sensors.someone-else.t")),
        (False, lambda ch: ch.basic_publish("amq.direct", "k", b"m"),
         lambda: access.publish(auth, user, vhost, "amq.direct", "k")),
        (True, lambda ch: ch.basic_consume("dev-existing", lambda *a: None),
         lambda: access.consume(auth, user, vhost, "dev-existing")),
        (False, lambda ch: ch.basic_consume("admin-only", lambda *a: None),
         lambda: access.consume(auth, user, vhost, "admin-only")),
        (False, lambda ch: ch.queue_purge("admin-only"),
         lambda: access.purge(auth, user, vhost, "admin-only")),
    ]
    for expected, operation, check in cases:
        assert both(operation, check) == expected


async def test_a_permission_change_takes_effect_after_the_ttl(rabbit_node: Cluster,
                                                              admin: Admin) -> None:
    users = users_of(rabbit_node, permissions_cache_ttl=0.5)
    auth = service(users)
    name = admin.user("pw", perms=("^dev-", "^dev-|^amq\\.topic$", "^dev-"))
    admin.topic_permissions(name, "/", "amq.topic", "^a\\.", "^a\\.")
    user = await settle(auth, name, "pw")
    assert isinstance(user, User)
    vhost = auth._broker.vhosts["/"]
    access.declare_queue(auth, user, vhost, "dev-1")
    access.publish(auth, user, vhost, "amq.topic", "a.b")
    admin.permissions(name, "/", "^ops-", "^ops-|^amq\\.topic$", "^ops-")
    admin.topic_permissions(name, "/", "amq.topic", "^b\\.", "^b\\.")

    def changed() -> bool:
        try:
            access.declare_queue(auth, user, vhost, "ops-1")
            access.publish(auth, user, vhost, "amq.topic", "b.c")
        except AccessRefused:
            return False
        return True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(users.run)
        with trio.fail_after(20):
            while not changed():
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    with pytest.raises(AccessRefused):
        access.declare_queue(auth, user, vhost, "dev-1")
    with pytest.raises(AccessRefused, match="topic 'a.b'"):
        access.publish(auth, user, vhost, "amq.topic", "a.b")
    # a user deleted in RabbitMQ holds nothing after the next refresh
    assert admin.http.delete(f"/api/users/{name}").status_code == 204
    await users.refresh()
    assert auth.user(name) is None
    assert not auth.allowed(user, "/", "configure", "ops-1")


def test_config_keys() -> None:
    config = RabbitMQAuthConfig.from_dict({
        "urls": ["amqp://h"], "management_url": "http://h:15672",  # not ours: ignored
        "auth_cache_ttl": 0, "permissions_cache_ttl": 12.5, "auth_timeout": 3,
        "auth_max_checks": 4})
    assert config == RabbitMQAuthConfig(0, 12.5, 3, 4)
    assert RabbitMQAuthConfig.from_dict({}) == RabbitMQAuthConfig()
    for bad in ({"auth_cache_ttl": "60"}, {"permissions_cache_ttl": 0},
                {"auth_max_checks": 0}, {"auth_timeout": True}, {"auth_cache_ttl": -1}):
        with pytest.raises(ValueError, match="backend.rabbitmq"):
            RabbitMQAuthConfig.from_dict(bad)
    node = Node.parse("amqp://gw:pw@10.0.0.2:5673/%2Fprod")
    assert node == Node("10.0.0.2", 5673, "/prod")
    assert "pw" not in repr(RabbitMQUsers.from_urls(["amqp://h"], "http://u:pw@h:1").api)


# -- end to end: a gateway whose users are RabbitMQ's, paho-mqtt as the client ---------------

def _mqtt(port: int, name: str, password: str, got: queue.Queue[tuple[str, Any]]
          ) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{secrets.token_hex(4)}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(name, password)
    c.on_connect = lambda _c, _u, _f, rc, _p: got.put(("connack", rc.value))
    c.on_subscribe = lambda _c, _u, _m, codes, _p: got.put(
        ("suback", [code.value for code in codes]))
    c.on_publish = lambda _c, _u, _m, rc, _p: got.put(("puback", rc.value))
    c.on_message = lambda _c, _u, msg: got.put(("message", (msg.topic, msg.payload)))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _next(got: queue.Queue[tuple[str, Any]], kind: str,
          seen: dict[str, Any] | None = None) -> Any:
    """The next event of `kind`; other events met on the way go to `seen`."""
    while True:
        what, value = got.get(timeout=15)
        if what == kind:
            return value
        if seen is not None:
            seen[what] = value


async def test_mqtt_client_with_a_rabbitmq_user(rabbit_node: Cluster, admin: Admin,
                                                tmp_path: Path) -> None:
    name = admin.user("pw")
    admin.topic_permissions(name, "/", "amq.topic", "^sensors\\.{username}\\.",
                            "^sensors\\.")
    config = with_overrides(load_config(), host="127.0.0.1", amqp_port=None, mqtt_port=0,
                            stomp_port=None, http_port=None, data_dir=tmp_path / "data")
    server = Server(config)
    users = users_of(rabbit_node)
    server.auth.source = users  # what `--backend rabbitmq` wires
    async with trio.open_nursery() as nursery:
        nursery.start_soon(users.run)
        ports = await nursery.start(server.serve)
        port = ports["mqtt"]

        def scenario() -> None:
            wrong: queue.Queue[tuple[str, Any]] = queue.Queue()
            refused = _mqtt(port, name, "not-the-password", wrong)
            assert _next(wrong, "connack") == 0x86  # bad user name or password
            refused.loop_stop()
            got: queue.Queue[tuple[str, Any]] = queue.Queue()
            c = _mqtt(port, name, "pw", got)
            try:
                assert _next(got, "connack") == 0
                c.subscribe([("sensors/#", 1), ("alarms/#", 1)])
                assert _next(got, "suback") == [1, 0x87]  # topic read: ^sensors\.
                c.publish(f"sensors/{name}/t", b"mine", qos=1)
                seen: dict[str, Any] = {}
                assert _next(got, "puback", seen) == 0
                message = seen.get("message") or _next(got, "message")
                assert message == (f"sensors/{name}/t", b"mine")
                c.publish("sensors/someone-else/t", b"not mine", qos=1)
                assert _next(got, "puback") == 0x87  # topic write: ^sensors\.{username}\.
            finally:
                c.disconnect()
                c.loop_stop()

        await trio.to_thread.run_sync(scenario)
        await server.shutdown()
        nursery.cancel_scope.cancel()
