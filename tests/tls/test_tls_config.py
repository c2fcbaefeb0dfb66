"""The [tls] section and TLS listeners in the config, the command line's TLS flags,
`gateway ctl generate_cert`, and the server side of the handshake (minimum version) on real
sockets in process."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.cli.certs import generate
from gateway.cli.ctl import connect
from gateway.cli.main import build_parser, main
from gateway.config import ConfigError, load_config, with_overrides
from gateway.server.tls import handshake, peer_info, server_context
from protocols.tls import TLSPeer


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def tls_section(files_dir: Path, **extra: str) -> str:
    files = generate(files_dir)
    lines = [f'certfile = "{files.server_certificate}"', f'keyfile = "{files.server_key}"',
             f'cafile = "{files.ca_certificate}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "[tls]\n" + "\n".join(lines) + "\n"


def test_tls_listeners_are_off_by_default() -> None:
    config = load_config()
    assert set(config.listeners.tls_ports().values()) == {None}
    assert config.tls.verify == "none" and config.tls.minimum_version == "TLSv1.2"
    assert not config.mqtt.ssl_cert_login and not config.stomp.ssl_cert_login


@pytest.mark.parametrize(("text", "key"), [
    ('[listeners]\namqps = 5671\n', "tls.certfile"),
    ('[listeners]\nhttps = 0\n[tls]\ncertfile = "c.pem"\n', "tls.keyfile"),
    ('[listeners]\nmqtts = 0\n[tls]\ncertfile = "c.pem"\nkeyfile = "k.pem"\n'
     'verify = "require"\n', "tls.cafile"),
    ('[tls]\nverify = "verify_peer"\n', "tls.verify"),
    ('[tls]\nminimum_version = "TLSv1"\n', "tls.minimum_version"),
    ('[tls]\nciphers = "ALL"\n', "tls.ciphers"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key, info.value


def test_command_line_turns_a_tls_listener_on_only_with_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(load_config(), tls_ports={"stomps": 0})
    assert info.value.key == "tls.certfile"
    config = load_config(write(tmp_path, tls_section(tmp_path / "certs")))
    config = with_overrides(config, tls_ports={"stomps": 0, "amqps": 5671})
    assert (config.listeners.stomps, config.listeners.amqps) == (0, 5671)
    assert config.listeners.amqp == 5672  # the plain listeners are untouched


def test_generate_cert_writes_a_usable_tls_section(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dev-certs"
    assert main(["ctl", "-q", "generate_cert", str(target), "--client-cn", "alice"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("[tls]\n")
    config = load_config(write(tmp_path, printed + 'verify = "require"\n'))
    assert config.tls.certfile == target / "server_certificate.pem"
    server_context(config.tls)  # loads: the key matches the certificate, the CA parses
    client = x509.load_pem_x509_certificate((target / "client_certificate.pem").read_bytes())
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["alice"]
    assert (target / "server_key.pem").stat().st_mode & 0o077 == 0  # keys: owner only


def test_serve_stops_with_exit_code_2_on_a_bad_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ('[listeners]\namqps = 0\n[tls]\ncertfile = "missing.pem"\n'
            'keyfile = "missing-key.pem"\n')
    code = main(["serve", "--config", str(write(tmp_path, text)), "--data-dir",
                 str(tmp_path / "data"), "--amqp-port", "off", "--mqtt-port", "off",
                 "--stomp-port", "off", "--http-port", "off"])
    assert code == 2
    assert "tls.certfile: cannot load missing.pem" in capsys.readouterr().err


async def test_minimum_version_refuses_older_clients_and_reports_the_peer(
        tmp_path: Path) -> None:
    config = load_config(write(tmp_path, tls_section(
        tmp_path / "certs", minimum_version='"TLSv1.3"', verify='"peer"')))
    context = server_context(config.tls)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    results: list[TLSPeer | None] = []

    async def serve_one(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for _ in range(2):
            stream = await listeners[0].accept()
            secured = await handshake(stream, context, timeout=5)
            results.append(peer_info(secured) if secured is not None else None)
            if secured is not None:
                await secured.aclose()

    client_ctx = ssl.create_default_context(cafile=str(config.tls.cafile))
    old = ssl.create_default_context(cafile=str(config.tls.cafile))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_one)
        with pytest.raises(trio.BrokenResourceError):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            await trio.SSLStream(tcp, old, server_hostname="127.0.0.1").do_handshake()
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        modern = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1")
        await modern.do_handshake()
        await modern.receive_some(1)  # the server's close_notify: b""
        await modern.aclose()
    await listeners[0].aclose()
    assert results[0] is None
    info = results[1]
    assert info is not None and info.version == "TLSv1.3"
    assert info.cert_user is None  # no client certificate was presented


def test_ctl_uses_https_when_the_config_has_only_it(tmp_path: Path) -> None:
    text = ('[listeners]\nhttp = "off"\nhttps = 15671\n'
            + tls_section(tmp_path / "certs"))
    parser = build_parser()
    args = parser.parse_args(["ctl", "--config", str(write(tmp_path, text)), "list_users"])
    client = connect(args)
    assert client.base == "https://127.0.0.1:15671"
    assert client.context is not None and client.context.verify_mode == ssl.CERT_REQUIRED
    plain = parser.parse_args(["ctl", "--host", "127.0.0.1", "--port", "15672", "status"])
    assert connect(plain).base == "http://127.0.0.1:15672" and connect(plain).context is None
