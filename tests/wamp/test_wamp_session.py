"""The WAMP session driven by messages against an in-memory broker: no sockets, no mocks.
Each `Peer` is one client; its messages go in as the JSON wire form and come out decoded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.core.message import Message, Properties
from gateway.store.base import MemoryStore
from protocols.wamp.codec import Serializer
from protocols.wamp.router import WampRouter
from protocols.wamp.session import ROLES, State, WampSession

HELLO = [1, "/", {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}]


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.broker = Broker(MemoryStore())
        self.auth = AuthService(load_config().auth)
        self.auth.attach(None, self.broker)
        self.router = WampRouter()

    def peer(self, **kwargs: Any) -> Peer:
        return Peer(self, **kwargs)


class Peer:
    """A client whose `join` is an anonymous HELLO: these tests are about the session's
    mechanics, so their broker allows anonymous WAMP (`[wamp] allow_anonymous = true`)
    unless a test says otherwise; the login rules are tested below and in
    test_wamp_login_session.py / test_wamp_auth.py."""

    def __init__(self, world: World, **kwargs: Any) -> None:
        self.world = world
        kwargs.setdefault("allow_anonymous", True)
        self.session = WampSession(world.broker, world.auth, world.router, Serializer.JSON,
                                   peer=("127.0.0.1", 5000), loopback=True,
                                   clock=lambda: world.now, **kwargs)

    def send(self, *items: Any) -> None:
        self.session.receive_message(json.dumps(list(items)))

    def out(self) -> list[list[Any]]:
        return [json.loads(m) for m in self.session.messages_to_send()]

    def join(self) -> int:
        self.send(*HELLO)
        (welcome,) = self.out()
        assert welcome[0] == 2
        return int(welcome[1])


@pytest.fixture
def world() -> World:
    return World()


def test_welcome_announces_exactly_the_implemented_roles(world: World) -> None:
    p = world.peer()
    p.send(*HELLO)
    [[code, sid, details]] = p.out()
    assert code == 2 and 1 <= sid <= 2**53
    assert details["roles"] == ROLES
    assert all(type(v) is bool for role in ROLES.values() for v in role["features"].values())
    assert details["authmethod"] == "anonymous" and details["realm"] == "/"


@pytest.mark.parametrize("first", [
    [16, 1, {}, "com.a"], [6, {}, "wamp.close.normal"], [33, 1, 2], [5, "sig", {}],
])
def test_messages_before_hello_are_protocol_violations(world: World, first: Any) -> None:
    p = world.peer()
    p.send(*first)
    [[code, _, reason]] = p.out()
    assert (code, reason) == (3, "wamp.error.protocol_violation")
    assert p.session.closed


def test_second_hello_and_router_messages_from_a_client_are_violations(world: World) -> None:
    for bad in (HELLO, [2, 1, {}], [36, 1, 2, {}], [8, 16, 1, {}, "x"]):
        p = world.peer()
        p.join()
        p.send(*bad)
        assert p.out()[-1][2] == "wamp.error.protocol_violation"
        assert p.session.closed


def test_goodbye_is_echoed_and_the_transport_may_join_again(world: World) -> None:
    p = world.peer()
    p.join()
    p.send(6, {}, "wamp.close.normal")
    assert p.out() == [[6, {}, "wamp.close.goodbye_and_out"]]
    assert p.session.state is State.HANDSHAKE
    p.join()


def test_hello_without_roles_is_a_violation(world: World) -> None:
    p = world.peer()
    p.send(1, "/", {})
    assert p.out()[0][2] == "wamp.error.protocol_violation"


def test_hello_times_out(world: World) -> None:
    p = world.peer()
    world.now += 11
    p.session.timer(world.now)
    assert p.out()[0][:1] == [3] and p.session.closed


def test_publish_subscribe_with_exclude_me_and_disclose_me(world: World) -> None:
    a, b = world.peer(), world.peer()
    sid_a = a.join()
    b.join()
    b.send(32, 1, {}, "com.t")
    [[_, _, sub]] = b.out()
    a.send(32, 1, {}, "com.t")
    [[_, _, sub_a]] = a.out()
    assert sub_a == sub  # one subscription id per (topic, match) in a realm
    a.send(16, 2, {"acknowledge": True, "disclose_me": True}, "com.t", ["x"], {"k": 1})
    [[code, req, pub]] = a.out()  # no event for a: exclude_me defaults to true
    assert (code, req) == (17, 2)
    assert b.out() == [[36, sub, pub, {"publisher": sid_a, "publisher_authid": "guest",
                                       "publisher_authrole": "anonymous"}, ["x"], {"k": 1}]]
    a.send(16, 3, {"exclude_me": False}, "com.t")
    assert a.out()[0][:2] == [36, sub] and b.out()[0][:2] == [36, sub]


def test_unsubscribe_and_unknown_ids(world: World) -> None:
    p = world.peer()
    p.join()
    p.send(32, 1, {}, "com.t")
    [[_, _, sub]] = p.out()
    p.send(34, 2, sub)
    p.send(34, 3, sub)
    p.send(66, 4, 12345)
    assert p.out() == [[35, 2], [8, 34, 3, {}, "wamp.error.no_such_subscription"],
                       [8, 66, 4, {}, "wamp.error.no_such_registration"]]


def test_call_invocation_yield_result_and_invocation_ids_are_sequential(world: World) -> None:
    callee, caller = world.peer(), world.peer()
    callee.join()
    caller.join()
    callee.send(64, 1, {}, "com.add")
    [[_, _, reg]] = callee.out()
    caller.send(48, 7, {"receive_progress": True}, "com.add", [2, 3])
    caller.send(48, 8, {}, "com.add", [], {"a": 1})
    assert callee.out() == [[68, 1, reg, {"receive_progress": True}, [2, 3]],
                            [68, 2, reg, {}, [], {"a": 1}]]
    callee.send(70, 1, {"progress": True}, ["half"])
    callee.send(70, 2, {}, [4])
    callee.send(70, 1, {}, [5])
    callee.send(70, 1, {}, [6])  # unknown by now: ignored
    assert caller.out() == [[50, 7, {"progress": True}, ["half"]], [50, 8, {}, [4]],
                            [50, 7, {}, [5]]]


def test_callee_error_is_relayed_to_the_caller(world: World) -> None:
    callee, caller = world.peer(), world.peer()
    callee.join()
    caller.join()
    callee.send(64, 1, {}, "com.fail")
    callee.out()
    caller.send(48, 1, {}, "com.fail")
    [[_, inv, _, _]] = callee.out()
    callee.send(8, 68, inv, {}, "com.error.bad", ["why"], {"k": 2})
    assert caller.out() == [[8, 48, 1, {}, "com.error.bad", ["why"], {"k": 2}]]


def test_call_timeout_interrupts_the_callee(world: World) -> None:
    callee, caller = world.peer(), world.peer()
    callee.join()
    caller.join()
    callee.send(64, 1, {}, "com.slow")
    callee.out()
    caller.send(48, 1, {"timeout": 1500}, "com.slow")
    [[_, inv, _, _]] = callee.out()
    assert caller.session.next_deadline() == world.now + 1.5
    world.now += 1.5
    caller.session.timer(world.now)
    assert caller.out() == [[8, 48, 1, {}, "wamp.error.timeout"]]
    assert callee.out() == [[69, inv, {"mode": "killnowait", "reason": "wamp.error.timeout"}]]


def test_cancel_before_any_callee_took_the_call_skips_it(world: World) -> None:
    callee, caller = world.peer(), world.peer()
    callee.join()
    caller.join()
    callee.send(64, 1, {}, "com.p")
    callee.out()
    callee.session.output_blocked = True  # no credit: the call waits in the queue
    caller.send(48, 1, {}, "com.p")
    caller.send(49, 1, {"mode": "skip"})
    assert caller.out() == [[8, 48, 1, {}, "wamp.error.canceled"]]
    callee.session.output_blocked = False
    callee.session.rpc.kick()
    assert callee.out() == []
    assert world.broker.vhost("/").queues["com.p"].message_count == 0


def test_callee_leaving_cancels_calls_from_wamp_and_frees_the_name(world: World) -> None:
    callee, caller = world.peer(), world.peer()
    callee.join()
    caller.join()
    callee.send(64, 1, {}, "com.p")
    callee.out()
    caller.send(48, 1, {}, "com.p")
    callee.session.connection_lost()
    assert caller.out() == [[8, 48, 1, {}, "wamp.error.canceled"]]
    assert "com.p" not in world.broker.vhost("/").queues
    caller.send(48, 2, {}, "com.p")
    assert caller.out()[0][4] == "wamp.error.no_such_procedure"


def test_amqp_request_to_a_leaving_callee_is_requeued(world: World) -> None:
    callee = world.peer()
    callee.join()
    callee.send(64, 1, {}, "com.p")
    callee.out()
    vh = world.broker.vhost("/")
    msg = Message(vh.next_message_id(), "", "com.p",
                  Properties(reply_to="r", correlation_id="c1"), b"30")
    vh.publish(vh.exchanges[""], "com.p", msg, world.now)
    assert callee.out()[0][4] == [30]
    callee.session.connection_lost()
    assert vh.queues["com.p"].message_count == 1  # still there for the next server


def test_register_single_conflicts_and_amqp_consumer_blocks(world: World) -> None:
    a, b = world.peer(), world.peer()
    a.join()
    b.join()
    a.send(64, 1, {"invoke": "roundrobin"}, "com.p")
    b.send(64, 1, {"invoke": "first"}, "com.p")
    b.send(64, 2, {"invoke": "bogus"}, "com.q")
    b.send(64, 3, {"match": "prefix"}, "com")
    assert a.out()[0][0] == 65
    assert [m[4] for m in b.out()] == ["wamp.error.procedure_already_exists",
                                       "wamp.error.invalid_argument",
                                       "wamp.error.invalid_argument"]


def test_shutdown_says_goodbye_and_closes_on_the_answer(world: World) -> None:
    p = world.peer()
    p.join()
    p.session.shutdown()
    assert p.out() == [[6, {"message": "broker shutdown"}, "wamp.close.system_shutdown"]]
    p.send(6, {}, "wamp.close.goodbye_and_out")
    assert p.session.closed


def test_ticket_flow(world: World) -> None:
    p = world.peer()
    p.send(1, "/", {**HELLO[2], "authmethods": ["ticket"], "authid": "guest"})
    assert p.out() == [[4, "ticket", {}]]
    p.send(5, "guest", {})
    [[code, _, details]] = p.out()
    assert code == 2 and details["authmethod"] == "ticket" and details["authid"] == "guest"


def test_anonymous_refused_from_a_remote_peer_for_a_loopback_only_user(world: World) -> None:
    p = Peer(world)
    p.session.loopback = False
    p.send(*HELLO)
    assert p.out()[0][2] == "wamp.error.not_authorized"


def test_event_from_amqp_gets_one_publication_id_for_all_subscribers(world: World) -> None:
    a, b = world.peer(), world.peer()
    a.join()
    b.join()
    a.send(32, 1, {"match": "wildcard"}, "com..x")
    b.send(32, 1, {}, "com.y.x")
    a.out()
    b.out()
    vh = world.broker.vhost("/")
    msg = Message(vh.next_message_id(), "amq.topic", "com.y.x",
                  Properties(content_type="application/json"), b"[1, 2]")
    vh.publish(vh.exchanges["amq.topic"], "com.y.x", msg, world.now)
    [[_, _, pub_a, details, args]] = a.out()
    [[_, _, pub_b, _, _]] = b.out()
    assert pub_a == pub_b and details == {"topic": "com.y.x"} and args == [[1, 2]]


def test_publishing_during_the_memory_alarm_pauses_reading(world: World) -> None:
    p = world.peer()
    p.join()
    p.session.memory_alarm(True)
    p.send(32, 1, {}, "com.t")
    assert not p.session.read_paused  # subscribing is not publishing
    p.send(16, 2, {}, "com.t")
    assert p.session.read_paused
    p.session.memory_alarm(False)
    assert not p.session.read_paused
