"""A hostile web page in headless Chromium (Playwright) against a browser that holds the
broker's Basic credentials: a cross-site `<form enctype="text/plain">` POST to
/api/definitions creates no user (refused for its Origin; and, were that origin listed,
for its content type), and a page reaching the broker under a rebound DNS name (DNS
rebinding) gets nothing, not the UI, not the API. The attacker's page is served by
Playwright's routing, so no traffic leaves 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mgmt_client import Api, api_for
from playwright.sync_api import Browser, Playwright, sync_playwright
from test_mgmt_browser import ARGS, CHROMIUM, TIMEOUT_MS

ATTACKER = "http://attacker.test"


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    assert Path(CHROMIUM).exists(), "Chromium missing: the Makefile's test bootstrap installs " \
                                    "Debian's chromium package"
    with sync_playwright() as playwright:
        yield playwright


def launch(pw: Playwright, *extra: str) -> Browser:
    return pw.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra], headless=True)


def form_page(target: str, user: str) -> str:
    """The classic text/plain CSRF: the body the browser sends is `name=value`, shaped so
    that it reads as JSON creating an administrator."""
    head = json.dumps({"users": [{"name": user, "password": "pwned",
                                  "tags": "administrator"}], "x": ""})[:-2]
    return f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain">
<input type="hidden" name='{head}' value='"}}'>
</form>
<script>document.getElementById("f").submit();</script>
</body></html>"""


def attack(browser: Browser, broker: Any, user: str) -> int:
    """Open the attacker's page in a context holding guest's credentials for the broker;
    the status the form's POST got."""
    origin = f"http://{broker.host}:{broker.ports['http']}"
    context = browser.new_context(http_credentials={
        "username": broker.user, "password": broker.password, "origin": origin,
        "send": "always"})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        # the credentials are held: the broker answers this browser as guest
        whoami = page.goto(f"{origin}/api/whoami")
        assert whoami is not None and whoami.status == 200
        assert json.loads(whoami.body())["name"] == broker.user
        page.route(f"{ATTACKER}/**", lambda route: route.fulfill(
            status=200, content_type="text/html",
            body=form_page(f"{origin}/api/definitions", user)))
        with page.expect_response(f"{origin}/api/definitions") as posted:
            page.goto(f"{ATTACKER}/cute-cats.html", wait_until="commit")
        response = posted.value
        assert response.request.method == "POST"
        assert response.request.headers.get("content-type", "").startswith("text/plain")
        return response.status
    finally:
        context.close()


def exists(api: Api, user: str) -> bool:
    return api.get(f"/users/{user}").status_code == 200


def test_a_cross_site_form_creates_no_administrator(pw: Playwright, broker: Any) -> None:
    api = api_for(broker)
    browser = launch(pw)
    try:
        assert attack(browser, broker, "csrf-admin") == 403  # its Origin is not ours
        assert not exists(api, "csrf-admin")
    finally:
        browser.close()
        api.delete("/users/csrf-admin")
        api.close()


def test_a_listed_origin_still_cannot_post_a_form(pw: Playwright,
                                                  configured_broker: Any) -> None:
    broker = configured_broker(f'[http]\nallowed_origins = ["{ATTACKER}"]\n')
    api = api_for(broker)
    browser = launch(pw)
    try:
        assert attack(browser, broker, "csrf-admin") == 415  # not JSON
        assert not exists(api, "csrf-admin")
    finally:
        browser.close()
        api.close()


def test_a_rebound_dns_name_gets_nothing(pw: Playwright, broker: Any) -> None:
    """The page's own name now resolves to 127.0.0.1: same origin as far as the browser
    knows, but the Host header names it, and the broker refuses."""
    port = broker.ports["http"]
    browser = launch(pw, "--host-resolver-rules=MAP rebind.test 127.0.0.1")
    context = browser.new_context(http_credentials={
        "username": broker.user, "password": broker.password, "send": "always"})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        for path in ("/", "/api/overview", "/api/definitions", "/metrics"):
            response = page.goto(f"http://rebind.test:{port}{path}")
            assert response is not None and response.status == 403, path
            assert "allowed_hosts" in response.text()
        # the same browser reaching the broker by its address is served
        ok = page.goto(f"http://{broker.host}:{port}/api/overview")
        assert ok is not None and ok.status == 200
    finally:
        context.close()
        browser.close()
