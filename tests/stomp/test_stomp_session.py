"""The STOMP session driven by bytes against an in-memory broker: connection, heart-beats,
destinations, acknowledgements, transactions, receipts and every ERROR case."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_stomp_helpers import Client

from gateway.auth.service import AuthService
from gateway.config import PermissionConfig, load_config
from protocols.stomp.frames import Command, Frame

C = Command


# -- CONNECT -------------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "expected"), [
    (None, "1.0"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.0,1.1", "1.1"), ("1.2", "1.2"),
    ("1.1,1.2,2.0", "1.2"),
])
def test_version_negotiation(accept: str | None, expected: str) -> None:
    c = Client()
    connected = c.connect(accept)
    assert connected.command is C.CONNECTED
    assert connected.headers["version"] == expected
    assert connected.headers["session"].startswith("session-")
    assert connected.headers["server"].startswith("gateway/")


def test_stomp_command_connects_too() -> None:
    c = Client()
    c.send(C.STOMP, {"accept-version": "1.2", "login": "guest", "passcode": "guest"})
    assert c.one(C.CONNECTED).headers["version"] == "1.2"


def test_unsupported_version_is_an_error() -> None:
    c = Client()
    err = c.connect("2.0,3.0")
    assert err.command is C.ERROR and err.headers["message"] == "Version mismatch"
    assert err.headers["version"] == "1.0,1.1,1.2"
    assert b"1.0,1.1,1.2" in err.body and c.session.closed


def test_bad_credentials() -> None:
    c = Client()
    err = c.connect(passcode="wrong")
    assert err.command is C.ERROR
    assert err.headers["message"] == "Bad CONNECT"
    assert err.body == b"Access refused for user 'guest'"
    assert c.session.closed


def test_missing_login_refused_without_anonymous_user() -> None:
    c = Client()
    c.send(C.CONNECT, {"accept-version": "1.2"})
    err = c.error()
    assert err.headers["message"] == "Bad CONNECT" and b"anonymous" in err.body


def test_missing_login_is_the_anonymous_user() -> None:
    c = Client(anonymous_user="guest", loopback_users=frozenset({"guest"}))
    c.send(C.CONNECT, {"accept-version": "1.2"})
    assert c.one(C.CONNECTED).headers["version"] == "1.2"
    assert c.session.user is not None and c.session.user.name == "guest"


def test_anonymous_loopback_only_user_from_afar_is_refused() -> None:
    c = Client(anonymous_user="guest", loopback_users=frozenset({"guest"}))
    c.session.loopback = False
    c.send(C.CONNECT, {"accept-version": "1.2"})
    assert c.error().headers["message"] == "Bad CONNECT"


def test_anonymous_user_that_does_not_exist_is_refused() -> None:
    c = Client(anonymous_user="nobody")
    c.send(C.CONNECT, {})
    assert c.error().headers["message"] == "Bad CONNECT"


def test_unknown_vhost() -> None:
    c = Client()
    err = c.connect(host="nosuch")
    assert err.command is C.ERROR and err.headers["message"] == "Bad CONNECT"
    assert b"Virtual host 'nosuch'" in err.body and c.session.closed


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_host_naming_the_server_means_the_default_vhost(host: str) -> None:
    c = Client()
    assert c.connect(host=host).command is C.CONNECTED
    assert c.session.vhost is not None and c.session.vhost.name == "/"


def test_connect_headers_are_not_unescaped() -> None:
    c = Client()
    c.raw(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:gu\\cest\n\n\x00")
    assert c.error().headers["message"] == "Bad CONNECT"


def test_frame_before_connect() -> None:
    c = Client()
    c.send(C.SEND, {"destination": "/queue/a"}, b"x")
    err = c.error()
    assert err.headers["message"] == "Illegal command" and b"CONNECT" in err.body


def test_second_connect() -> None:
    c = Client()
    c.connect()
    c.send(C.CONNECT, {"login": "guest", "passcode": "guest"})
    assert c.error().headers["message"] == "Illegal command"


def test_no_connect_in_time_closes() -> None:
    c = Client()
    c.clock.now += 11
    c.session.timer(c.clock.now)
    assert c.session.closed


# -- heart-beats ---------------------------------------------------------------------------

def test_heartbeat_negotiation_answers_the_clients_wish() -> None:
    c = Client()
    assert c.connect(**{"heart-beat": "10000,5000"}).headers["heart-beat"] == "5000,10000"


def test_heartbeat_below_the_floor_is_raised() -> None:
    c = Client(heartbeat_min=2000)
    assert c.connect(**{"heart-beat": "100,0"}).headers["heart-beat"] == "0,2000"


def test_no_heartbeats_by_default() -> None:
    c = Client()
    assert c.connect().headers["heart-beat"] == "0,0"
    c.clock.now += 1000
    c.session.timer(c.clock.now)
    assert not c.session.closed and c.frames() == [] and c.heartbeats == 0


def test_bad_heartbeat_header() -> None:
    c = Client()
    assert c.connect(**{"heart-beat": "abc"}).headers["message"] == "Invalid heart-beat header"


def test_server_sends_heartbeats() -> None:
    c = Client()
    c.connect(**{"heart-beat": "0,2000"})
    c.session.data_to_send()
    c.clock.now += 1.0
    c.session.timer(c.clock.now)
    assert c.frames() == [] and c.heartbeats == 1


def test_silent_client_is_disconnected() -> None:
    c = Client()
    c.connect(**{"heart-beat": "2000,0"})
    c.clock.now += 3.9
    c.session.timer(c.clock.now)
    assert not c.session.closed
    c.raw(b"\n")  # a heart-beat from the client
    c.clock.now += 3.9
    c.session.timer(c.clock.now)
    assert not c.session.closed
    c.clock.now += 0.2
    c.session.timer(c.clock.now)
    assert c.session.closed and c.session.close_reason == "missed heart-beats"


# -- send and subscribe --------------------------------------------------------------------

def subscribe(c: Client, destination: str, sub_id: str = "s1", **headers: str
              ) -> list[Frame]:
    """SUBSCRIBE with a receipt; returns the frames that came after the receipt."""
    c.send(C.SUBSCRIBE, {"destination": destination, "id": sub_id, "receipt": "sub",
                         **headers})
    frames = c.frames()
    assert frames and frames[0].command is C.RECEIPT, frames
    assert frames[0].headers["receipt-id"] == "sub"
    return frames[1:]


def test_queue_round_trip_with_headers_and_binary_body() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/queue/q1")
    body = b"\x00\x01bin\x00"
    c.send(C.SEND, {"destination": "/queue/q1", "content-type": "application/octet-stream",
                    "x-custom": "a:b\nc", "priority": "3", "persistent": "true"}, body)
    msg = c.one(C.MESSAGE)
    h = msg.headers
    assert msg.body == body
    assert h["destination"] == "/queue/q1" and h["subscription"] == "s1"
    assert h["content-type"] == "application/octet-stream" and h["x-custom"] == "a:b\nc"
    assert h["priority"] == "3" and h["persistent"] == "true"
    assert h["redelivered"] == "false" and "ack" not in h  # auto ack
    assert h["content-length"] == str(len(body))
    q = c.broker.vhost("/").queues["q1"]
    assert q.durable and not q.auto_delete and q.message_count == 0 and not q.unacked


def test_send_declares_the_queue_so_messages_wait() -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {"destination": "/queue/later"}, b"m1")
    assert c.broker.vhost("/").queues["later"].message_count == 1
    (msg,) = subscribe(c, "/queue/later")
    assert msg.body == b"m1"


def test_receipt_comes_before_the_first_message() -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {"destination": "/queue/early"}, b"m1")
    c.send(C.SUBSCRIBE, {"destination": "/queue/early", "id": "0", "receipt": "r"})
    assert [f.command for f in c.frames()] == [C.RECEIPT, C.MESSAGE]


def test_amq_queue_requires_an_existing_queue() -> None:
    c = Client()
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/amq/queue/missing", "id": "0", "receipt": "r"})
    err = c.error()
    assert err.headers["message"] == "not_found" and err.headers["receipt-id"] == "r"
    assert b"no queue 'missing'" in err.body


def test_topic_subscription_gets_its_own_queue() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/topic/a.*", "t1")
    subscribe(c, "/topic/a.b", "t2")
    c.send(C.SEND, {"destination": "/topic/a.b"}, b"hi")
    got = sorted((m.headers["subscription"], m.headers["destination"]) for m in c.frames())
    assert got == [("t1", "/topic/a.b"), ("t2", "/topic/a.b")]
    queues = [q for q in c.broker.vhost("/").queues.values()
              if q.name.startswith("stomp-subscription-")]
    assert len(queues) == 2 and all(q.auto_delete for q in queues)
    c.send(C.DISCONNECT)
    assert not [q for q in c.broker.vhost("/").queues if q.startswith("stomp-subscription-")]


def test_durable_topic_subscription_keeps_messages_while_away() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/topic/news", "d1", durable="true", **{"auto-delete": "false"})
    c.send(C.DISCONNECT)
    publisher = Client(c.broker)
    publisher.connect()
    publisher.send(C.SEND, {"destination": "/topic/news"}, b"while away")
    back = Client(c.broker)
    back.connect()
    (msg,) = subscribe(back, "/topic/news", "d1", durable="true",
                       **{"auto-delete": "false"})
    assert msg.body == b"while away"
    back.send(C.UNSUBSCRIBE, {"id": "d1", "durable": "true", "receipt": "u"})
    assert back.one(C.RECEIPT).headers["receipt-id"] == "u"
    assert not [q for q in c.broker.vhost("/").queues if q.startswith("stomp-subscription-")]


def test_durable_subscription_needs_an_id() -> None:
    c = Client()
    c.connect("1.0")
    c.send(C.SUBSCRIBE, {"destination": "/topic/x", "durable": "true"})
    assert c.error().headers["message"] == "Missing header"


def test_exchange_destination_with_pattern() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/exchange/amq.direct/rk")
    c.send(C.SEND, {"destination": "/exchange/amq.direct/rk"}, b"x")
    c.send(C.SEND, {"destination": "/exchange/amq.direct/other"}, b"y")
    (msg,) = c.frames()
    assert msg.body == b"x" and msg.headers["destination"] == "/exchange/amq.direct/rk"


def test_missing_exchange_is_not_found() -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {"destination": "/exchange/nope/rk"}, b"x")
    assert c.error().headers["message"] == "not_found"


def test_destination_names_are_percent_encoded() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/queue/a%2Fb")
    assert "a/b" in c.broker.vhost("/").queues
    c.send(C.SEND, {"destination": "/queue/a%2Fb"}, b"x")
    assert c.one(C.MESSAGE).headers["destination"] == "/queue/a%2Fb"


@pytest.mark.parametrize(("destination", "message"), [
    ("/nowhere/x", "Unknown destination"), ("queue", "Unknown destination"),
    ("/queue/a/b", "Invalid destination"), ("/queue/", "Invalid destination"),
    ("/exchange/", "Invalid destination"),
])
def test_bad_destinations(destination: str, message: str) -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {"destination": destination}, b"x")
    err = c.error()
    assert err.headers["message"] == message and b"Valid destination types" in err.body


def test_send_without_destination() -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {}, b"x")
    err = c.error()
    assert err.headers["message"] == "Missing header" and b"destination" in err.body


@pytest.mark.parametrize("destination", ["/temp-queue/x", "/reply-queue/x"])
def test_temp_and_reply_queues_cannot_be_subscribed(destination: str) -> None:
    c = Client()
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": destination, "id": "0"})
    assert b"not a valid destination for 'SUBSCRIBE'" in c.error().body


def test_temp_queue_request_reply() -> None:
    requester = Client()
    requester.connect()
    responder = Client(requester.broker)
    responder.connect()
    subscribe(responder, "/queue/service")
    requester.send(C.SEND, {"destination": "/queue/service", "reply-to": "/temp-queue/r1",
                            "correlation-id": "c1"}, b"ping")
    request = responder.one(C.MESSAGE)
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-")
    responder.send(C.SEND, {"destination": reply_to, "correlation-id": "c1"}, b"pong")
    reply = requester.one(C.MESSAGE)
    assert reply.body == b"pong" and reply.headers["subscription"] == "/temp-queue/r1"
    assert reply.headers["correlation-id"] == "c1"
    name = reply_to[len("/reply-queue/"):]
    requester.send(C.DISCONNECT)
    assert name not in requester.broker.vhost("/").queues


def test_duplicate_subscription_id() -> None:
    c = Client()
    c.connect()
    subscribe(c, "/queue/a", "same")
    c.send(C.SUBSCRIBE, {"destination": "/queue/b", "id": "same"})
    assert c.error().headers["message"] == "Duplicated subscription identifier"


def test_subscribe_without_id_in_1_1_is_an_error_but_not_in_1_0() -> None:
    c = Client()
    c.connect("1.1")
    c.send(C.SUBSCRIBE, {"destination": "/queue/a"})
    assert c.error().headers["message"] == "Missing header"
    old = Client()
    old.connect("1.0")
    old.send(C.SUBSCRIBE, {"destination": "/queue/a10"})
    old.send(C.SEND, {"destination": "/queue/a10"}, b"x")
    assert old.one(C.MESSAGE).headers["subscription"] == "/queue/a10"
    old.send(C.UNSUBSCRIBE, {"destination": "/queue/a10"})
    assert old.session.subscriptions == {}


def test_invalid_ack_mode() -> None:
    c = Client()
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/queue/a", "id": "0", "ack": "sometimes"})
    assert c.error().headers["message"] == "Invalid ack mode"


def test_permission_refused_is_access_refused() -> None:
    config = load_config()
    c = Client()
    # guest may configure anything but names starting "secret"
    perms = (PermissionConfig("guest", "/", "^(?!secret).*", ".*", ".*"),)
    c.session.auth = AuthService(replace(config.auth, permissions=perms))
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/queue/secret", "id": "0"})
    err = c.error()
    assert err.headers["message"] == "access_refused" and b"secret" in err.body


# -- errors from the codec reach the client as ERROR, then the connection closes ----------

@pytest.mark.parametrize(("data", "message"), [
    (b"FLY\n\n\x00", "Unknown command"),
    (b"SEND\nno colon here\n\n\x00", "Malformed frame"),
    (b"SEND\ndestination:/queue/\xff\n\n\x00", "Bad header"),
    (b"SEND\nk:\\t\n\n\x00", "Bad header"),
    (b"SEND\ncontent-length:99999999\n\n", "Frame too large"),
    (b"SEND\ncontent-length:1\n\nxy\x00", "Malformed frame"),
])
def test_codec_errors_become_error_frames(data: bytes, message: str) -> None:
    c = Client(max_frame_size=65536)
    c.connect()
    c.raw(data)
    err = c.error()
    assert err.headers["message"] == message and err.body
    c.raw(b"SEND\ndestination:/queue/a\n\nignored\x00")
    assert c.frames() == []


def test_header_limits_from_the_config() -> None:
    c = Client(max_headers=5)
    c.connect()
    c.send(C.SEND, {"destination": "/queue/a", "a": "1", "b": "2", "c": "3", "d": "4"}, b"x")
    assert c.error().headers["message"] == "Too many headers"


def test_memory_alarm_pauses_reading_a_publisher() -> None:
    c = Client()
    c.connect()
    c.session.memory_alarm(True)
    c.send(C.SEND, {"destination": "/queue/alarm"}, b"x")
    assert c.session.read_paused
    c.session.memory_alarm(False)
    assert not c.session.read_paused


def test_output_over_high_water_holds_deliveries() -> None:
    c = Client(high_water=4096)
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/queue/big", "id": "0"})
    c.session.data_to_send()
    for _ in range(10):
        c.send(C.SEND, {"destination": "/queue/big"}, b"x" * 1000)
    assert c.session.output_blocked
    assert ready(c, "big") > 0
    c.frames()
    c.session.output_drained()
    assert len(c.frames()) > 0


def ready(c: Client, queue: str) -> int:
    return c.broker.vhost("/").queues[queue].message_count


def test_shutdown_sends_an_error() -> None:
    c = Client()
    c.connect()
    c.session.shutdown()
    assert c.error().headers["message"] == "Server shutdown"


def test_vhost_deleted_sends_an_error() -> None:
    c = Client()
    c.connect()
    assert c.session.protocol_name == "STOMP 1.2"
    c.session.vhost_deleted("/")
    err = c.error()
    assert err.headers["message"] == "Virtual host deleted" and b"'/'" in err.body


def test_queue_deleted_under_a_subscription_is_reported_without_closing() -> None:
    c = Client()
    c.connect()
    c.send(C.SUBSCRIBE, {"destination": "/queue/doomed", "id": "d"})
    c.broker.vhost("/").delete_queue("doomed")
    err = c.one(C.ERROR)
    assert err.headers["message"] == "Server cancelled subscription"
    assert err.headers["subscription"] == "d" and b"/queue/doomed" in err.body
    assert not c.session.closed and c.session.subscriptions == {}
    c.send(C.SEND, {"destination": "/queue/other", "receipt": "still"}, b"x")
    assert c.one(C.RECEIPT).headers["receipt-id"] == "still"


def test_send_declares_a_queue_again_after_it_was_deleted() -> None:
    c = Client()
    c.connect()
    c.send(C.SEND, {"destination": "/queue/again"}, b"1")
    c.broker.vhost("/").delete_queue("again")
    c.send(C.SEND, {"destination": "/queue/again"}, b"2")
    assert ready(c, "again") == 1
