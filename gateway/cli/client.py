"""How `gateway ctl` and `gateway info` reach a live broker's management API: over the local
control socket in the broker's data directory (no credentials, for the broker's OS user)
when it is there and usable and nothing asks for HTTP, else over HTTP(S) as a broker user;
what answers must be gateway. Errors are `CtlError`s carrying rabbitmqctl's exit codes.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from gateway.config import ConfigError, load_config

EX_USAGE, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE = 64, 65, 67, 69
EX_SOFTWARE, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 70, 75, 77, 78
EX_FAILED = EX_DATAERR  # what a command's own refusal exits with
TIMEOUT = 30.0
SOCKET_NAME = "ctl.sock"  # in the data directory (gateway/server/control.py)
MAX_UNIX_PATH = 107


class CtlError(Exception):
    def __init__(self, message: str, code: int = EX_FAILED) -> None:
        super().__init__(message)
        self.code = code


def seg(name: str) -> str:
    return quote(name, safe="")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the broker's local control socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.unix_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Client:
    base: str  # http://host:port, https://host:port, or the control socket's path
    user: str
    password: str
    context: ssl.SSLContext | None = None  # for https: whom to trust
    unix_path: Path | None = None  # the local control channel: no credentials sent
    note: str = ""  # why the local control channel was not used, told with some errors

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix_path is not None:
            return _UnixHTTPConnection(self.unix_path, TIMEOUT)
        scheme, _, hostport = self.base.partition("://")
        if scheme == "https":
            return http.client.HTTPSConnection(hostport, timeout=TIMEOUT, context=self.context)
        return http.client.HTTPConnection(hostport, timeout=TIMEOUT)

    def request(self, method: str, path: str, body: Any = None, *,
                user: tuple[str, str] | None = None) -> tuple[int, bytes]:
        """One request to `/api<path>`: the status and body of gateway's answer. Raises
        `CtlError` when no broker answers, or when what answers is not gateway."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if user is not None or self.unix_path is None:
            name, password = user or (self.user, self.password)
            token = base64.b64encode(f"{name}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, "/api" + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            server = resp.getheader("server") or ""
        except TimeoutError:
            raise CtlError(f"the broker at {self.base} did not answer within {TIMEOUT:g} "
                           "seconds", EX_TEMPFAIL) from None
        except http.client.HTTPException as exc:
            raise CtlError(f"{self.base} does not speak HTTP ({type(exc).__name__}): it is "
                           "not gateway's HTTP API; give its port with --port",
                           EX_UNAVAILABLE) from None
        except OSError as exc:
            why = exc.strerror or exc
            raise CtlError(f"unable to reach the broker's HTTP API at {self.base} ({why}). "
                           "Is the broker running with its http listener on? (see --port, "
                           f"--host, --config){self.note}", EX_UNAVAILABLE) from None
        finally:
            conn.close()
        if not server.lower().startswith("gateway"):
            said = f"Server: {server}" if server else "no Server header"
            raise CtlError(f"{self.base} answers, but it is not gateway ({said}, HTTP "
                           f"{resp.status}): another broker, such as RabbitMQ, or another "
                           "program has that port. Give gateway's http port with --port (see "
                           "the 'listener http on' line of its log)", EX_UNAVAILABLE)
        return resp.status, raw

    def call(self, method: str, path: str, body: Any = None, *,
             user: tuple[str, str] | None = None) -> Any:
        status, raw = self.request(method, path, body, user=user)
        if status < 300:
            try:
                return json.loads(raw) if raw.strip() else None
            except ValueError:
                raise CtlError(f"the broker's answer to {method} /api{path} is not JSON",
                               EX_SOFTWARE) from None
        reason = _reason(raw) or f"HTTP {status}"
        name = (user or (self.user, self.password))[0]
        if status == 401 and reason.lower().startswith("login failed"):
            raise CtlError(f"the broker refused the credentials of user '{name}' (HTTP 401)"
                           f"{self.note}", EX_NOPERM)
        if status in (401, 403):
            who = "this" if self.unix_path is not None and user is None else f"user '{name}'"
            raise CtlError(f"not authorised: {who} may not do that (the broker says: "
                           f"{reason})", EX_NOPERM)
        if status == 404:
            raise _missing(self, path, reason)
        if status == 503:
            raise CtlError(reason, EX_UNAVAILABLE)
        if status >= 500:
            raise CtlError(f"the broker failed: {reason} (HTTP {status})", EX_SOFTWARE)
        raise CtlError(reason, EX_DATAERR)

    def exists(self, path: str) -> bool | None:
        """Whether GET `path` finds something (None: not allowed to look)."""
        status, _ = self.request("GET", path)
        return True if status < 300 else False if status == 404 else None


def _reason(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("error") or data)
    return str(data)


# What a 404 is about. An API path names objects (a vhost, then a queue in it, ...): each is
# looked up at its own path, and the first that does not exist is the error, named.
_IN_VHOST = {"queues": "queue", "exchanges": "exchange", "policies": "policy"}


def _named(path: str) -> list[tuple[str, str, str]]:
    """(kind, name, own path) of each object `path` names, outermost first."""
    parts = [unquote(p) for p in path.partition("?")[0].strip("/").split("/")]
    head, rest = parts[0], parts[1:]
    if not rest:
        return []
    if head == "users":
        return [("user", rest[0], f"/users/{seg(rest[0])}")]
    if head == "connections":
        return [("connection", rest[0], f"/connections/{seg(rest[0])}")]
    if head not in ("vhosts", "bindings", "consumers", "permissions", "topic-permissions",
                    *_IN_VHOST):
        return []
    named = [("vhost", rest[0], f"/vhosts/{seg(rest[0])}")]
    if head in ("permissions", "topic-permissions") and len(rest) > 1:
        named.append(("user", rest[1], f"/users/{seg(rest[1])}"))
    elif head in _IN_VHOST and len(rest) > 1:
        named.append((_IN_VHOST[head], rest[1], f"/{head}/{seg(rest[0])}/{seg(rest[1])}"))
    return named


def _missing(client: Client, path: str, reason: str) -> CtlError:
    base = path.partition("?")[0]
    vhost = ""
    for kind, name, own in _named(path):
        found = False if own == base else client.exists(own)
        if found is False:
            where = f" in vhost '{vhost}'" if kind in _IN_VHOST.values() else ""
            return CtlError(f"no {kind} '{name}'{where}",
                            EX_NOUSER if kind == "user" else EX_DATAERR)
        if kind == "vhost":
            vhost = name
    if reason.lower() in ("not found", "not_found", "http 404"):
        reason = f"not found: /api{base}"
    return CtlError(reason, EX_DATAERR)


def add_endpoint_options(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """--data-dir, --config, --host, --port and the HTTPS options, shared with
    `gateway info`."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--data-dir", type=Path, default=default(None),
                   help="the broker's data directory, where its local control socket is "
                   "(default: the config's)")
    p.add_argument("--config", type=Path, default=default(None),
                   help="config file to take the data directory, http (or https) host and "
                   "port from")
    p.add_argument("--host", default=default(None),
                   help="broker host (default: the config's)")
    p.add_argument("--port", type=int, default=default(None),
                   help="HTTP(S) port (default: the config's)")
    p.add_argument("--https", action="store_true", default=default(False),
                   help="use the https listener (the default when the config has only it)")
    p.add_argument("--cacert", type=Path, default=default(None),
                   help="CA file to check the broker's certificate with (default: the "
                   "config's [tls] cafile, else the system's)")


def connect(args: argparse.Namespace) -> Client:
    """A client of the broker's management API: the local control socket when it is there
    and usable and nothing asks for HTTP, else the HTTP API as the arguments (and the
    config) say."""
    user = args.api_user if args.api_user is not None else os.environ.get("GATEWAY_USER")
    password = (args.api_password if args.api_password is not None
                else os.environ.get("GATEWAY_PASSWORD"))
    note = ""
    if (user is None and password is None and args.host is None and args.port is None
            and not args.https and args.cacert is None):
        path, note = _local_channel(args)
        if path is not None:
            return Client(f"the local control socket {path}", "", "", unix_path=path)
    host, port, context = _endpoint(args)
    scheme = "http" if context is None else "https"
    return Client(f"{scheme}://{host}:{port}", user or "guest", password or "guest", context,
                  note=note)


def _local_channel(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The broker's control socket if this process may use it, else None and why not (""
    when there is none: no broker runs on this data directory)."""
    data_dir: Path | None = args.data_dir
    if data_dir is None:
        data_dir = _config(args).store.data_dir
    path = Path(data_dir).absolute() / SOCKET_NAME

    def unused(why: str) -> tuple[None, str]:
        return None, f" (the local control socket {path} was not used: {why})"

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return unused(f"{exc.strerror or exc}")
    if not stat.S_ISSOCK(info.st_mode):
        return unused("it is not a socket")
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        return unused(f"it belongs to uid {info.st_uid}; run ctl as the broker's user")
    if os.stat(path.parent).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return unused("its directory is writable by group or others")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        return unused(f"its path is longer than {MAX_UNIX_PATH} bytes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(TIMEOUT)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return unused("no broker listens on it (left by a broker that is not running)")
        except OSError as exc:
            return unused(f"{exc.strerror or exc}")
    return path, ""


def _config(args: argparse.Namespace) -> Any:
    try:
        return load_config(args.config)
    except (ConfigError, OSError) as exc:
        raise CtlError(str(exc), EX_CONFIG) from None


def _endpoint(args: argparse.Namespace) -> tuple[str, int, ssl.SSLContext | None]:
    https = bool(getattr(args, "https", False))
    cacert: Path | None = getattr(args, "cacert", None)
    if args.host is not None and args.port is not None and (cacert or not https):
        return args.host, args.port, _https_context(cacert) if https else None
    config = _config(args)
    listeners = config.listeners
    if args.port is None and listeners.http is None and listeners.https is not None:
        https = True  # only the TLS listener is on
    port = args.port if args.port is not None else (
        listeners.https if https else listeners.http)
    if port is None:
        which = "https" if https else "http"
        raise CtlError(f"the config has the {which} listener off; give --port", EX_USAGE)
    host = args.host or listeners.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return host, port, _https_context(cacert or config.tls.cafile) if https else None


def _https_context(cafile: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise CtlError(f"cannot load the CA file {cafile}: {exc}", EX_USAGE) from None
