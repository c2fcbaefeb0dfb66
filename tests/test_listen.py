"""gateway/server/listen.py: the ports `--workers N` shares. The parent's reservation
(bound with SO_REUSEPORT, not listening) fixes a free port that every worker can listen on,
and keeps other programs off it, whether or not a worker listens."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from gateway.server.listen import open_tcp_listeners, reserve

HOST = "127.0.0.1"


async def test_workers_share_a_reserved_port_that_others_cannot_take() -> None:
    held = reserve(HOST, 0)
    port = held.getsockname()[1]
    assert port != 0
    try:
        # no worker listens yet (or all of them are restarting): the port is still taken
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_listeners(port, host=HOST)
        assert refused.value.errno == errno.EADDRINUSE
        first = await open_tcp_listeners(port, HOST, reuse_port=True)
        second = await open_tcp_listeners(port, HOST, reuse_port=True)
        try:
            with pytest.raises(OSError) as refused:
                await trio.open_tcp_listeners(port, host=HOST)
            assert refused.value.errno == errno.EADDRINUSE
            # another parent finds it in use before starting anything
            with pytest.raises(OSError) as refused:
                reserve(HOST, port)
            assert refused.value.errno == errno.EADDRINUSE
            # a connection is accepted by one of the two listening workers
            client = await trio.open_tcp_stream(HOST, port)
            async with client:
                with trio.fail_after(5):
                    async with trio.open_nursery() as nursery:
                        accepted: list[trio.SocketStream] = []

                        async def accept(listener: trio.SocketListener) -> None:
                            accepted.append(await listener.accept())
                            nursery.cancel_scope.cancel()

                        for listener in (*first, *second):
                            nursery.start_soon(accept, listener)
                assert len(accepted) == 1
                await accepted[0].aclose()
        finally:
            for listener in (*first, *second):
                await listener.aclose()
    finally:
        held.close()


def test_a_port_another_program_listens_on_cannot_be_reserved() -> None:
    with socket.socket() as other:
        other.bind((HOST, 0))
        other.listen(1)
        with pytest.raises(OSError) as refused:
            reserve(HOST, other.getsockname()[1])
        assert refused.value.errno == errno.EADDRINUSE


async def test_one_process_binds_without_sharing() -> None:
    alone = await open_tcp_listeners(0, HOST)
    port = alone[0].socket.getsockname()[1]
    try:
        with pytest.raises(OSError) as refused:
            await open_tcp_listeners(port, HOST, reuse_port=True)
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        for listener in alone:
            await listener.aclose()
