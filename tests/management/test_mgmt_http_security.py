"""What a hostile client or web page gets from the HTTP port, with httpx and raw sockets
against a running broker: writes from another site's page (Origin) and non-JSON bodies
refused, the Host header checked (DNS rebinding), credentials judged before a body is
read, the 64 KiB head limit, the security headers, and a catastrophic `use_regex` filter
that no longer stalls the broker's other clients."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import httpx
import pika
from mgmt_client import Api, api_for, q

TIMEOUT = 10.0
ADMIN = ("guest", "guest")


def base(broker: Any) -> str:
    return f"http://{broker.host}:{broker.ports['http']}"


def definitions_with_user(name: str) -> dict[str, Any]:
    return {"users": [{"name": name, "password": "pw", "tags": "administrator"}]}


def user_exists(api: Api, name: str) -> bool:
    status = api.get(f"/users/{name}").status_code
    assert status in (200, 404), status
    return status == 200


# -- 1. CSRF: writes from another origin, and bodies that are not JSON -----------------------


def test_a_write_from_another_origin_is_refused_and_creates_nothing(
        broker: Any, unique: Callable[[str], str]) -> None:
    api = api_for(broker)
    name = unique("csrf-user")
    with httpx.Client(base_url=base(broker), auth=ADMIN, timeout=TIMEOUT) as http:
        for origin in ("http://evil.example", "null", f"http://{broker.host}:1",
                       f"https://{broker.host}:{broker.ports['http']}"):
            refused = http.post("/api/definitions", json=definitions_with_user(name),
                                headers={"Origin": origin})
            assert refused.status_code == 403, (origin, refused.text)
            assert "Origin" in refused.json()["reason"]
            for method in ("PUT", "DELETE", "PATCH"):
                assert http.request(method, f"/api/users/{name}", json={"password": "x"},
                                    headers={"Origin": origin}).status_code == 403
        assert not user_exists(api, name)
        # reads are not refused for an Origin (the browser does not let the page see them)
        assert http.get("/api/overview", headers={"Origin": "http://evil.example"}
                        ).status_code == 200
        # the broker's own page (the UI) writes with its own origin
        own = http.post("/api/definitions", json=definitions_with_user(name),
                        headers={"Origin": base(broker)})
        assert own.status_code == 204, own.text
        assert user_exists(api, name)
        assert http.delete(f"/api/users/{name}").status_code == 204
    api.close()


def test_a_write_body_must_be_json(broker: Any, unique: Callable[[str], str]) -> None:
    """What a cross-site `<form enctype="text/plain">` sends: refused with 415, nothing
    is created, even without an Origin (as an older browser or a plug-in might send)."""
    api = api_for(broker)
    name = unique("form-user")
    form_body = (json.dumps(definitions_with_user(name))[:-1] + ', "x": "="}').encode()
    with httpx.Client(base_url=base(broker), auth=ADMIN, timeout=TIMEOUT) as http:
        for content_type in ("text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": content_type} if content_type else {}
            refused = http.post("/api/definitions", content=form_body, headers=headers)
            assert refused.status_code == 415, (content_type, refused.text)
            assert "application/json" in refused.json()["reason"]
        assert not user_exists(api, name)
        # JSON with a charset is JSON; a write without a body needs no type
        ok = http.post("/api/definitions", content=json.dumps(definitions_with_user(name)),
                       headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 204, ok.text
        assert http.delete(f"/api/users/{name}").status_code == 204
    api.close()


def test_allowed_origins_lets_a_listed_page_write(configured_broker: Any,
                                                  unique: Callable[[str], str]) -> None:
    broker = configured_broker('[http]\nallowed_origins = ["https://app.example.com"]\n')
    name = unique("listed")
    with httpx.Client(base_url=base(broker), auth=ADMIN, timeout=TIMEOUT) as http:
        listed = http.put(f"/api/users/{name}", json={"password": "pw", "tags": ""},
                          headers={"Origin": "https://app.example.com"})
        assert listed.status_code == 201, listed.text
        other = http.put(f"/api/users/{name}-2", json={"password": "pw", "tags": ""},
                         headers={"Origin": "https://other.example.com"})
        assert other.status_code == 403


# -- 2. the Host header (DNS rebinding) ------------------------------------------------------


def test_a_request_naming_another_host_is_refused_everywhere(broker: Any) -> None:
    port = broker.ports["http"]
    with httpx.Client(base_url=base(broker), auth=ADMIN, timeout=TIMEOUT) as http:
        for path in ("/", "/index.html", "/api/overview", "/metrics", "/api/nope"):
            refused = http.get(path, headers={"Host": f"rebind.example:{port}"})
            assert refused.status_code == 403, (path, refused.status_code)
            assert "allowed_hosts" in refused.json()["reason"]
        assert http.put("/api/vhosts/rebound", json={}, headers={"Host": "rebind.example"}
                        ).status_code == 403
        assert http.get("/api/vhosts/rebound").status_code == 404  # nothing was made
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", "[::1]:80"):
            assert http.get("/api/overview", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_lets_a_named_host_in(configured_broker: Any) -> None:
    broker = configured_broker('[http]\nallowed_hosts = ["broker.example.com"]\n')
    with httpx.Client(base_url=base(broker), auth=ADMIN, timeout=TIMEOUT) as http:
        assert http.get("/api/overview", headers={"Host": "broker.example.com"}
                        ).status_code == 200
        assert http.get("/", headers={"Host": "broker.example.com:15672"}).status_code == 200
        assert http.get("/", headers={"Host": "other.example.com"}).status_code == 403


# -- 4. credentials are judged from the head, before any body is read -------------------------


@contextmanager
def raw(broker: Any) -> Iterator[socket.socket]:
    with closing(socket.create_connection((broker.host, broker.ports["http"]),
                                          timeout=TIMEOUT)) as sock:
        yield sock


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes (bounded by the socket timeout)."""
    data = b""
    while len(data) < 1 << 20:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_unauthenticated_16_mib_body_is_refused_before_it_is_sent(
        broker: Any, unique: Callable[[str], str]) -> None:
    """Only the head goes out; the 401 comes back at once and the server closes, without
    waiting for (or keeping) the 16 MiB announced."""
    head = (f"POST /api/definitions HTTP/1.1\r\nHost: {broker.host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 16777216\r\n\r\n").encode()
    for extra in (b"", b"Authorization: Basic Z3Vlc3Q6d3Jvbmc=\r\n"):  # none; wrong password
        with raw(broker) as sock:
            sock.sendall(head[:-2] + extra + b"\r\n")
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"connection: close" in answer.lower()
    # a user without a management tag, or without the administrator tag this route
    # needs, is refused from the head too
    api = api_for(broker)
    name = unique("untagged")
    try:
        for tags in ("", "monitoring"):
            assert api.put(f"/users/{name}", {"password": "pw", "tags": tags}
                           ).status_code in (201, 204)
            token = base64.b64encode(f"{name}:pw".encode())
            with raw(broker) as sock:
                sock.sendall(head[:-2] + b"Authorization: Basic " + token + b"\r\n\r\n")
                answer = read_all(sock)
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            reason = answer.split(b"\r\n\r\n", 1)[1]
            assert json.loads(reason)["reason"] == ("Not management user" if not tags
                                                    else "Not administrator user")
    finally:
        api.delete(f"/users/{name}")
        api.close()


