"""Disk usage of an appspace's data dir (bytes, files), measured from the host for quota checks
and "what it costs" displays.

The tree belongs to an untrusted app that may be changing it while we walk, so the walk never
follows a symlink (every open is O_NOFOLLOW, relative to the directory fd it came from), skips
whatever vanishes under it, stays on the data dir's filesystem, and holds two fds whatever the
depth: it descends with `openat(name)` and climbs back with `openat("..")`, checking the inode
it lands on (a directory moved mid-walk restarts the walk; repeated moves raise). Paths are
never built, so trees deeper than PATH_MAX are measured too. Blocking: run it off the event loop.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 3


class TreeMoved(OSError):
    """The tree kept changing shape under the walk (directories moved); try again later."""


@dataclass(frozen=True)
class DiskUsage:
    bytes: int = 0  # allocated on disk (st_blocks * 512), as `du`: what a quota should limit
    apparent_bytes: int = 0  # sum of sizes (sparse files count their full length)
    files: int = 0  # every entry that is not a directory (regular files, symlinks, sockets...)
    dirs: int = 0  # directories below the root


def measure(path: str | Path) -> DiskUsage:
    """Usage of the tree at `path` (zero if it does not exist yet). A symlink at `path` itself
    is refused (OSError ELOOP), like everywhere else in the sandbox."""
    for _ in range(_ATTEMPTS):
        try:
            return _walk(os.fspath(path))
        except FileNotFoundError:
            return DiskUsage()
        except _Moved:
            continue
    raise TreeMoved(f"{path} kept changing during {_ATTEMPTS} walks")


class _Moved(Exception):
    pass


class _Totals:
    def __init__(self) -> None:
        self.bytes = self.apparent = self.files = self.dirs = 0
        self.seen: set[tuple[int, int]] = set()  # hard-linked inodes, counted once

    def add(self, st: os.stat_result) -> None:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in self.seen:
                return
            self.seen.add(key)
        self.bytes += st.st_blocks * 512
        self.apparent += st.st_size


def _scan(fd: int, totals: _Totals) -> list[str]:
    """Counts one directory's entries; returns its subdirectories' names."""
    subdirs: list[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone since readdir
                totals.add(st)
                if stat.S_ISDIR(st.st_mode):
                    totals.dirs += 1
                    subdirs.append(entry.name)
                else:
                    totals.files += 1
    except FileNotFoundError:
        pass  # the directory was removed while open: nothing more in it
    return subdirs


def _walk(path: str) -> DiskUsage:
    totals = _Totals()
    fd = os.open(path, _DIR_FLAGS)
    try:
        root = os.fstat(fd)
        totals.add(root)
        stack: list[tuple[tuple[int, int], list[str]]] = [
            ((root.st_dev, root.st_ino), _scan(fd, totals))
        ]
        while True:
            _, pending = stack[-1]
            if pending:
                name = pending.pop()
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # vanished, or replaced by a file or a symlink
                    raise
                st = os.fstat(child)
                if st.st_dev != root.st_dev:
                    os.close(child)  # another filesystem mounted here: not the app's data
                    continue
                os.close(fd)
                fd = child
                stack.append(((st.st_dev, st.st_ino), _scan(fd, totals)))
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            st = os.fstat(parent)
            os.close(fd)
            fd = parent
            if (st.st_dev, st.st_ino) != stack[-1][0]:
                raise _Moved
    finally:
        os.close(fd)
    return DiskUsage(
        bytes=totals.bytes,
        apparent_bytes=totals.apparent,
        files=totals.files,
        dirs=totals.dirs,
    )
