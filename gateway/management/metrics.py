"""Prometheus `/metrics`: RabbitMQ's metric names where this broker has the counterpart
(so the RabbitMQ-Overview Grafana dashboard reads it), plus per-protocol connection and
message counters under `gateway_`.

Values are read from the core and `Stats` at scrape time by one collector in a registry of
the app's own (no process-global state).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import gateway
from gateway.management.api_node import STARTED, disk_free, fd_total, fd_used, memory_used
from gateway.management.router import App
from gateway.management.shapes import NODE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# origin of a message (Message.origin) -> RabbitMQ's `protocol` label where it has one
PROTOCOL_LABEL = {"amqp091": "amqp091", "mqtt": "mqtt311", "stomp": "stomp"}


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class BrokerCollector(Collector):
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        server = app.server
        stats = app.stats
        stats.note_sessions(app.now())
        vhosts = list(app.broker.vhosts.values())
        queues = [q for vh in vhosts for q in vh.queues.values() if not q.hidden]

        identity = GaugeMetricFamily(
            "rabbitmq_identity_info", "Node and cluster names",
            labels=["rabbitmq_node", "rabbitmq_cluster", "rabbitmq_endpoint"])
        identity.add_metric([NODE, NODE, "metrics"], 1)
        yield identity
        build = GaugeMetricFamily("rabbitmq_build_info", "Version information",
                                  labels=["product_name", "product_version"])
        build.add_metric(["gateway", gateway.__version__], 1)
        yield build

        # -- objects ------------------------------------------------------------------------
        yield _gauge("rabbitmq_queues", "Queues available", len(queues))
        yield _gauge("rabbitmq_queue_messages_ready", "Messages ready to be delivered",
                     sum(q.message_count for q in queues))
        yield _gauge("rabbitmq_queue_messages_unacked",
                     "Messages delivered and not yet acknowledged",
                     sum(len(q.unacked) for q in queues))
        yield _gauge("rabbitmq_queue_messages", "Ready and unacknowledged messages",
                     sum(q.message_count + len(q.unacked) for q in queues))
        yield _gauge("rabbitmq_queue_messages_bytes", "Size of message bodies held in queues",
                     app.broker.meter.held_bytes)
        consumers = sum(q.consumer_count for q in queues)
        yield _gauge("rabbitmq_consumers", "Consumers currently connected", consumers)
        yield _gauge("rabbitmq_global_consumers", "Current number of consumers", consumers)
        infos = [s.info() for s in server.sessions]
        yield _gauge("rabbitmq_connections", "Connections currently open", len(infos))
        yield _gauge("rabbitmq_channels", "Channels currently open",
                     sum(len(info.channels) for info in infos))
        yield CounterMetricFamily("rabbitmq_connections_opened", "Total connections opened",
                                  value=sum(stats.opened.values()))
        yield CounterMetricFamily("rabbitmq_connections_closed", "Total connections closed",
                                  value=sum(stats.closed.values()))

        # -- message counters ---------------------------------------------------------------
        _pub, deliver, ack, redeliver, *_rest = stats.totals()
        yield from self._protocol_counters()
        delivered = CounterMetricFamily(
            "rabbitmq_global_messages_delivered", "Messages delivered to consumers or gets",
            labels=["protocol"])
        delivered.add_metric([""], deliver)
        yield delivered
        yield CounterMetricFamily("rabbitmq_global_messages_acknowledged",
                                  "Messages acknowledged by consumers", value=ack)
        yield CounterMetricFamily("rabbitmq_global_messages_redelivered",
                                  "Messages redelivered to consumers", value=redeliver)

        # -- per-protocol, gateway's own ------------------------------------------------------
        live: dict[str, int] = {}
        for info in infos:
            live[info.key] = live.get(info.key, 0) + 1
        conns = GaugeMetricFamily("gateway_connections", "Open connections by protocol",
                                  labels=["protocol"])
        opened = CounterMetricFamily("gateway_connections_opened",
                                     "Connections opened by protocol", labels=["protocol"])
        closed = CounterMetricFamily("gateway_connections_closed",
                                     "Connections closed by protocol", labels=["protocol"])
        for key in sorted(set(live) | set(stats.opened) | set(server.ports) - {"http"}):
            conns.add_metric([key], live.get(key, 0))
            opened.add_metric([key], stats.opened.get(key, 0))
            closed.add_metric([key], stats.closed.get(key, 0))
        yield conns
        yield opened
        yield closed
        received = CounterMetricFamily("gateway_messages_received",
                                       "Messages published, by the protocol they came in by",
                                       labels=["protocol"])
        for origin, n in sorted(stats.received.items()):
            received.add_metric([origin], n)
        yield received

        # -- process and alarms ---------------------------------------------------------------
        limits = server.config.limits
        yield _gauge("rabbitmq_process_resident_memory_bytes", "Resident memory of the broker",
                     memory_used())
        yield _gauge("rabbitmq_resident_memory_limit_bytes",
                     "Memory high-watermark (message bytes held in queues)",
                     limits.memory_high_watermark)
        yield _gauge("rabbitmq_disk_space_available_bytes", "Free disk space of the data dir",
                     disk_free(app))
        yield _gauge("rabbitmq_process_open_fds", "Open file descriptors", fd_used())
        yield _gauge("rabbitmq_process_max_fds", "File descriptor limit", fd_total())
        yield _gauge("rabbitmq_alarms_memory_used_watermark",
                     "1 while the memory alarm is in effect", int(server.memory_alarm))
        yield _gauge("rabbitmq_alarms_free_disk_space_watermark",
                     "1 while the disk alarm is in effect", 0)
        yield _gauge("rabbitmq_alarms_file_descriptor_limit",
                     "1 while the file descriptor alarm is in effect", 0)
        yield _gauge("rabbitmq_erlang_uptime_seconds", "Broker uptime in seconds",
                     time.time() - STARTED)
        yield _gauge("rabbitmq_process_pid", "Broker process id", os.getpid())

    def _protocol_counters(self) -> Iterator[Metric]:
        stats = self.app.stats
        received = CounterMetricFamily(
            "rabbitmq_global_messages_received", "Messages received from publishers",
            labels=["protocol"])
        routed = CounterMetricFamily(
            "rabbitmq_global_messages_routed", "Messages routed to at least one queue",
            labels=["protocol"])
        dropped = CounterMetricFamily(
            "rabbitmq_global_messages_unroutable_dropped",
            "Messages published that no queue received", labels=["protocol"])
        origins = sorted(set(stats.received) | {"amqp091"})
        for origin in origins:
            label = PROTOCOL_LABEL.get(origin, origin)
            received.add_metric([label], stats.received.get(origin, 0))
            routed.add_metric([label], stats.received.get(origin, 0)
                              - stats.unroutable.get(origin, 0))
            dropped.add_metric([label], stats.unroutable.get(origin, 0))
        yield received
        yield routed
        yield dropped


def make_registry(app: App) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(app))
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE
