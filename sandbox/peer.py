"""Host-side connections to a sandbox's unix socket that never follow what the sandbox can change.

The socket lives in `run/<id>/`, a directory the sandbox's uid owns until its app is ready (and
could, were that seal ever missing, fill with symlinks to another appspace's socket or to a
root-only system socket). So a connection, made by root or the DS_RUN_AS web servers, is only
made to the socket itself:
1. the socket path's last component is opened `O_PATH | O_NOFOLLOW` (its parents are root's:
   `run/` is 0711 root, `<id>` a mount point): a symlink is refused, never followed;
2. what was opened must be a socket owned by the appspace's uid;
3. the connect goes through `/proc/self/fd/<n>`, i.e. to that very inode;
4. `SO_PEERCRED` of the connected socket must name the appspace's uid: the listener was made
   by a process of that uid (translated into our user namespace).
Any failure raises `PeerRefused` (an OSError, so callers treat it like a dead sandbox: 502).

The supervisor and the gateway must share a mount namespace: the socket dir is a tmpfs the
supervisor mounts, invisible from any other namespace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import struct

from sandbox import layout

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PeerRefused(OSError):
    """The path is not the appspace's own socket (a symlink, another file, another uid)."""


class NotAccepting(OSError):
    """The listener's backlog is full: asyncio reports a unix connect that never happened as
    done (the socket has no peer). The sandbox is alive but swamped."""


def expected_uid(spec_uid: int) -> int:
    """The uid a sandbox's processes have: its own when the supervisor runs as root (it must),
    whoever calls (root, or the unprivileged DS_RUN_AS web servers); the supervisor's own in
    UNSAFE development mode without root. The supervisor's uid is its control socket's owner."""
    if os.geteuid() == 0:
        return spec_uid
    try:
        supervisor_uid = os.stat(layout.control_socket_path()).st_uid
    except OSError:
        supervisor_uid = os.geteuid()
    return spec_uid if supervisor_uid == 0 else supervisor_uid


def open_socket_path(path: str, uid: int) -> int:
    """An O_PATH descriptor of the socket at `path`, checked to be a socket owned by `uid`."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)  # a symlink opens as itself
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise PeerRefused(f"{path} is a symlink: refused")
        if not stat.S_ISSOCK(st.st_mode):
            raise PeerRefused(f"{path} is not a socket: refused")
        if st.st_uid != uid:
            raise PeerRefused(f"{path} belongs to uid {st.st_uid}, not {uid}: refused")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_peer(sock: socket.socket, uid: int) -> None:
    pid, peer_uid, _gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    if pid == 0 and peer_uid == -1:
        raise NotAccepting(errno.EAGAIN, "the sandbox accepts no connections (backlog full)")
    if peer_uid != uid:
        raise PeerRefused(f"the socket's listener runs as uid {peer_uid} (pid {pid}), not {uid}")


async def connect(path: str, uid: int) -> socket.socket:
    """A connected, verified, non-blocking socket to the sandbox listening at `path`."""
    fd = open_socket_path(path, uid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{fd}")
        check_peer(sock, uid)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(fd)
    return sock


def connect_sync(path: str, uid: int, timeout: float | None = None) -> socket.socket:
    """The blocking twin of `connect` (tools, tests)."""
    fd = open_socket_path(path, uid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(f"/proc/self/fd/{fd}")
        check_peer(sock, uid)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(fd)
    return sock
