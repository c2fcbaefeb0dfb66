"""Shared by the TLS tests: certificates made at test time (`gateway.cli.certs`, as
`gateway ctl generate_cert` makes them), a broker with every TLS listener on a free port,
and client-side SSL contexts."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import Broker

from gateway.cli.certs import CertFiles, generate, issue_client

CERT_USER = "cert-user"  # a broker user with no password: it logs in by certificate only
STRANGER = "nobody"  # the CN of a certificate signed by the broker's CA, not a broker user
HOST = "127.0.0.1"  # in the server certificate's subjectAltName
TIMEOUT = 10.0
TLS_LISTENERS = ("amqps", "mqtts", "stomps", "https", "web_stomp_tls", "web_mqtt_tls")


@dataclass(frozen=True)
class Certs:
    files: CertFiles  # the broker's CA, its server certificate, and CERT_USER's certificate
    stranger: tuple[Path, Path]  # STRANGER's certificate and key, from the same CA
    foreign: CertFiles  # another CA altogether: its client certificate is unknown


def make_certs(directory: Path) -> Certs:
    files = generate(directory / "ca", client_cn=CERT_USER)
    stranger = issue_client(files, STRANGER, directory / "ca")
    foreign = generate(directory / "foreign", client_cn=CERT_USER)
    return Certs(files, stranger, foreign)


def broker_config(certs: Certs, *, verify: str, handshake_timeout: int = 10_000,
                  extra: str = "") -> str:
    files = certs.files
    ports = "".join(f"{name} = 0\n" for name in TLS_LISTENERS)
    return f"""
[listeners]
{ports}
[tls]
certfile = "{files.server_certificate}"
keyfile = "{files.server_key}"
cafile = "{files.ca_certificate}"
verify = "{verify}"
handshake_timeout = {handshake_timeout}

[mqtt]
ssl_cert_login = true

[stomp]
ssl_cert_login = true
{extra}

[[users]]
name = "guest"
password = "guest"
tags = ["administrator"]

[[users]]
name = "{CERT_USER}"
password_hash = ""
tags = ["monitoring"]

[[vhosts]]
name = "/"

[[permissions]]
user = "guest"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"

[[permissions]]
user = "{CERT_USER}"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
"""


def start_broker(directory: Path, certs: Certs, *, verify: str,
                 handshake_timeout: int = 10_000, extra: str = "") -> Broker:
    """A broker with every TLS listener on a free port; `extra` is more TOML (sections
    other than [listeners], [tls], [mqtt], [stomp] and the users)."""
    config = directory / f"gateway-{verify}.toml"
    config.write_text(broker_config(certs, verify=verify,
                                    handshake_timeout=handshake_timeout, extra=extra))
    data = directory / f"data-{verify}"
    data.mkdir()
    broker = Broker(HOST, 0, data_dir=data, config=config)
    broker.start()
    missing = [name for name in TLS_LISTENERS if not broker.ports.get(name)]
    assert not missing, f"no TLS listener logged for {missing}:\n{broker.output()}"
    return broker


def client_context(certs: Certs, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trusts the broker's CA; presents `cert` (certificate, key) when given."""
    context = ssl.create_default_context(cafile=str(certs.files.ca_certificate))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def user_cert(certs: Certs) -> tuple[Path, Path]:
    return certs.files.client_certificate, certs.files.client_key


def foreign_cert(certs: Certs) -> tuple[Path, Path]:
    return certs.foreign.client_certificate, certs.foreign.client_key


def closed_by_peer(sock: socket.socket, timeout: float) -> float:
    """Seconds until the broker closed `sock` (reads and drops what it sends meanwhile);
    raises TimeoutError if it is still open after `timeout` seconds."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"still open after {timeout:g} s")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except TimeoutError:
            raise TimeoutError(f"still open after {timeout:g} s") from None
        if not data:
            return time.monotonic() - start
