"""Development certificates: a self-signed CA, a server certificate for this machine
(localhost, 127.0.0.1, ::1) and a client certificate whose common name is a broker user,
all signed by that CA. `gateway ctl generate_cert DIR` (and `make cert`) write them; the
TLS tests make their own the same way.

The `cryptography` package does the work (keys, X.509 building, signing); these are ECDSA
P-256 keys, fast to make and accepted by every TLS 1.2/1.3 client. They are for development
and tests only: the CA's key sits next to the certificates it signed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS: Final = 365
_Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertFiles:
    """Where `generate` wrote each PEM file (the names RabbitMQ's tls-gen uses, shortened)."""

    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path


def generate(directory: Path, *, client_cn: str = "guest",
             hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS,
             ca_name: str = "gateway development CA") -> CertFiles:
    """Write a new CA, server and client certificate with their keys into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(ca_name)
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key, now, until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, server_cert = _leaf(ca_cert, ca_key, hosts[0] if hosts else "localhost",
                                    ExtendedKeyUsageOID.SERVER_AUTH, now, until, hosts)
    client_key, client_cert = _leaf(ca_cert, ca_key, client_cn,
                                    ExtendedKeyUsageOID.CLIENT_AUTH, now, until, ())
    files = CertFiles(*(directory / name for name in (
        "ca_certificate.pem", "ca_key.pem", "server_certificate.pem", "server_key.pem",
        "client_certificate.pem", "client_key.pem")))
    _write_cert(files.ca_certificate, ca_cert)
    _write_key(files.ca_key, ca_key)
    _write_cert(files.server_certificate, server_cert)
    _write_key(files.server_key, server_key)
    _write_cert(files.client_certificate, client_cert)
    _write_key(files.client_key, client_key)
    return files


def issue_client(files: CertFiles, common_name: str, directory: Path,
                 days: int = DEFAULT_DAYS) -> tuple[Path, Path]:
    """Another client certificate (and key) from the CA `generate` wrote: one per user."""
    ca_cert = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key} is not the EC key generate() writes")
    now = datetime.datetime.now(datetime.UTC)
    key, cert = _leaf(ca_cert, ca_key, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, now,
                      now + datetime.timedelta(days=days), ())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"client_{common_name}_certificate.pem"
    key_path = directory / f"client_{common_name}_key.pem"
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gateway")])


def _builder(subject: x509.Name, issuer: x509.Name, key: _Key, now: datetime.datetime,
             until: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(until))


def _leaf(ca_cert: x509.Certificate, ca_key: _Key, common_name: str,
          usage: x509.ObjectIdentifier, now: datetime.datetime, until: datetime.datetime,
          hosts: Sequence[str]) -> tuple[_Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(_name(common_name), ca_cert.subject, key, now, until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: _Key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
