"""A small client for the management API under test (httpx, basic auth), shared by the
`test_mgmt_*` files."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx


def q(name: str) -> str:
    """One URL path segment: `/` becomes `%2F`, as RabbitMQ's API wants vhost names."""
    return quote(name, safe="")


class Api:
    def __init__(self, host: str, port: int, user: str = "guest", password: str = "guest"
                 ) -> None:
        self.base = f"http://{host}:{port}"
        self.client = httpx.Client(base_url=self.base, auth=(user, password), timeout=10.0)

    def close(self) -> None:
        self.client.close()

    def as_user(self, user: str, password: str) -> Api:
        host, port = self.base.removeprefix("http://").rsplit(":", 1)
        return Api(host, int(port), user, password)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get("/api" + path, params=params or None)

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.client.put("/api" + path, json=body)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post("/api" + path, json=body)

    def delete(self, path: str, **params: Any) -> httpx.Response:
        return self.client.delete("/api" + path, params=params or None)


def api_for(broker: Any) -> Api:
    port = broker.ports.get("http")
    assert port, f"the broker under test has no http listener: {broker.ports}"
    return Api(broker.host, int(port), broker.user, broker.password)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0,
             interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
