"""A point-in-time copy of an appspace's data dir, taken in two phases so the appspace is held
still only briefly.

1. Copy everything while the appspace runs, noting each file's identity (inode, size, mtime,
   ctime) as it was *before* its bytes were read.
2. Hold the appspace still (`Quiescer`), walk again and copy again only what changed since,
   or what changed so recently that a timestamp could not tell (ctime has a coarse tick, so a
   file whose ctime is within `racy` of phase 1's start is always copied again — as git does
   for "racily clean" files). ctime cannot be set from user space, so an app cannot hide a
   write from this check.

Hard links would not do: SQLite writes in place, so a linked "copy" would keep changing after
the thaw. Copies use reflinks (FICLONE) where the file system has them, else copy_file_range.

The data dir is treated as hostile: nothing is followed (every open is O_NOFOLLOW relative to
an already opened parent), only regular files and folders are copied, and names the restore
side would refuse are skipped — both reported, never silently.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backups.format.metadata import FileRecord, storable_name
from backups.quiesce import Quiescer, Raced

FICLONE = 0x40049409
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MAX_ROUNDS = 3

Identity = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


class SnapshotError(Exception):
    """str() is for the user."""


@dataclass
class Snapshot:
    files: list[FileRecord] = field(default_factory=list)  # without hashes
    folders: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    downtime_ms: float = 0.0
    recopied: int = 0  # files copied again while held still
    rounds: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _kind_name(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (never followed)"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


class _Copier:
    def __init__(self, source: Path, staging: Path, tick: Callable[[], None] | None):
        self.source, self.staging, self.tick = source, staging, tick
        self.seen: dict[str, Identity] = {}  # rel -> identity when copied
        self.staged_folders: set[str] = set()
        self._names: dict[str, str | None] = {}  # rel -> why it cannot be kept (cached)
        self.folders: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.reflink = True

    # --- one walk -----------------------------------------------------------------------------

    def walk(self, *, racy_after_ns: int | None) -> tuple[dict[str, Identity], set[str], int]:
        """Copy what is new or changed (everything on the first walk); returns what exists now."""
        files: dict[str, Identity] = {}
        folders: set[str] = set()
        self.skipped = {}
        copied = 0
        try:
            root = os.open(self.source, _DIR_FLAGS)
        except FileNotFoundError:
            return files, folders, 0  # an appspace that never ran has no data dir yet
        except OSError as exc:
            raise SnapshotError(f"The data folder cannot be read: {exc.strerror}.") from None
        stack: list[tuple[int, str]] = [(root, "")]
        try:
            while stack:
                dir_fd, prefix = stack.pop()
                try:
                    with os.scandir(dir_fd) as entries:
                        items = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
                except FileNotFoundError:
                    items = []
                for name, st in items:
                    rel = f"{prefix}{name}"
                    if rel not in self._names:
                        self._names[rel] = storable_name(rel)
                    why = self._names[rel]
                    if why:
                        self.skipped[rel] = f"not backed up: {why}"
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                        except OSError:
                            continue  # replaced or removed since the listing
                        folders.add(rel)
                        self._ensure_folder(rel)
                        stack.append((child, f"{rel}/"))
                    elif stat.S_ISREG(st.st_mode):
                        outcome = self._file(dir_fd, name, rel, st, racy_after_ns)
                        if outcome is None:
                            continue
                        files[rel], fresh = outcome
                        copied += fresh
                    else:
                        self.skipped[rel] = f"not backed up: it is {_kind_name(st.st_mode)}"
                if dir_fd != root:
                    os.close(dir_fd)
        finally:
            for fd, _ in stack:
                os.close(fd)
            os.close(root)
        return files, folders, copied

    def _ensure_folder(self, rel: str) -> None:
        if rel in self.staged_folders:
            return
        target = self.staging / rel
        if rel in self.seen:  # it was a file when last copied
            del self.seen[rel]
            target.unlink()
        target.mkdir(mode=0o700)
        self.staged_folders.add(rel)

    def _file(
        self, dir_fd: int, name: str, rel: str, st: os.stat_result, racy_after_ns: int | None
    ) -> tuple[Identity, bool] | None:
        """(identity, copied now), or None if it is no longer a file to copy."""
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = self.seen.get(rel)
        if racy_after_ns is not None and known == identity and st.st_ctime_ns < racy_after_ns:
            return identity, False  # unchanged since it was copied
        try:
            src = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None  # removed or replaced (by something that is not a file) meanwhile
        try:
            # The identity is taken before any byte is read: a write during the copy moves
            # ctime on, and the next walk copies the file again.
            fst = os.fstat(src)
            if not stat.S_ISREG(fst.st_mode):
                self.skipped[rel] = f"not backed up: it is {_kind_name(fst.st_mode)}"
                return None
            identity = (fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns, fst.st_ctime_ns)
            self._copy(src, rel)
        finally:
            os.close(src)
        self.seen[rel] = identity
        if self.tick:
            self.tick()
        return identity, True

    def _copy(self, src: int, rel: str) -> None:
        target = self.staging / rel
        if rel in self.staged_folders:  # it was a folder when last copied
            self._drop_folder(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(target, flags, 0o600)
        try:
            if self.reflink:
                try:
                    fcntl.ioctl(dst, FICLONE, src)
                    return
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    self.reflink = False  # not this file system: plain copies from now on
            while True:
                try:
                    n = os.copy_file_range(src, dst, 1 << 30)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    _copy_plain(src, dst)
                    return
                if n == 0:
                    return
        finally:
            os.close(dst)

    def _drop_folder(self, rel: str) -> None:
        _remove(self.staging / rel)
        prefix = f"{rel}/"
        self.staged_folders = {
            f for f in self.staged_folders if f != rel and not f.startswith(prefix)
        }
        for name in [n for n in self.seen if n.startswith(prefix)]:
            del self.seen[name]

    def prune(self, files: dict[str, Identity], folders: set[str]) -> None:
        """Drop from the staging copy what no longer exists in the source (the staging copy is
        ours: what is in it is known without listing it)."""
        for rel in [r for r in self.seen if r not in files]:
            del self.seen[rel]
            (self.staging / rel).unlink(missing_ok=True)
        for rel in sorted(self.staged_folders - folders, reverse=True):
            if rel in self.staged_folders:
                self._drop_folder(rel)


def _copy_plain(src: int, dst: int) -> None:
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


def take_snapshot(
    source: Path,
    staging: Path,
    quiescer: Quiescer,
    *,
    racy_ns: int = 1_000_000_000,
    tick: Callable[[], None] | None = None,
) -> Snapshot:
    """Copy `source` into `staging` (created here, 0700) as it was at one instant."""
    staging.mkdir(mode=0o700)
    copier = _Copier(source, staging, tick)
    started_ns = time.time_ns()
    copier.walk(racy_after_ns=None)
    result = Snapshot()
    for _ in range(_MAX_ROUNDS):
        result.rounds += 1
        try:
            with quiescer.hold():
                files, folders, copied = copier.walk(racy_after_ns=started_ns - racy_ns)
                copier.prune(files, folders)
        except Raced:
            result.recopied += copied
            started_ns = time.time_ns()
            continue
        finally:
            result.downtime_ms = quiescer.downtime_ms
        result.recopied += copied
        break
    else:
        raise SnapshotError("The appspace kept starting and stopping; try the backup again.")
    # Sizes as copied (the copies are final: every file that changed after its copy was copied
    # again while the appspace was held still).
    result.files = [
        FileRecord(rel, (staging / rel).stat().st_size, "", identity[3] / 1e9)
        for rel, identity in sorted(files.items())
    ]
    result.folders = sorted(folders)
    result.skipped = [{"path": p, "reason": r} for p, r in sorted(copier.skipped.items())]
    return result
