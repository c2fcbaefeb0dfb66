"""A browser on `/ws`: headless Chromium (Debian's package) driven by Playwright runs a page
with autobahn-js (WAMP) and mqtt.js (MQTT over WebSocket) at the broker's HTTP origin; the
page publishes and pika receives, pika publishes and the page receives, through
`gateway serve`'s shared HTTP port.

The broker's HTTP server has no test pages, so Playwright answers the page's own URL and
its two scripts (installed from the npm registry by `make test`) itself; every
WebSocket goes to the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from playwright.sync_api import Browser, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        # the page comes from Playwright, not from the loopback network: let it reach 127.0.0.1
        "--disable-features=LocalNetworkAccessChecks"]
# autobahn-js and mqtt.js from the npm registry, installed by `make test` from
# tests/websocket/package.json into node_modules (not kept in the repository)
NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
SCRIPTS = {
    "autobahn.min.js": NODE_MODULES / "autobahn-browser" / "autobahn.min.js",
    "mqtt.min.js": NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js",
}
TIMEOUT_MS = 15_000

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="/wstest/autobahn.min.js"></script><script src="/wstest/mqtt.min.js"></script>
</head><body><script>
const WS = %(ws)s;
window.results = {wamp: [], mqtt: [], errors: []};
let waiting = 2;
function readyOne() { if (--waiting === 0) window.ready = true; }
const conn = new autobahn.Connection({url: WS, realm: "/", authmethods: ["ticket"],
                                     authid: "guest", onchallenge: () => "guest"});
conn.onopen = async (session) => {
  window.wampProtocol = conn.transport.info.protocol;
  await session.subscribe("com.browser.in", (args) => results.wamp.push(args[0]));
  await session.publish("com.browser.out", ["from wamp"], {}, {acknowledge: true});
  readyOne();
};
conn.onclose = (reason) => { results.errors.push("wamp closed: " + reason); };
conn.open();
const client = mqtt.connect(WS, {username: "guest", password: "guest", protocolVersion: 5,
                                 clientId: "browser-" + Math.random().toString(16).slice(2)});
client.on("error", (e) => results.errors.push("mqtt: " + e));
client.on("message", (topic, payload) => results.mqtt.push([topic, payload.toString()]));
client.on("connect", () => {
  client.subscribe("com/browser/in", {qos: 1}, () => {
    client.publish("com/browser/mqtt-out", "from mqtt", {qos: 1}, readyOne);
  });
});
</script></body></html>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium missing: the Makefile's test bootstrap installs " \
                                    "Debian's chromium package"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def test_browser_wamp_and_mqtt_over_websocket_meet_pika(browser: Browser, broker: Any) -> None:
    origin = f"http://127.0.0.1:{broker.ports['http']}"
    ws = f"ws://127.0.0.1:{broker.ports['http']}/ws"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "com.browser.#")

    def serve(route: Route) -> None:
        url = route.request.url
        if url.endswith("/wstest/page.html"):
            route.fulfill(status=200, content_type="text/html",
                          body=PAGE % {"ws": json.dumps(ws)})
        else:
            name = url.rsplit("/", 1)[1]
            route.fulfill(status=200, content_type="application/javascript",
                          body=SCRIPTS[name].read_bytes())

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.route(f"{origin}/wstest/*", serve)
        page.goto(f"{origin}/wstest/page.html")
        page.wait_for_function("window.ready === true")
        assert page.evaluate("window.wampProtocol") in ("wamp.2.json", "wamp.2.msgpack")
        got = []
        for _ in range(1000):
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                got.append((method.routing_key, body))
                if len(got) == 2:
                    break
            else:
                conn.sleep(0.01)
        assert sorted(got) == [("com.browser.mqtt-out", b"from mqtt"),
                               ("com.browser.out", b"from wamp")]
        ch.basic_publish("amq.topic", "com.browser.in", b"from pika",
                         pika.BasicProperties(content_type="text/plain"))
        page.wait_for_function("results.wamp.length === 1 && results.mqtt.length === 1")
        results = page.evaluate("window.results")
        assert results == {"wamp": ["from pika"], "mqtt": [["com/browser/in", "from pika"]],
                           "errors": []}
        assert page_errors == []
    finally:
        context.close()
        conn.close()


# -- a page from another origin: the browser is the attacker -------------------------------

LISTED = "http://app.example:8080"
ATTACKER = "http://attacker.example"
PROBE = """<!doctype html><html><head><meta charset="utf-8">
<script src="/wstest/mqtt.min.js"></script></head><body><script>
const BASE = %(base)s;
window.result = {wamp: [], mqtt: []};
// WAMP on /ws: the upgrade, then a ticket login (the issue's page said HELLO anonymously)
const ws = new WebSocket(BASE + "/ws", ["wamp.2.json"]);
ws.onopen = () => {
  result.wamp.push("open");
  ws.send(JSON.stringify([1, "/", {roles: {subscriber: {}}, authmethods: ["ticket"],
                                   authid: "guest"}]));
};
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m[0] === 4) ws.send(JSON.stringify([5, "guest", {}]));
  else result.wamp.push(m[0] === 2 ? "welcome" : "message " + m[0]);
};
ws.onclose = () => result.wamp.push("close");
// MQTT.js on /mqtt (its path alias)
const client = mqtt.connect(BASE + "/mqtt", {username: "guest", password: "guest",
  reconnectPeriod: 0, clientId: "probe-" + Math.random().toString(16).slice(2)});
