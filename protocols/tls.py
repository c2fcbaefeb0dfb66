"""What a protocol session is told about its connection's TLS, when it has any.

The server (`gateway.server.tls`) fills this in after the handshake; sessions use
`cert_user` to log a client in by its certificate (AMQP `EXTERNAL`, MQTT and STOMP with
`ssl_cert_login`), and the management API shows the rest as RabbitMQ's `ssl_*` fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.info import TLSInfo


@dataclass(frozen=True, slots=True)
class TLSPeer:
    version: str  # as the ssl module names it: "TLSv1.3"
    cipher: str
    # the common name (CN) of the client's certificate, when it presented one and it was
    # verified against [tls] cafile; None otherwise
    cert_user: str | None = None
    cert_subject: str = ""  # the verified certificate's subject, "CN=...,O=..." ("" if none)

    def info(self) -> TLSInfo:
        """As management shows it."""
        return TLSInfo(self.version, self.cipher, self.cert_subject)
