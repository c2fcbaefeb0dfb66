"""The web UI in headless Chromium (Debian's package) driven by Playwright, under the
Content-Security-Policy `default-src 'self'` (put on the page by the test, so an inline
script or style fails here whatever the server sends): every page loads without console
errors and shows what is there (the text a user sees, not only what the DOM holds: no
empty-state line under a populated table); the charts draw the sample history (the points
of the lines match the API's samples); the channels page lists a live pika channel; a queue
created in the UI is there for pika; a message published by pika shows in the browse view
(and stays in the queue); and the trace view follows a message to its queue.

With GATEWAY_SCREENSHOTS=<dir> set, the pages are also saved as PNGs there (how the
screenshots in docs/ are made).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from mgmt_client import Api, api_for, q, wait_for
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    expect,
    sync_playwright,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000
SAMPLE_WAIT = 20.0  # seconds to wait for the broker's next 5-second history sample
CSP = "default-src 'self'"
HEADINGS = {"overview": "Overview", "connections": "Connections", "channels": "Channels",
            "queues": "Queues", "exchanges": "Exchanges", "publish": "Publish a message",
            "trace": "Trace: where did my message go?", "admin": "Users, vhosts, permissions"}
HISTORY = "lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5"

# what a chart drew: its scale and each line's points, read in one step (the page may
# re-render between two reads)
READ_CHART = """(id) => {
  const fig = document.getElementById(id);
  if (!fig || !fig.querySelector("svg")) return null;
  const svg = fig.querySelector("svg");
  const lines = {};
  for (const p of svg.querySelectorAll("polyline")) {
    lines[p.dataset.series] = p.getAttribute("points").trim().split(/\\s+/)
      .filter((xy) => xy).map((xy) => xy.split(",").map(Number));
  }
  const legend = {};
  for (const item of fig.querySelectorAll(".legend-item")) {
    legend[item.dataset.series] = item.querySelector("b").innerText;
  }
  return { baseline: Number(svg.dataset.baseline), ceiling: Number(svg.dataset.ceiling),
           top: Number(svg.dataset.top), lines, legend };
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium missing: the Makefile's test bootstrap installs " \
                                    "Debian's chromium package"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def _with_csp(route: Route) -> None:
    if route.request.resource_type != "document":
        route.continue_()
        return
    response = route.fetch()
    route.fulfill(response=response,
                  headers={**response.headers, "content-security-policy": CSP})


def log_in(browser: Browser, broker: Any) -> tuple[BrowserContext, Page, list[str]]:
    """A logged-in page under the CSP, and the console errors (CSP violations among them)
    it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.route("**/*", _with_csp)
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
    return context, page, errors


@pytest.fixture
def ui(browser: Browser, broker: Any) -> Iterator[tuple[Page, list[str]]]:
    context, page, errors = log_in(browser, broker)
    yield page, errors
    context.close()


@pytest.fixture
def api(broker: Any) -> Iterator[Api]:
    client = api_for(broker)
    yield client
    client.close()


def go(page: Page, route: str) -> None:
    page.goto(page.url.split("#")[0] + f"#/{route}")


def shown(page: Page) -> str:
    """The text of the page as rendered for the user (hidden elements left out)."""
    return page.inner_text("#page")


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("GATEWAY_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=True)


def poll(check: Callable[[], Any], what: str, timeout: float = SAMPLE_WAIT) -> Any:
    return wait_for(check, what, timeout, 0.2)


def newest(details: dict[str, Any]) -> int | None:
    samples = details.get("samples") or []
    return samples[0]["sample"] if samples else None


def test_every_page_loads_and_shows_what_is_there(ui: tuple[Page, list[str]], broker: Any,
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
        for page_name, heading in HEADINGS.items():
            go(page, page_name)
            expect(page.locator("#page h1")).to_have_text(heading)
            shot(page, page_name)
        # populated lists show their rows and not their empty-state line
        go(page, "queues")
        expect(page.locator("#page tbody a", has_text=name)).to_be_visible()
        assert "No queues yet." not in shown(page)
        expect(page.locator("#page .empty")).to_have_count(0)
        go(page, "connections")
        expect(page.locator("#page h2", has_text="AMQP 0-9-1")).to_be_visible()
        assert "No client is connected." not in shown(page)
        go(page, "channels")
        expect(page.locator("#page tbody tr").first).to_be_visible()
        assert "No channel is open." not in shown(page)
        go(page, "overview")
        expect(page.locator("#page td", has_text="AMQP 0-9-1")).to_be_visible()
        assert "No connections." not in shown(page)
        go(page, "exchanges")
        expect(page.locator("#page td", has_text="amq.topic").first).to_be_visible()
        go(page, "queues")
        page.click(f"#page a:text-is('{name}')")
        expect(page.locator("#page h1")).to_have_text(f"Queue {name}")
        page.click("#browse")
        expect(page.locator("#browse-result tbody tr")).to_have_count(3)
        assert "The queue has no ready messages." not in shown(page)
        shot(page, "queue-browse")
        assert errors == []
    finally:
        api = api_for(broker)
        api.delete(f"/queues/%2F/{q(name)}")
        api.close()
        conn.close()


def test_queues_page_shows_the_empty_state_only_when_empty(browser: Browser,
                                                          fresh_broker: Any) -> None:
    context, page, errors = log_in(browser, fresh_broker)
    try:
        go(page, "queues")
        expect(page.locator("#page p.empty")).to_have_text("No queues yet.")
        expect(page.locator("#page table")).to_have_count(0)
        conn = pika.BlockingConnection(pika.URLParameters(fresh_broker.url))
        try:
            conn.channel().queue_declare("now-there-is-one")
        finally:
            conn.close()
        go(page, "overview")
        go(page, "queues")
        expect(page.locator("#page tbody a", has_text="now-there-is-one")).to_be_visible()
        assert "No queues yet." not in shown(page)
        assert errors == []
    finally:
        context.close()


def test_channels_page_lists_a_live_pika_channel(ui: tuple[Page, list[str]], broker: Any,
                                                 api: Api, unique: Callable[[str], str]
                                                 ) -> None:
    page, errors = ui
    name = unique("ui-chan")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_qos(prefetch_count=13)
        ch.queue_declare(name, auto_delete=True)
        ch.basic_consume(name, lambda c, m, _p, _b: c.basic_ack(m.delivery_tag))
        mine = poll(lambda: [c for c in api.json("/channels") if c["prefetch_count"] == 13
                             and c["consumer_count"] == 1], "the channel in /api/channels")
        assert len(mine) == 1
        connection = mine[0]["connection_details"]["name"]
        go(page, "channels")
        row = page.locator("#page tbody tr", has_text=connection)
        expect(row).to_be_visible()
        cells = row.locator("td")
        # connection, channel, vhost, user, mode (C: confirms), state, prefetch, unacked,
        # unconfirmed, consumers
        assert cells.all_inner_texts()[:10] == [connection, str(mine[0]["number"]), "/",
                                                "guest", "C", "running", "13", "0", "0", "1"]
        # publish, get the messages back and ack them: the rates show on the page
        deadline = time.monotonic() + SAMPLE_WAIT
        while True:
            ch.basic_publish("", name, b"tick")
            conn.process_data_events(0.1)
            texts = [cells.nth(i).inner_text() for i in (10, 11, 12)]
            if all(float(t) > 0 for t in texts):
                break
            assert time.monotonic() < deadline, f"rates never showed: {texts}"
        shot(page, "channels")
        assert errors == []
    finally:
        conn.close()


def test_charts_draw_the_sample_history(ui: tuple[Page, list[str]], broker: Any, api: Api,
                                        unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-chart")
    path = f"/queues/%2F/{q(name)}?{HISTORY}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        declared_ms = time.time() * 1000

        def sampled_since(ms: float) -> Any:
            queue = api.json(path)
            samples = queue["messages_ready_details"]["samples"]
            return queue if samples and samples[0]["timestamp"] >= ms else None

        # a sample of the empty queue, then one after the publishes
        poll(lambda: sampled_since(declared_ms), "a history sample of the new queue")
        for i in range(4):
            ch.basic_publish("", name, f"m{i}".encode())
        published_ms = time.time() * 1000
        queue = poll(lambda: sampled_since(published_ms), "a sample after the publishes")
        assert newest(queue["messages_ready_details"]) == 4
        published = [s["sample"] for s in queue["message_stats"]["publish_details"]["samples"]]
        assert published[0] == 4 and published[1] == 0 and len(published) >= 2

        go(page, f"queue/%2F/{q(name)}")
        expect(page.locator("#page h1")).to_have_text(f"Queue {name}")
        queued = page.evaluate(READ_CHART, "chart-queued")
        assert queued is not None, shown(page)
        ready = queued["lines"]["ready"]
        assert len(ready) >= 1
        # the last point is the newest sample, 4, drawn at its height on the scale, and the
        # legend tells the counts now (the same: nothing moved since)
        expected_y = queued["baseline"] - (queued["baseline"] - queued["ceiling"]) * 4 / \
            queued["top"]
        assert abs(ready[-1][1] - expected_y) < 0.2, (ready, queued)
        assert queued["legend"] == {"ready": "4", "unacked": "0", "total": "4"}
        # points run left to right, oldest first
        assert [p[0] for p in ready] == sorted(p[0] for p in ready)
        # the publishes show as a rise of the publish rate above zero
        rates = page.evaluate(READ_CHART, "chart-rates")
        assert rates is not None, shown(page)
        assert any(y < rates["baseline"] for _x, y in rates["lines"]["publish"]), rates
        assert all(y == rates["baseline"] for _x, y in rates["lines"]["ack"]), rates
        shot(page, "queue")

        overview = api.json(f"/overview?{HISTORY}")
        go(page, "overview")
        expect(page.locator("#page h1")).to_have_text("Overview")
        totals = page.evaluate(READ_CHART, "chart-queued")
        assert totals is not None
        total_ready = newest(overview["queue_totals"]["messages_ready_details"])
        assert total_ready is not None and total_ready >= 4
        # the line ends at the newest sample; the legend tells the count now
        last_y = totals["lines"]["ready"][-1][1]
        assert abs(last_y - (totals["baseline"] - (totals["baseline"] - totals["ceiling"])
                             * total_ready / totals["top"])) < 0.2, totals
        assert totals["legend"]["ready"] == f"{overview['queue_totals']['messages_ready']:,}"
        expect(page.locator("#chart-rates figcaption")).to_have_text("Message rates")
        shot(page, "overview")
        assert errors == []
    finally:
        api.delete(f"/queues/%2F/{q(name)}")
        conn.close()


def test_queue_created_in_the_ui_is_there_for_pika(ui: tuple[Page, list[str]], broker: Any,
                                                   unique: Callable[[str], str]) -> None:
    page, errors = ui
    name = unique("ui-made")
    go(page, "queues")
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
        go(page, f"queue/%2F/{q(name)}")
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
        go(page, "trace")
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
