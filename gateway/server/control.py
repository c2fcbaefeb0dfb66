"""The local control channel: the management API on a Unix domain socket in the data
directory, so that `gateway ctl` on the broker's machine, run by the broker's OS user, needs
no broker credentials (as rabbitmqctl needs none on the node itself).

Who may open it is decided by the operating system, not by a password:
- the socket is `<data_dir>/ctl.sock`, mode 0600 (set before it listens, so nobody connects
  in between), owned by the broker's user;
- it is opened only when the data directory is the broker user's own and not writable by
  group or others (else another user could put a socket of their own in its place);
- each connection's peer credentials (SO_PEERCRED, where the system has them) must be the
  broker's user or root; any other is closed at once.
It is never reachable over TCP. Requests on it are served as the administrator identity
`LOCAL_OPERATOR`, which holds every permission on every vhost.

The data directory is locked (`<data_dir>/broker.lock`, an exclusive `flock` holding the
broker's PID) before the store opens it: a second broker on the same directory stops with
a clear error instead of writing the same files, and a socket left by a broker that was
killed is known to be stale and replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
from pathlib import Path

import trio

from gateway.auth.service import User

SOCKET_NAME = "ctl.sock"
LOCK_NAME = "broker.lock"
MAX_UNIX_PATH = 107  # bytes of a socket path (sun_path is 108 with its NUL on Linux)
LOCAL_OPERATOR = User("local-operator", ("administrator",), node_local=True)


class DataDirInUse(Exception):
    """Another broker holds the data directory's lock."""


class DataDirLock:
    """An exclusive lock on the data directory for as long as the broker runs (released by
    the kernel if the process dies, so a killed broker leaves nothing to clean up)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd = -1

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise DataDirInUse(
                    f"the data directory {self.path.parent} is in use by another running "
                    f"broker{pid}; stop it, or give this one its own with --data-dir") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def socket_path(data_dir: Path, name: str = SOCKET_NAME) -> Path:
    """The control socket (`name`: a worker's own, gateway/server/worker.py)."""
    return Path(data_dir) / name


def directory_problem(data_dir: Path, name: str = SOCKET_NAME) -> str | None:
    """Why the data directory is no safe home for the control socket `name` (None: it
    is)."""
    info = os.stat(data_dir)
    if info.st_uid != os.geteuid():
        return f"{data_dir} belongs to uid {info.st_uid}, not to this process's user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{data_dir} is writable by group or others (chmod go-w it)"
    if len(os.fsencode(socket_path(data_dir, name))) > MAX_UNIX_PATH:
        return (f"the socket path {socket_path(data_dir, name)} is longer than {MAX_UNIX_PATH} "
                "bytes")
    return None


async def open_control_listener(path: Path) -> trio.SocketListener:
    """Bind the socket at `path` (a stale one from a dead broker is replaced: the caller
    holds the data directory's lock), make it 0600, then listen."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def peer_allowed(stream: trio.SocketStream) -> bool:
    """True when the connecting process runs as the broker's user or as root."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # no peer credentials here: the socket's mode decides alone
        return True
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid in (os.geteuid(), 0)
