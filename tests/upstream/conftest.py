"""Fixtures of the upstream tests: private RabbitMQ nodes (see rabbit.py), one per session.

``rabbit_node`` is one node of its own (tests that raise alarms on it use it);
``rabbit_cluster`` is three clustered nodes (tests that kill a node restart it before they
end, so later tests find three running nodes). ``nodes``: two gateway nodes with
`--backend rabbitmq` in front of ``rabbit_node``, per test module (a module that needs
other flags defines its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .gateway_node import GatewayNode
from .rabbit import Cluster, available, running_cluster


def _require() -> None:
    if not available():
        pytest.fail("rabbitmq-server (Debian's package) is not installed: run `make test`, "
                    "whose setup installs it", pytrace=False)


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[Cluster]:
    _require()
    with running_cluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[Cluster]:
    _require()
    with running_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def nodes(rabbit_node: Cluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayNode, GatewayNode]]:
    """Two gateway nodes in front of the same RabbitMQ node."""
    a = GatewayNode(rabbit_node, tmp_path_factory.mktemp("gw-a")).start()
    b = GatewayNode(rabbit_node, tmp_path_factory.mktemp("gw-b")).start()
    yield a, b
    a.stop()
    b.stop()
