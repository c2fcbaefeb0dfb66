"""HTTP requests and responses as plain values: what the HTTP server
(`gateway.server.http`) hands the management application and gets back from it. Neither
side's module is needed to read or make one, so management depends on this module, not on
the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    import h11


@dataclass(slots=True)
class Request:
    method: str
    target: str  # as sent: path and query, percent-encoded
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes = b""
    peer: tuple[str, int] = ("", 0)
    tls: bool = False  # came over the https listener
    # what the application's head check found out (the authenticated user, the route), for
    # its handler; None until a head check let the request through
    auth: object = None

    @classmethod
    def from_h11(cls, event: h11.Request, peer: tuple[str, int], tls: bool = False
                 ) -> Request:
        return cls(
            method=event.method.decode("ascii", "replace"),
            target=event.target.decode("latin-1"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                     for k, v in event.headers],
            peer=peer,
            tls=tls,
        )

    @property
    def body_announced(self) -> bool:
        """The head says a body follows (a non-zero Content-Length, or chunked)."""
        if self.header("transfer-encoding") is not None:
            return True
        length = self.header("content-length")
        return length is not None and length.strip() not in ("", "0")

    @property
    def path(self) -> str:
        """The raw (still percent-encoded) path: split it before decoding, so that `%2F`
        inside a segment stays inside it."""
        return _split_target(self.target)[0] or "/"

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(_split_target(self.target)[1], keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return default

    def head_bytes(self) -> bytes:
        """The request line and headers re-serialised, for a protocol that wants to parse
        the handshake itself (an upgrade handler)."""
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _split_target(target: str) -> tuple[str, str]:
    """Path and query of a request target. `urlsplit` refuses some that h11 lets through
    (`//[x/ws`: an unclosed IPv6 authority), and a raise here would end the listener's
    nursery; such a target is split at the first `?` instead."""
    try:
        parts = urlsplit(target)
    except ValueError:
        path, _, query = target.partition("?")
        return path, query.partition("#")[0]
    return parts.path, parts.query


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
