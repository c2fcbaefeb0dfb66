"""The upstream AMQP client: gateway as a client of a RabbitMQ cluster (docs/upstream.md).

An I/O layer beside ``gateway.server``: trio sockets and tasks around the sans-IO client in
``protocols.amqp.client``.
"""

from .connection import (
    ChannelError,
    ConnectionLost,
    Consumer,
    PublishNacked,
    PublishReturned,
    UpstreamConnection,
    UpstreamError,
    UpstreamMessage,
    connect,
)
from .url import UpstreamURL, parse_url

__all__ = [
    "ChannelError", "ConnectionLost", "Consumer", "PublishNacked", "PublishReturned",
    "UpstreamConnection", "UpstreamError", "UpstreamMessage", "UpstreamURL", "connect",
    "parse_url",
]
