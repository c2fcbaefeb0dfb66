"""``amqp://user:pass@host:port/vhost`` URLs of upstream RabbitMQ nodes (RabbitMQ's URI spec:
the vhost is the percent-decoded path after the first slash, ``/`` as ``%2F``; no path
means the default vhost ``/``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class UpstreamURL:
    host: str
    port: int
    username: str
    password: str
    vhost: str

    def __str__(self) -> str:  # never the password: these end up in logs
        return f"amqp://{self.username}@{self.host}:{self.port}/{self.vhost}"


def parse_url(url: str) -> UpstreamURL:
    """One node's URL; ``ValueError`` for another scheme or a missing host."""
    parts = urlsplit(url)
    if parts.scheme != "amqp":
        raise ValueError(f"upstream URL must be amqp://...: {url!r}")
    if not parts.hostname:
        raise ValueError(f"upstream URL has no host: {url!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return UpstreamURL(
        host=parts.hostname,
        port=parts.port or 5672,
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=unquote(path) if parts.path else "/",
    )