def test_an_administrator_still_has_the_body_limit(broker: Any) -> None:
    token = base64.b64encode(":".join(ADMIN).encode()).decode()
    head = (f"POST /api/definitions HTTP/1.1\r\nHost: {broker.host}\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {16 * 1024 * 1024 + 1}\r\n\r\n").encode()
    with raw(broker) as sock:
        sock.sendall(head)
        assert read_all(sock).startswith(b"HTTP/1.1 413 ")


# -- 5. the head limit and the headers every answer has --------------------------------------


def test_the_head_limit_is_64_kib(broker: Any) -> None:
    with httpx.Client(base_url=base(broker), timeout=TIMEOUT) as http:
        assert http.get("/", headers={"X-Pad": "p" * 60_000}).status_code == 200
    for size in (65_537, 100_000):
        with raw(broker) as sock:
            start = (f"GET / HTTP/1.1\r\nHost: {broker.host}\r\nX-Pad: ").encode()
            sock.sendall(start + b"p" * (size - len(start) - 4) + b"\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 431 "), size


def test_every_answer_has_the_security_headers(broker: Any) -> None:
    with httpx.Client(base_url=base(broker), timeout=TIMEOUT) as http:
        for path, auth in (("/", None), ("/app.js", None), ("/metrics", None),
                           ("/api/overview", ADMIN), ("/api/overview", None),
                           ("/missing", None)):
            response = http.get(path, auth=auth) if auth else http.get(path)
            csp = response.headers.get("content-security-policy", "")
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "script-src 'self'" in csp and "unsafe-eval" not in csp
            assert response.headers.get("x-frame-options") == "DENY", path
            assert response.headers.get("x-content-type-options") == "nosniff", path
            assert response.headers.get("referrer-policy") == "no-referrer", path


