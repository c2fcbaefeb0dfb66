"""What a server does differently as one of the workers of `gateway serve --workers N`
(the parent that starts and watches them is gateway/cli/workers.py).

A worker is a full gateway node: its own upstream connection, users, sessions and tasks.
It differs from a lone server in four things:
- its listeners share their ports with the other workers (SO_REUSEPORT, gateway/server/
  listen.py);
- it does not lock the data directory: the parent holds that lock for all of them, so a
  second broker on the same directory is still refused, and a worker that dies and is
  restarted finds nothing left to wait for;
- its local control socket is its own: worker 0 has `<data_dir>/ctl.sock` (where `gateway
  ctl` looks), worker I > 0 `<data_dir>/ctl.I.sock`;
- it tells the parent when it is ready (a line on a pipe the parent gave it) and stops as
  on SIGTERM when the parent is gone (its standard input, a pipe from the parent, ends).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class WorkerRole:
    index: int  # 0..N-1
    ready_fd: int = -1  # the pipe the parent reads "ready" from (-1: none)
    lifeline_fd: int = -1  # the pipe whose end means the parent is gone (-1: none)

    @property
    def control_socket(self) -> str:
        return "ctl.sock" if self.index == 0 else f"ctl.{self.index}.sock"

    def ready(self) -> None:
        """Tell the parent the listeners are open (and close the pipe)."""
        if self.ready_fd < 0:
            return
        try:
            os.write(self.ready_fd, f"ready {os.getpid()}\n".encode())
        except OSError:
            pass  # the parent is gone: the lifeline says so too
        finally:
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)

    async def parent_gone(self) -> None:
        """Return once the parent process is gone (its end of the lifeline closed)."""
        if self.lifeline_fd < 0:
            await trio.sleep_forever()
        stream = trio.lowlevel.FdStream(os.dup(self.lifeline_fd))
        async with stream:
            while await stream.receive_some(64):
                pass  # the parent writes nothing; anything read is ignored
