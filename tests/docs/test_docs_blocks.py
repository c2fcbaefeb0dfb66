"""Every command and code block of README.md and docs/*.md is run here, or marked with why not.

One test per document runs its blocks in order, in a working directory of its own, against
a broker of its own (`gateway serve` on free ports, started with the document's
`<!-- broker config -->` blocks). What each directive means: tests/docs/docs_blocks.py.

The blocks are written for the default setup, so before a block runs its text is rewritten:

- the default ports become the test broker's: 5672 (AMQP), 1883 (MQTT), 61613 (STOMP) and
  15672 (HTTP), as whole numbers (15672 is not touched by the 5672 rule);
- in shell blocks, `.venv/bin/` is dropped: `python` and `gateway` are found first on PATH
  and run this interpreter (`gateway` is `python -m gateway`), and `gateway ctl` and
  `gateway info` get `--config` naming a file with the test broker's ports and data
  directory, which is how they find the broker.

A page of a `browser:` block is answered by the test at its URL (other files the page asks
for at that origin come from tests/websocket/node_modules, which `make test` installs); its
WebSockets go to the broker. Chromium is Debian's, as in tests/websocket/test_ws_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Broker
from docs_blocks import REPO_ROOT, Block, DocError, blocks, documents
from playwright.sync_api import Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from gateway.config import ConfigError, load_config

RUN_TIMEOUT = 30  # seconds for one block
PAGE_TIMEOUT_MS = 15_000
DEFAULT_PORTS = {"amqp": 5672, "mqtt": 1883, "stomp": 61613, "http": 15672}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 "--disable-features=LocalNetworkAccessChecks"]
NODE_MODULES = REPO_ROOT / "tests" / "websocket" / "node_modules"
PAGE_FILES = {  # what a tour page may load beside itself, by file name
    "autobahn.min.js": NODE_MODULES / "autobahn-browser" / "autobahn.min.js",
    "mqtt.min.js": NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js",
}
RUNS = {"python", "shell", "browser"}  # block kinds that need the broker


def rewrite_ports(text: str, ports: dict[str, int | None]) -> str:
    for name, default in DEFAULT_PORTS.items():
        port = ports.get(name)
        if port is not None:
            text = re.sub(rf"(?<![\d.]){default}(?!\d)", str(port), text)
    return text


def rewrite_shell(text: str, ctl_config: Path) -> str:
    text = text.replace(".venv/bin/", "")
    return re.sub(r"(?m)(^|[;&|]\s*)gateway (ctl|info)\b",
                  rf"\1gateway \2 --config {shlex.quote(str(ctl_config))}", text)


class DocRun:
    """One document's blocks run in order, in `work`, against `broker` (if it has one)."""

    def __init__(self, doc: Path, work: Path, tmp: Path) -> None:
        self.doc = doc
        self.work = work
        self.tmp = tmp
        self.broker: Broker | None = None
        self.ctl_config = tmp / "ctl.toml"
        self.last_output: tuple[Block, str] | None = None
        self.saved: dict[str, Block] = {}
        self.used: set[str] = set()
        self.page_expect: list[str] = []  # the lines a browser block's page must show
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, command in (("python", f"exec {shlex.quote(sys.executable)} \"$@\""),
                              ("gateway", f"exec {shlex.quote(sys.executable)} -m gateway "
                                          "\"$@\"")):
            script = bin_dir / name
            script.write_text(f"#!/bin/sh\n{command}\n")
            script.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1"}
        for name in ("GATEWAY_USER", "GATEWAY_PASSWORD"):
            self.env.pop(name, None)

    @property
    def ports(self) -> dict[str, int | None]:
        return self.broker.ports if self.broker is not None else {}

    def start_broker(self, config_blocks: list[Block]) -> None:
        config = self.tmp / "broker.toml"
        config.write_text("\n".join(b.text for b in config_blocks))
        data_dir = self.tmp / "broker-data"
        data_dir.mkdir()
        self.broker = Broker("127.0.0.1", 0, data_dir=data_dir, config=config)
        self.broker.start()
        ports = self.broker.ports
        # what `gateway ctl --config` reads to find the broker: its ports and data directory
        lines = ["[listeners]"]
        lines += [f"{name} = {json.dumps(ports.get(name) or 'off')}" for name in DEFAULT_PORTS]
        lines += ["[store]", f"data_dir = {json.dumps(str(data_dir))}"]
        self.ctl_config.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def fail(self, block: Block, message: str) -> None:
        broker = f"\n--- broker output ---\n{self.broker.output(60)}" if self.broker else ""
        pytest.fail(f"{block.where}: {message}{broker}", pytrace=False)

    def run(self, block: Block) -> None:
        getattr(self, "run_" + block.kind.replace("-", "_"))(block)

    def run_not_run(self, block: Block) -> None:
        self.last_output = None

    def run_file(self, block: Block) -> None:
        (self.work / block.arg).write_text(rewrite_ports(block.text, self.ports))
        self.saved[block.arg] = block

    def run_broker_config(self, block: Block) -> None:
        self.run_config(block)  # the broker already runs with it; check it loads alone too

    def run_config(self, block: Block) -> None:
        path = self.tmp / f"block-{block.line}.toml"
        path.write_text(block.text)
        try:
            load_config(path)
            error = ""
        except ConfigError as exc:
            error = str(exc)
        if error:
            self.fail(block, f"the config block does not load: {error}")

    def run_paths(self, block: Block) -> None:
        for line in block.text.splitlines():
            if line and not line[0].isspace():
                path = line.split()[0]
                if not (REPO_ROOT / path).exists():
                    self.fail(block, f"the listing names {path}, which does not exist")

    def run_python(self, block: Block) -> None:
        script = self.tmp / f"block-{block.line}.py"
        script.write_text(rewrite_ports(block.text, self.ports))
        self._process(block, [sys.executable, str(script)])

    def run_shell(self, block: Block) -> None:
        text = rewrite_shell(rewrite_ports(block.text, self.ports), self.ctl_config)
        self.used.update(name for name in self.saved if name in block.text)
        self._process(block, ["bash", "-e", "-o", "pipefail", "-c", text])

    def _process(self, block: Block, command: list[str]) -> None:
        try:
            done = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            timed_out = f"{exc.stdout!r}\n{exc.stderr!r}"
        else:
            timed_out = ""
        if timed_out:
            self.fail(block, f"still running after {RUN_TIMEOUT} s; output so far:\n{timed_out}")
            return
        if done.returncode != 0:
            self.fail(block, f"exit code {done.returncode}\n--- ran ---\n{command[-1]}\n"
                      f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}")
        self.last_output = (block, done.stdout)

    def run_output(self, block: Block) -> None:
        if self.last_output is None:
            self.fail(block, "an output block must follow a block that is run")
            return
        ran, output = self.last_output
        for line in block.text.splitlines():
            if line.strip() and line.strip() not in output:
                self.fail(block, f"{line.strip()!r} is not in the output of the block at "
                          f"{ran.where}:\n{output}")

    def run_browser(self, block: Block) -> None:
        url = block.arg
        origin = re.match(r"https?://[^/]+", url)
        assert origin is not None
        page_text = rewrite_ports(block.text, self.ports)

        def answer(route: Route) -> None:
            requested = route.request.url.split("?", 1)[0]
            name = requested.rsplit("/", 1)[1]
            if requested == url:
                route.fulfill(status=200, content_type="text/html", body=page_text)
            elif name in PAGE_FILES:
                route.fulfill(status=200, content_type="application/javascript",
                              body=PAGE_FILES[name].read_bytes())
            else:
                route.fulfill(status=404, body="not a file of the docs test")

        assert Path(CHROMIUM).exists(), ("Chromium missing: `make test` installs Debian's "
                                         "chromium package")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.route(f"{origin[0]}/**", answer)
                page.goto(url)
                try:  # on a timeout, the output check below reports what the page shows
                    page.wait_for_function(
                        "(lines) => lines.every((line) => document.body.innerText.includes(line))",
                        arg=self.page_expect, timeout=PAGE_TIMEOUT_MS, polling=100)
                except PlaywrightTimeout:
                    pass
                self.last_output = (block, page.inner_text("body") + "\n" + "\n".join(errors))
            finally:
                browser.close()



def run_document(doc: Path, tmp: Path) -> None:
    try:
        found, error = blocks(doc), ""
    except DocError as exc:
        found, error = [], str(exc)
    if error:
        pytest.fail(error, pytrace=False)
    work = tmp / "work"
    work.mkdir()
    run = DocRun(doc, work, tmp)
    try:
        if any(b.kind in RUNS for b in found):
            run.start_broker([b for b in found if b.kind == "broker-config"])
        for i, block in enumerate(found):
            if block.kind == "browser":
                following = found[i + 1] if i + 1 < len(found) else None
                if following is None or following.kind != "output":
                    run.fail(block, "a browser block needs an <!-- output --> block after it")
                    return
                run.page_expect = [line.strip() for line in following.text.splitlines()
                                   if line.strip()]
            run.run(block)
        for name, saved in run.saved.items():
            if name not in run.used:
                run.fail(saved, f"saved as {name}, but no later block runs it")
    finally:
        run.stop()


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_block_runs(doc: Path, tmp_path: Path) -> None:
    run_document(doc, tmp_path)
