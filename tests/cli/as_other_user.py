"""Run `gateway ctl` or `gateway info`, or one raw request on a Unix socket, as another OS
user: `python as_other_user.py ctl ARGS...` / `python as_other_user.py connect PATH`.

It starts as root, loads what the command uses, then becomes `nobody` before doing
anything else (the interpreter's own files are where only root may read, so the process
cannot be started as `nobody`). Only for test runs as root; see `other_user_command`.
"""

from __future__ import annotations

import encodings.idna  # (socket.getaddrinfo's, loaded on first use)
import os
import pwd
import socket
import sys

import gateway.cli.ctl
import gateway.cli.info
import gateway.cli.main
from gateway.config import load_config


def become_nobody() -> None:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def raw_request(path: str) -> str:
    """What a GET on the socket at `path` gets: the status line, "closed", or the error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(path)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror}"
        try:
            sock.sendall(b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"  # by the other end, before or after the request was sent
    return answer.split(b"\r\n", 1)[0].decode() if answer else "closed"


if __name__ == "__main__":
    load_config(None)  # reads the embedded default config: done before giving up root
    assert gateway.cli.ctl and gateway.cli.info and encodings.idna
    become_nobody()
    if sys.argv[1] == "connect":
        print(raw_request(sys.argv[2]))
        sys.exit(0)
    sys.exit(gateway.cli.main.main(sys.argv[1:]))
