"""Listening TCP sockets, alone or shared by the workers of `gateway serve --workers N`.

One process (the default) binds its ports as `trio.open_tcp_listeners` does: a port another
program listens on is refused (EADDRINUSE). Workers share theirs with SO_REUSEPORT: every
worker binds and listens on the same address, and the kernel spreads new connections
across the listening sockets (by a hash of the connection's addresses and ports).

Before starting the workers the parent process binds each port once more, with SO_REUSEPORT
but without listening (`reserve`): a port given as 0 becomes a fixed free port that every
worker, and a worker restarted later, binds; and the port stays taken for as long as the
parent runs, so no other program takes it while a worker restarts (the reservation has no
SO_REUSEADDR, so a program binding with SO_REUSEADDR alone is refused even while no worker
listens). A socket that does not listen receives no connections. Linux admits to one
SO_REUSEPORT group only sockets of the same user; a port already listened on without
SO_REUSEPORT (another broker) is found first by a plain bind (`reserve` raises
EADDRINUSE).
"""

from __future__ import annotations

import errno
import socket

import trio

REUSE_PORT = getattr(socket, "SO_REUSEPORT", None)


def reuse_port_supported() -> bool:
    return REUSE_PORT is not None


def _configure(sock: socket.socket | trio.socket.SocketType, family: int,
               reuse_port: bool, reuse_addr: bool = True) -> None:
    if reuse_addr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        if REUSE_PORT is None:
            raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
        sock.setsockopt(socket.SOL_SOCKET, REUSE_PORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


async def open_tcp_listeners(port: int, host: str, *, reuse_port: bool = False
                             ) -> list[trio.SocketListener]:
    """Listen on `host:port` (every address the host name has), as
    `trio.open_tcp_listeners`; with `reuse_port`, sharing the port with the other workers."""
    addresses = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            sock = trio.socket.socket(family, type_, proto)
            try:
                _configure(sock, family, reuse_port)
                await sock.bind(sockaddr)
                sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def reserve(host: str, port: int) -> socket.socket:
    """The parent's hold on a port its workers will share: bound with SO_REUSEPORT, not
    listening. Port 0 picks a free port (read it from the socket). Raises OSError
    (EADDRINUSE: a program that does not share the port listens there)."""
    family, type_, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    if port:
        # a plain bind first: a listener of another program, with or without SO_REUSEPORT,
        # refuses it (a socket of ours that only reserves would not)
        with socket.socket(family, type_, proto) as probe:
            _configure(probe, family, reuse_port=False)
            probe.bind(sockaddr)
    sock = socket.socket(family, type_, proto)
    try:
        # without SO_REUSEADDR: a program binding the port with SO_REUSEADDR alone (as most
        # servers do) is refused even while no worker listens (a restart of them all)
        _configure(sock, family, reuse_port=True, reuse_addr=False)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock
