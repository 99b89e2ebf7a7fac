"""Unix listeners made by another uid, for fake sandboxes the gateway will talk to.

The gateway only relays to a socket owned by the appspace's uid whose listener runs as that
uid (`sandbox.peer`, checked with SO_PEERCRED). A fake sandbox in the test process (root) has
to look like that: a short child process drops to the uid, binds and listens, and hands the
listening socket back over SCM_RIGHTS. The kernel recorded the uid at listen().
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

_CHILD = """
import os, socket, sys
uid, path, backlog = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
channel = socket.socket(fileno=int(sys.argv[4]))
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(backlog)
socket.send_fds(channel, [b"ok"], [listener.fileno()])
"""


def listen_as(uid: int, path: str, backlog: int = 128) -> socket.socket:
    """A listening unix socket at `path` (its directory is handed to `uid`), made by `uid`."""
    directory = Path(path).parent
    os.chown(directory, uid, uid)
    ours, theirs = socket.socketpair()
    try:
        child = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _CHILD,
                str(uid),
                path,
                str(backlog),
                str(theirs.fileno()),
            ],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        assert child.wait(10) == 0 and fds, "the child could not listen"
    finally:
        ours.close()
        theirs.close()
    listener = socket.socket(fileno=fds[0])
    listener.setblocking(False)
    return listener


async def serve_accepted(listener: socket.socket, handle) -> None:
    """Accept on a listener handed over by `listen_as` and run `handle(reader, writer)` for
    each connection. (asyncio's own servers call listen() again, and the kernel then records
    this process's uid as the listener's.) Cancel the task to stop."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            reader, writer = await asyncio.open_connection(sock=conn)
            task = asyncio.create_task(handle(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        listener.close()


_WS_CHILD = """
import os, sys, time
from websockets.sync.server import unix_serve  # before the uid change: the venv is root's
uid, path = int(sys.argv[1]), sys.argv[2]
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
def never_reads(connection):
    time.sleep(120)
with unix_serve(never_reads, path, max_size=None) as server:
    print("ready", flush=True)
    server.serve_forever()
"""


def websocket_server_as(uid: int, path: str) -> subprocess.Popen:
    """A WebSocket server at `path`, run by `uid`, that accepts and then never reads. Kill it."""
    os.chown(Path(path).parent, uid, uid)
    child = subprocess.Popen(
        [sys.executable, "-c", _WS_CHILD, str(uid), path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child
