"""TLS for the listeners: the server's `ssl.SSLContext` from `[tls]`, and the handshake.

Every TLS listener (amqps, mqtts, stomps, https, web_stomp_tls, web_mqtt_tls) accepts TCP as
the plain ones do, then wraps the stream in a `trio.SSLStream` and completes the handshake
before any protocol code sees it, within `[tls] handshake_timeout` milliseconds. A client that
sends nothing, sends plain text, or fails certificate checks is closed there; it costs its
own task only, so the listener and every other client go on.

The context is `ssl.create_default_context(Purpose.CLIENT_AUTH)`, so ciphers and options
are the ssl module's secure defaults; only the minimum version and client-certificate
checks are ours to set. A verified client certificate's subject common name becomes
`TLSPeer.cert_user`, which sessions may log in by (RabbitMQ's rabbitmq_auth_mechanism_ssl
with `ssl_cert_login_from = common_name`).
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

import trio

from gateway.config import ConfigError, TLSConfig
from protocols.tls import TLSPeer

log = logging.getLogger("gateway.tls")

_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY: Final = {"none": ssl.CERT_NONE, "peer": ssl.CERT_OPTIONAL,
                  "require": ssl.CERT_REQUIRED}
_SOURCE: Final = "[tls]"


def server_context(config: TLSConfig) -> ssl.SSLContext:
    """The listeners' context; a file that cannot be loaded is a `ConfigError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _VERSIONS[config.minimum_version]
    if config.certfile is None or config.keyfile is None:
        raise ConfigError(_SOURCE, "tls.certfile", "a TLS listener needs certfile and keyfile")
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_SOURCE, "tls.certfile",
                          f"cannot load {config.certfile} with key {config.keyfile}: "
                          f"{_why(exc)}") from exc
    if config.verify != "none":
        if config.cafile is None:
            raise ConfigError(_SOURCE, "tls.cafile", "needed to check client certificates")
        try:
            context.load_verify_locations(cafile=config.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(_SOURCE, "tls.cafile",
                              f"cannot load {config.cafile}: {_why(exc)}") from exc
    context.verify_mode = _VERIFY[config.verify]
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)


async def handshake(stream: trio.SocketStream, context: ssl.SSLContext, timeout: float, *,
                    https: bool = False) -> trio.SSLStream[trio.SocketStream] | None:
    """The stream over TLS once the handshake is done; None (stream closed) if it fails or
    takes longer than `timeout` seconds. `https` drops the close_notify exchange, as
    HTTPS clients skip it; the message protocols keep it (their own close frames come
    first anyway)."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=https)
    why = f"no handshake within {timeout:g} s"
    with trio.move_on_after(timeout):
        try:
            await tls.do_handshake()
            return tls
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            cause = exc.__cause__ or exc
            why = str(getattr(cause, "reason", None) or cause or type(cause).__name__)
    try:
        peer = stream.socket.getpeername()
        where = f"{peer[0]}:{peer[1]}"
    except OSError:
        where = "a client"
    log.info("TLS handshake with %s failed: %s", where, why)
    await trio.aclose_forcefully(stream)
    return None


def peer_info(stream: trio.abc.Stream) -> TLSPeer | None:
    """What a session is told of its connection's TLS (None for a plain stream)."""
    if not isinstance(stream, trio.SSLStream):
        return None
    cipher = stream.cipher()
    version = stream.version()
    cert = stream.getpeercert()  # a dict only for a certificate that was verified
    subject: list[tuple[str, str]] = []
    if cert:
        for rdn in cert.get("subject", ()):
            subject.extend((str(key), str(value)) for key, value in rdn)
    names = [value for key, value in subject if key == "commonName"]
    abbrev = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
              "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}
    return TLSPeer(version=version or "", cipher=cipher[0] if cipher else "",
                   cert_user=names[-1] if names else None,
                   cert_subject=",".join(f"{abbrev.get(k, k)}={v}" for k, v in subject))