# -- 3. a catastrophic name regex is bounded ---------------------------------------------------


def test_a_catastrophic_name_regex_does_not_stall_other_clients(
        broker: Any, unique: Callable[[str], str]) -> None:
    """`(a+)+$` and `(a|aa)+$` against long names of a's: with Python's `re` the second
    backtracks for longer than anyone waits, in the event loop. Now the filter answers
    (200, or 400 saying the pattern took too long), and a pika client doing round trips
    meanwhile gets every answer."""
    api = api_for(broker)
    vhost = unique("regex")
    assert api.put(f"/vhosts/{q(vhost)}", {}).status_code == 201
    params = pika.URLParameters(f"amqp://guest:guest@{broker.host}:{broker.amqp_port}/"
                                f"{q(vhost)}")
    params.socket_timeout = params.blocked_connection_timeout = TIMEOUT
    answers: list[bytes] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def round_trips() -> None:
        try:
            with closing(pika.BlockingConnection(params)) as conn:
                ch = conn.channel()
                ch.queue_declare("ping", auto_delete=True)
                for i in range(200):
                    if stop.is_set() and i >= 20:
                        return
                    ch.basic_publish("", "ping", str(i).encode())
                    body = None
                    for _ in range(100):  # bounded: the message is there at once
                        _, _, body = ch.basic_get("ping", auto_ack=True)
                        if body is not None:
                            break
                    answers.append(body or b"")
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    try:
        with closing(pika.BlockingConnection(params)) as conn:
            ch = conn.channel()
            for i in range(12):
                ch.queue_declare("a" * 240 + f"!{i:02d}", auto_delete=False)
        client = threading.Thread(target=round_trips)
        client.start()
        statuses = []
        for pattern in ("(a+)+$", "(a|aa)+$", "(a|a)+$", "(a+)+$"):
            response = api.client.get(f"/api/queues/{q(vhost)}",
                                      params={"name": pattern, "use_regex": "true"})
            statuses.append(response.status_code)
            if response.status_code == 400:
                assert "took longer" in response.json()["reason"], response.text
            else:
                assert response.status_code == 200, response.text
                assert response.json() == []  # no name ends in a's
        stop.set()
        client.join(TIMEOUT * 3)
        assert not client.is_alive() and not failure, failure
        assert answers[:20] == [str(i).encode() for i in range(20)]
        assert 400 in statuses  # (a|aa)+$ runs out of its budget
        # an ordinary pattern still filters, and a bad one is a 400
        names = [x["name"] for x in api.json(f"/queues/{q(vhost)}", name="!0[0-3]$",
                                             use_regex="true")]
        assert sorted(names) == ["a" * 240 + f"!{i:02d}" for i in range(4)]
        bad = api.get(f"/queues/{q(vhost)}", name="(", use_regex="true")
        assert bad.status_code == 400 and "bad regex" in bad.json()["reason"]
        # compiling has no timeout: a pattern whose repetitions would take it forever
        huge = api.get(f"/queues/{q(vhost)}", name="(?:a{65535}){65535}", use_regex="true")
        assert huge.status_code == 400 and "repeats too much" in huge.json()["reason"]
        assert api.get(f"/queues/{q(vhost)}", name=r"^a{240}!\d{2}$", use_regex="true"
                       ).status_code == 200
    finally:
        stop.set()
        api.delete(f"/vhosts/{q(vhost)}")
        api.close()
