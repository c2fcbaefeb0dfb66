"""What a web page may ask of the broker: the Origin and Host rules of `[http]`.

A browser attaches the page's origin (`Origin: https://page.example`) to every WebSocket
upgrade and to every cross-site request that writes, and it sends along whatever Basic
credentials it holds for the broker. So a request that carries an Origin is a web page
speaking, and it is served only when that page is the broker's own (the origin's host and
port are the ones the request was sent to, as the Host header names them) or is listed in
`[http] allowed_origins`. A request with no Origin comes from a program that is not a
browser (pika, paho, stomp.py, curl, `gateway ctl`), which cannot be made to carry a page's
credentials, and is served as before.

The Host header is checked too: a page on an attacker's domain that re-resolves its name to
127.0.0.1 (DNS rebinding) reaches the broker as a same-origin page, but its requests carry
the attacker's name as Host. Hosts that are IP addresses or `localhost` are accepted; any
other name must be in `[http] allowed_hosts`.

Pure functions over header values: no I/O, used by the HTTP server and the WebSocket front.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """`[http] allowed_origins` and `allowed_hosts`, normalised (lower case, no path)."""

    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    def host_allowed(self, host: str | None) -> bool:
        """True for a Host header naming an IP address, localhost, or an allowed name.
        A missing Host (HTTP/1.0 clients) is accepted: a browser always sends one."""
        if host is None:
            return True
        name = split_host(host)[0]
        if name is None:
            return False
        if name == "localhost" or name.endswith(".localhost") or _is_ip(name):
            return True
        return "*" in self.allowed_hosts or name in self.allowed_hosts

    def origin_allowed(self, origin: str | None, host: str | None, *, tls: bool) -> bool:
        """True unless `origin` names a page other than the broker's own and not listed.

        `host` is the request's Host header; `tls` whether the request came over TLS (the
        scheme the broker's own pages have)."""
        if origin is None:
            return True
        value = origin.strip().lower().rstrip("/")
        if "*" in self.allowed_origins or value in self.allowed_origins:
            return True
        if value == "null" or host is None:  # sandboxed frames, file:// pages
            return False
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        try:
            origin_port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return False
        name, port = split_host(host)
        if name is None:
            return False
        own_scheme = "https" if tls else "http"
        return (parts.scheme == own_scheme and parts.hostname == name
                and origin_port == (port or DEFAULT_PORTS[own_scheme]))


def split_host(host: str) -> tuple[str | None, int | None]:
    """A Host header's name (lower case, IPv6 without brackets) and port; (None, None) if it
    is malformed."""
    text = host.strip().lower()
    if not text:
        return None, None
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return None, None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        return None, None
    return parts.hostname, port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
