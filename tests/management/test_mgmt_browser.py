"""The web UI in headless Chromium (Debian's package) driven by Playwright: every page
loads without console errors, a queue created in the UI is there for pika, a message
published by pika shows in the browse view (and stays in the queue), and the trace view
follows a message to its queue.

With GATEWAY_SCREENSHOTS=<dir> set, each page is also saved as a PNG there (how the
screenshots in docs/ are made).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from mgmt_client import api_for, q
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000
PAGES = ("overview", "connections", "queues", "exchanges", "publish", "trace", "admin")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium missing: the Makefile's test bootstrap installs " \
                                    "Debian's chromium package"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ui(browser: Browser, broker: Any) -> Iterator[tuple[Page, list[str]]]:
    """A logged-in page, and the console errors it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"http://{broker.host}:{broker.ports['http']}/")
    page.fill("input[name=user]", broker.user)
    page.fill("input[name=password]", broker.password)
    page.click("#login-form button")
    expect(page.locator("#page h1")).to_have_text("Overview")
    yield page, errors
    context.close()


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("GATEWAY_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=True)


def test_every_page_loads_without_console_errors(ui: tuple[Page, list[str]], broker: Any,
                                                 unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-shown")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.topic", "ui.#")
        for i in range(3):
            ch.basic_publish("amq.topic", f"ui.{i}", f"hello {i}".encode())
        headings = {"overview": "Overview", "connections": "Connections", "queues": "Queues",
                    "exchanges": "Exchanges", "publish": "Publish a message",
                    "trace": "Trace: where did my message go?",
                    "admin": "Users, vhosts, permissions"}
        for page_name in PAGES:
            page.goto(page.url.split("#")[0] + f"#/{page_name}")
            expect(page.locator("#page h1")).to_have_text(headings[page_name])
            shot(page, page_name)
        page.goto(page.url.split("#")[0] + "#/connections")
        expect(page.locator("#page h2", has_text="AMQP 0-9-1")).to_be_visible()
        page.goto(page.url.split("#")[0] + "#/queues")
        expect(page.locator("#page a", has_text=name)).to_be_visible()
        page.click(f"#page a:text-is('{name}')")
        expect(page.locator("#page h1")).to_have_text(f"Queue {name}")
        page.click("#browse")
        expect(page.locator("#browse-result tbody tr")).to_have_count(3)
        shot(page, "queue-browse")
        assert errors == []
    finally:
        api = api_for(broker)
        api.delete(f"/queues/%2F/{q(name)}")
        api.close()
        conn.close()


def test_queue_created_in_the_ui_is_there_for_pika(ui: tuple[Page, list[str]], broker: Any,
                                                   unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-made")
    page.goto(page.url.split("#")[0] + "#/queues")
    page.fill("#page form input[name=name]", name)
    page.select_option("#page form select[name=durable]", "false")
    page.click("#page form button")
    expect(page.locator("#page a", has_text=name)).to_be_visible()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        declared = conn.channel().queue_declare(name, passive=True)
        assert declared.method.queue == name
    finally:
        conn.close()
        api = api_for(broker)
        api.delete(f"/queues/%2F/{q(name)}")
        api.close()
    assert errors == []


def test_message_from_pika_shows_in_browse_and_stays_in_the_queue(
        ui: tuple[Page, list[str]], broker: Any, unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-browse")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    api = api_for(broker)
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.basic_publish("", name, b"from pika, not consumed",
                         pika.BasicProperties(content_type="text/plain", message_id="p-1"))
        page.goto(page.url.split("#")[0] + f"#/queue/%2F/{q(name)}")
        page.click("#browse")
        row = page.locator("#browse-result tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("from pika, not consumed")
        expect(row).to_contain_text("p-1")
        # browsing took nothing: still one ready message, not redelivered
        queue = api.json(f"/queues/%2F/{q(name)}")
        assert queue["messages_ready"] == 1 and queue["messages_unacknowledged"] == 0
        method, _props, body = ch.basic_get(name, auto_ack=True)
        assert body == b"from pika, not consumed" and method.redelivered is False
        assert errors == []
    finally:
        api.delete(f"/queues/%2F/{q(name)}")
        api.close()
        conn.close()


def test_trace_view_shows_where_a_message_went(ui: tuple[Page, list[str]], broker: Any,
                                               unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-traced")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    api = api_for(broker)
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.topic", "traced.#")
        page.goto(page.url.split("#")[0] + "#/trace")
        page.click("#trace-on")
        expect(page.locator("#page .muted", has_text="tracing is on")).to_be_visible()
        ch.basic_publish("amq.topic", "traced.key", b"follow me")
        record = page.locator(".trace", has_text="follow me")
        expect(record).to_be_visible()
        expect(record.locator(".node.q", has_text=name).first).to_be_visible()
        expect(record).to_contain_text("queued")
        shot(page, "trace")
        assert errors == []
    finally:
        api.put("/traces/%2F", {"enabled": False})
        api.delete(f"/queues/%2F/{q(name)}")
        api.close()
        conn.close()