client.on("connect", () => { result.mqtt.push("connect"); client.end(); });
client.on("close", () => result.mqtt.push("close"));
client.on("error", () => {});
</script></body></html>"""


def probe_from(browser: Browser, page_origin: str, http_port: int) -> dict[str, list[str]]:
    """Load a page from `page_origin` (answered by Playwright, never fetched) that opens a
    WAMP and an MQTT WebSocket to the broker; what each saw."""
    base = f"ws://127.0.0.1:{http_port}"

    def serve(route: Route) -> None:
        url = route.request.url
        if url.endswith("/wstest/probe.html"):
            route.fulfill(status=200, content_type="text/html",
                          body=PROBE % {"base": json.dumps(base)})
        else:
            route.fulfill(status=200, content_type="application/javascript",
                          body=SCRIPTS[url.rsplit("/", 1)[1]].read_bytes())

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.route(f"{page_origin}/wstest/*", serve)
        page.goto(f"{page_origin}/wstest/probe.html")
        page.wait_for_function(
            "(result.wamp.includes('welcome') || result.wamp.includes('close')) && "
            "(result.mqtt.includes('connect') || result.mqtt.includes('close'))")
        result: dict[str, list[str]] = page.evaluate("window.result")
        return result
    finally:
        context.close()


def test_page_from_another_origin_cannot_open_a_websocket(browser: Browser,
                                                          configured_broker: Any) -> None:
    """The issue's attack: a page on another site opens the broker's /ws. Refused at the
    upgrade (HTTP 403) for WAMP and MQTT alike; the broker's own page and a page of an
    origin listed in [http] allowed_origins get in (so it is the Origin rule that refuses,
    not the browser)."""
    broker = configured_broker(f'[http]\nallowed_origins = ["{LISTED}"]\n')
    port = broker.ports["http"]
    attacker = probe_from(browser, ATTACKER, port)
    assert attacker == {"wamp": ["close"], "mqtt": ["close"]}
    assert f"websocket upgrade refused: Origin '{ATTACKER}' not allowed" in broker.output()
    for origin in (f"http://127.0.0.1:{port}", LISTED):
        served = probe_from(browser, origin, port)
        assert served["wamp"][:2] == ["open", "welcome"], origin
        assert served["mqtt"][:1] == ["connect"], origin
