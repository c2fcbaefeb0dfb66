"""autobahn-python (asyncio, in a thread) against the gateway's WAMP router."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ab_client import join, leave
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions
from ws_harness import Gateway, in_asyncio, running_gateway

from gateway.server.websocket import WebSocketOptions


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    async with running_gateway(tmp_path) as gateway:
        yield gateway


@pytest.fixture
async def gw_disclose(tmp_path: Path) -> Any:
    """A gateway that discloses publishers and callers (autobahn cannot send disclose_me)."""
    async with running_gateway(tmp_path, WebSocketOptions(wamp_disclose=True)) as gateway:
        yield gateway


async def test_join_negotiates_msgpack_from_autobahns_default_offer(tmp_path: Path) -> None:
    async def main() -> tuple[str, int, dict[str, Any]]:
        s = await join(gw.ws_url, serializer=None, anonymous=True)
        proto = s._transport.websocket_protocol_in_use
        details = (s.details.authmethod, s.details.session, s.details.realm)
        await leave(s)
        return proto, details[1], {"authmethod": details[0], "realm": details[2]}

    # an anonymous join, so the broker allows it ([wamp] allow_anonymous = true)
    async with running_gateway(tmp_path, wamp_anonymous=True) as gw:
        proto, session_id, details = await in_asyncio(main)
    assert proto == "wamp.2.msgpack"
    assert 1 <= session_id <= 2**53
    assert details == {"authmethod": "anonymous", "realm": "/"}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_publish_subscribe_with_payload_and_acknowledge(gw: Gateway,
                                                              serializer: str) -> None:
    async def main() -> tuple[list[Any], int]:
        sub = await join(gw.ws_url, serializer=serializer)
        pub = await join(gw.ws_url, serializer=serializer)
        got: asyncio.Queue[Any] = asyncio.Queue()
        await sub.subscribe(lambda *a, **kw: got.put_nowait((list(a), kw)), "com.example.t")
        p = await pub.publish("com.example.t", 1, "two", b"\x00\xff", three=3,
                              options=PublishOptions(acknowledge=True))
        event = await asyncio.wait_for(got.get(), 5)
        await leave(sub)
        await leave(pub)
        return event, p.id

    (args, kwargs), pub_id = await in_asyncio(main)
    assert args == [1, "two", b"\x00\xff"] and kwargs == {"three": 3}
    assert 1 <= pub_id <= 2**53


async def test_pattern_subscriptions_exclusion_and_identification(gw_disclose: Gateway
                                                                  ) -> None:
    gw = gw_disclose

    async def main() -> dict[str, Any]:
        a = await join(gw.ws_url)
        b = await join(gw.ws_url, serializer="msgpack")
        seen: dict[str, list[Any]] = {"prefix": [], "wildcard": [], "exact_a": [],
                                      "exact_b": []}
        done = asyncio.Event()

        def on(name: str) -> Any:
            def handler(*args: Any, details: Any) -> None:
                seen[name].append((args[0] if args else None, details.topic,
                                   details.publisher))
                if sum(len(v) for v in seen.values()) >= 6:
                    done.set()
            return handler

        await b.subscribe(on("prefix"), "com.ex", SubscribeOptions(
            match="prefix", details_arg="details"))
        await b.subscribe(on("wildcard"), "com..temp", SubscribeOptions(
            match="wildcard", details_arg="details"))
        await b.subscribe(on("exact_b"), "com.example.temp", SubscribeOptions(
            details_arg="details"))
        await a.subscribe(on("exact_a"), "com.example.temp", SubscribeOptions(
            details_arg="details"))
        ack = PublishOptions(acknowledge=True)
        # a's own event is excluded by default; b gets exact + prefix + wildcard
        await a.publish("com.example.temp", 1, options=ack)
        # exclude_me=False: a sees its own
        await a.publish("com.example.temp", 2, options=PublishOptions(
            acknowledge=True, exclude_me=False))
        # matches the prefix (a string prefix) only
        await a.publish("com.exotic", 3, options=ack)
        await asyncio.wait_for(done.wait(), 5)
        result = dict(seen, a_session=a._session_id)
        await leave(a)
        await leave(b)
        return result

    r = await in_asyncio(main)
    a_id = r["a_session"]
    # (autobahn fills in the topic of an exact subscription itself)
    assert r["exact_a"] == [(2, "com.example.temp", a_id)]
    assert r["exact_b"] == [(1, "com.example.temp", a_id), (2, "com.example.temp", a_id)]
    assert r["wildcard"] == [(1, "com.example.temp", a_id), (2, "com.example.temp", a_id)]
    assert r["prefix"] == [(1, "com.example.temp", a_id), (2, "com.example.temp", a_id),
                           (3, "com.exotic", a_id)]


async def test_subscriber_black_and_whitelists_and_unsubscribe(gw: Gateway) -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        pub = await join(gw.ws_url)
        s1 = await join(gw.ws_url)
        s2 = await join(gw.ws_url)
        got1: list[Any] = []
        got2: list[Any] = []
        sub1 = await s1.subscribe(lambda x: got1.append(x), "com.lists")
        await s2.subscribe(lambda x: got2.append(x), "com.lists")
        ack = PublishOptions(acknowledge=True)
        await pub.publish("com.lists", "to-all", options=ack)
        await pub.publish("com.lists", "not-s1", options=PublishOptions(
            acknowledge=True, exclude=[s1._session_id]))
        await pub.publish("com.lists", "only-s1", options=PublishOptions(
            acknowledge=True, eligible=[s1._session_id]))
        # PUBLISHED says routed, not received: let s1 take its two events before it
        # unsubscribes (bounded; the assertions below still require both)
        for _ in range(500):
            if len(got1) >= 2:
                break
            await asyncio.sleep(0.01)
        await sub1.unsubscribe()
        await pub.publish("com.lists", "after", options=ack)
        for _ in range(500):
            if len(got2) >= 3:
                break
            await asyncio.sleep(0.01)
        for s in (pub, s1, s2):
            await leave(s)
        return got1, got2

    got1, got2 = await in_asyncio(main)
    assert got1 == ["to-all", "only-s1"]
    assert got2 == ["to-all", "not-s1", "after"]


async def test_invalid_topic_is_refused_with_invalid_uri(gw: Gateway) -> None:
    async def main() -> list[str]:
        s = await join(gw.ws_url)
        errors = []
        # autobahn checks the loose rule itself; a `*` component passes it but would be an
        # AMQP wildcard, and `wamp.` is reserved for the router
        for coro in (s.publish("com.*.bad", options=PublishOptions(acknowledge=True)),
                     s.subscribe(lambda: None, "com.*"),
                     s.register(lambda: None, "wamp.reserved"),
                     s.call("com.*.proc")):
            try:
                await coro
            except ApplicationError as exc:
                errors.append(exc.error)
        await leave(s)
        return errors

    assert await in_asyncio(main) == ["wamp.error.invalid_uri"] * 4


async def test_call_result_error_and_no_such_procedure(gw: Gateway) -> None:
    async def main() -> list[Any]:
        callee = await join(gw.ws_url, serializer="msgpack")
        caller = await join(gw.ws_url)

        def add(a: int, b: int) -> int:
            return a + b

        def fail(x: Any) -> None:
            raise ApplicationError("com.example.error.bad", x, reason="because")

        def kw(*args: Any, **kwargs: Any) -> Any:
            from autobahn.wamp.types import CallResult
            return CallResult(*args, **kwargs)

        await callee.register(add, "com.example.add")
        await callee.register(fail, "com.example.fail")
        await callee.register(kw, "com.example.kw")
        out: list[Any] = [await caller.call("com.example.add", 2, 3)]
        try:
            await caller.call("com.example.fail", "arg")
        except ApplicationError as exc:
            out.append((exc.error, list(exc.args), exc.kwargs))
        res = await caller.call("com.example.kw", 1, b"\x01", k="v")
        out.append((list(res.results), res.kwresults))
        try:
            await caller.call("com.example.nothere")
        except ApplicationError as exc:
            out.append(exc.error)
        try:
            await caller.register(add, "com.example.add")
        except ApplicationError as exc:
            out.append(exc.error)
        await leave(callee)
        await leave(caller)
        return out

    out = await in_asyncio(main)
    assert out[0] == 5
    assert out[1] == ("com.example.error.bad", ["arg"], {"reason": "because"})
    assert out[2] == ([1, b"\x01"], {"k": "v"})
    assert out[3:] == ["wamp.error.no_such_procedure", "wamp.error.procedure_already_exists"]


async def test_progressive_results_and_caller_identification(gw_disclose: Gateway) -> None:
    gw = gw_disclose

    async def main() -> tuple[Any, list[Any], Any, int]:
        callee = await join(gw.ws_url)
        caller = await join(gw.ws_url, serializer="msgpack")

        async def count(n: int, details: Any) -> Any:
            for i in range(n):
                if details.progress:
                    details.progress(i)
            return ("done", details.caller, details.caller_authid)

        await callee.register(count, "com.example.count",
                              RegisterOptions(details_arg="details"))
        progress: list[Any] = []
        result = await caller.call("com.example.count", 3, options=CallOptions(
            on_progress=lambda i: progress.append(i)))
        plain = await caller.call("com.example.count", 2)
        sid = caller._session_id
        await leave(callee)
        await leave(caller)
        return result, progress, plain, sid

    result, progress, plain, sid = await in_asyncio(main)
    assert progress == [0, 1, 2]
    assert result == ["done", sid, "guest"]
    assert plain == ["done", sid, "guest"]


async def test_call_timeout_and_cancel_interrupt_the_callee(gw: Gateway) -> None:
    async def main() -> list[Any]:
        callee = await join(gw.ws_url)
        caller = await join(gw.ws_url)
        interrupted: list[str] = []

        async def slow(tag: str) -> str:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                interrupted.append(tag)
                raise
            return tag

        await callee.register(slow, "com.example.slow")
        out: list[Any] = []
        try:
            await caller.call("com.example.slow", "t", options=CallOptions(timeout=1))
        except ApplicationError as exc:
            out.append(exc.error)
        fut = asyncio.ensure_future(caller.call("com.example.slow", "c"))
        await asyncio.sleep(0.2)
        fut.cancel()
        try:
            await fut
        except asyncio.CancelledError:
            out.append("cancelled")
        for _ in range(500):
            if len(interrupted) >= 2:
                break
            await asyncio.sleep(0.01)
        out.append(sorted(interrupted))
        await leave(callee)
        await leave(caller)
        return out

    assert await in_asyncio(main) == ["wamp.error.timeout", "cancelled", ["c", "t"]]


@pytest.mark.parametrize("policy", ["roundrobin", "first", "last", "random"])
async def test_shared_registrations(gw: Gateway, policy: str) -> None:
    async def main() -> tuple[list[str], str | None]:
        callees = [await join(gw.ws_url) for _ in range(3)]
        for i, c in enumerate(callees):
            await c.register(lambda i=i: f"c{i}", "com.example.shared",
                             RegisterOptions(invoke=policy))
        caller = await join(gw.ws_url)
        got = [await caller.call("com.example.shared") for _ in range(6)]
        other = None
        try:
            await caller.register(lambda: None, "com.example.shared",
                                  RegisterOptions(invoke="single"))
        except ApplicationError as exc:
            other = exc.error
        for s in (*callees, caller):
            await leave(s)
        return got, other

    got, other = await in_asyncio(main)
    expected = {"roundrobin": ["c0", "c1", "c2"] * 2, "first": ["c0"] * 6,
                "last": ["c2"] * 6}
    if policy == "random":
        assert set(got) <= {"c0", "c1", "c2"} and len(got) == 6
    else:
        assert got == expected[policy]
    assert other == "wamp.error.procedure_already_exists"


async def test_callee_that_drops_its_connection_frees_the_procedure(gw: Gateway) -> None:
    async def main() -> tuple[str, int]:
        first = await join(gw.ws_url)
        await first.register(lambda: "old", "com.example.proc")
        first._transport.transport.abort()  # no GOODBYE: the transport just goes away
        second = await join(gw.ws_url)
        for _ in range(500):
            try:
                await second.register(lambda: "new", "com.example.proc")
                break
            except ApplicationError:
                await asyncio.sleep(0.01)
        caller = await join(gw.ws_url)
        result = await caller.call("com.example.proc")
        await leave(second)
        await leave(caller)
        return result, 0

    assert (await in_asyncio(main))[0] == "new"
