"""Read-only views of an appspace's data for the platform user: idmapped bind mounts.

A backup reads an appspace's data, which belongs to the appspace's uid (0700 folders, files of
its choosing). Rather than copying it as root, the supervisor mounts `appspaces/<id>/data/`
again at `run/views/<id>/` with an id mapping (Linux 5.12+, `mount_setattr(MOUNT_ATTR_IDMAP)`):
on that mount the appspace's uid and gid read as the DS_RUN_AS user's, and nobody can write
(read-only, nosuid, nodev, noexec). The worker, running as DS_RUN_AS, then takes its snapshot
through the view with the same O_NOFOLLOW walk as before; the sandbox keeps running and is
frozen through `freeze` as before. What the app made unreadable even to itself stays unreadable.

`run/views/` is root:<DS_RUN_AS group> 0750; views live in the supervisor's mount namespace
(as the socket dirs do) and are detached at its next start if it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import subprocess
import time
from pathlib import Path

from sandbox import layout
from sandbox.walls import mounts

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, 0o2000000
_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000
_MOUNT_ATTR = 0x1 | 0x2 | 0x4 | 0x8 | 0x100000  # RDONLY NOSUID NODEV NOEXEC IDMAP
_MOVE_MOUNT_F_EMPTY_PATH = 4
_libc = ctypes.CDLL(None, use_errno=True)


def views_dir() -> Path:
    return layout.run_dir() / "views"


def view_path(sandbox_id: str) -> Path:
    return views_dir() / sandbox_id


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _userns(disk_id: int, view_uid: int, view_gid: int) -> int:
    """A user namespace mapping `disk_id` (uid and gid) to the view's ids: an fd of it."""
    holder = subprocess.Popen(["unshare", "--user", "cat"], stdin=subprocess.PIPE)
    try:
        mine = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/user") == mine:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise OSError("could not make a user namespace for the view")
            time.sleep(0.001)
        Path(f"/proc/{holder.pid}/uid_map").write_text(f"{disk_id} {view_uid} 1\n")
        Path(f"/proc/{holder.pid}/setgroups").write_text("deny\n")
        Path(f"/proc/{holder.pid}/gid_map").write_text(f"{disk_id} {view_gid} 1\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        with contextlib.suppress(OSError):
            holder.stdin.close()
        holder.wait(5)


def open_view(sandbox_id: str, disk_id: int, view_uid: int, view_gid: int) -> Path:
    """Mount the appspace's data read-only at its view path, `disk_id` seen as the view's ids."""
    close_view(sandbox_id)
    views = views_dir()
    views.mkdir(mode=0o750, exist_ok=True)
    os.chown(views, 0, view_gid, follow_symlinks=False)
    os.chmod(views, 0o750)
    target = view_path(sandbox_id)
    target.mkdir(mode=0o700)
    source = layout.appspace_data_dir(sandbox_id)
    if source.is_symlink() or not source.is_dir():
        raise OSError(f"the data of {sandbox_id} is not a folder")
    ns = _userns(disk_id, view_uid, view_gid)
    try:
        tree = _check(
            _libc.syscall(
                _SYS_OPEN_TREE,
                _AT_FDCWD,
                os.fsencode(source),
                _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC,
            ),
            "open_tree",
        )
        try:
            attr = ctypes.create_string_buffer(struct.pack("QQQQ", _MOUNT_ATTR, 0, 0, ns))
            _check(
                _libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, attr, 32),
                "mount_setattr",
            )
            _check(
                _libc.syscall(
                    _SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target),
                    _MOVE_MOUNT_F_EMPTY_PATH,
                ),
                "move_mount",
            )  # fmt: skip
        finally:
            os.close(tree)
    finally:
        os.close(ns)
    return target


def close_view(sandbox_id: str) -> bool:
    target = view_path(sandbox_id)
    if not os.path.lexists(target):
        return False
    with contextlib.suppress(OSError):
        mounts.unmount(target)
    with contextlib.suppress(OSError):
        target.rmdir()
    return True
