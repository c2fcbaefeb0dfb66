"""WAMP-CRA tells nobody who exists: the CHALLENGE for an unknown name, and for a user who has
only a password hash (no WAMP-CRA key), looks exactly like a real user's (a salt of the same
length and alphabet, stable per name, across restarts too; the same iterations and key
length; a challenge string with the same fields and no role), and a wrong answer fails the
same way for all three. autobahn-python clients against broker users."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ab_client import JoinFailed, join, leave
from ws_harness import Gateway, in_asyncio, running_gateway

from gateway.auth import hash_password_sha256

SALT = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 bytes, URL-safe base64, no padding


async def _setup(gateway: Gateway) -> None:
    auth = gateway.server.auth
    if auth.user("alice") is None:
        auth.add_user("alice", password="s3cret", tags=["administrator"])  # with a CRA key
        auth.add_user("bob", password_hash=hash_password_sha256("s3cret"))  # a hash only
        for user in ("alice", "bob"):
            auth.set_permissions(user, "/", ".*", ".*", ".*")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path) as gateway:
        await _setup(gateway)
        yield gateway


async def _challenge(gw: Gateway, authid: str, secret: str = "wrong"
                     ) -> tuple[dict[str, Any], tuple[str, str | None] | str]:
    """The CHALLENGE's extra for `authid`, and how the login ended."""
    async def main() -> tuple[dict[str, Any], tuple[str, str | None] | str]:
        seen: list[dict[str, Any]] = []
        try:
            s = await join(gw.ws_url, authmethods=["wampcra"], authid=authid, secret=secret,
                           challenges=seen)
        except JoinFailed as exc:
            return seen[0], (exc.reason, exc.message)
        await leave(s)
        return seen[0], "joined"

    return await in_asyncio(main)


def _shape(extra: dict[str, Any]) -> tuple[Any, ...]:
    challenge = json.loads(extra["challenge"])
    return (sorted(extra), extra["iterations"], extra["keylen"], bool(SALT.match(extra["salt"])),
            sorted(challenge), challenge["authmethod"], challenge["authprovider"])


async def test_challenges_look_alike_for_real_hash_only_and_unknown_names(gw: Gateway) -> None:
    real, real_end = await _challenge(gw, "alice")
    hash_only, hash_end = await _challenge(gw, "bob")
    unknown, unknown_end = await _challenge(gw, "nobody-here")
    assert _shape(real) == _shape(hash_only) == _shape(unknown)
    assert _shape(real)[0] == ["challenge", "iterations", "keylen", "salt"]
    for extra in (real, hash_only, unknown):
        assert "authrole" not in json.loads(extra["challenge"])  # no role before the login
    # a wrong secret, an unknown name and a hash-only user fail alike
    assert real_end == hash_end == unknown_end
    assert real_end[0] == "wamp.error.authentication_failed"


async def test_salts_are_stable_per_name(gw: Gateway) -> None:
    first = [(await _challenge(gw, name))[0]["salt"] for name in ("alice", "bob", "ghost")]
    again = [(await _challenge(gw, name))[0]["salt"] for name in ("alice", "bob", "ghost")]
    assert first == again
    assert len(set(first)) == 3  # and differ between names
    other = (await _challenge(gw, "ghost2"))[0]["salt"]
    assert other not in first
    # the real user still logs in with the salt it was shown
    _, end = await _challenge(gw, "alice", "s3cret")
    assert end == "joined"


async def test_unknown_names_keep_their_salt_across_a_restart(tmp_path: Path) -> None:
    salts = []
    for _ in range(2):
        async with running_gateway(tmp_path) as gateway:
            await _setup(gateway)
            salts.append([(await _challenge(gateway, name))[0]["salt"]
                          for name in ("alice", "ghost")])
    assert salts[0] == salts[1]
