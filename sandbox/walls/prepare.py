"""Host-side directories of a sandbox, created and owned the way the sandbox must see them.

The data dir belongs to the sandbox's uid (0700); meta is the platform's (the DS_RUN_AS user,
or root), readable by the sandbox's group only; app files and the emit cache are read-only to
the sandbox (warming writes a tmpfs, `sandbox.walls.mounts`). The socket dir is
`sandbox.walls.mounts.mount_run_dir`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import access
from sandbox.protocol import SandboxStartFailed
from sandbox.spec import SandboxSpec
from sandbox.walls import launcher, seccomp


def _mkdir_chain(path: Path, mode: int = 0o711) -> None:
    """Create missing parents as root with traverse-only permission for sandbox uids."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir()
        os.chmod(directory, mode)


def _refuse_symlink(path: Path, what: str) -> None:
    if path.is_symlink():
        raise SandboxStartFailed(f"{what} {path} is a symlink: refused", reason="bad_layout")


def _check_reachable(path: Path, *, readable: bool) -> None:
    """bubblewrap runs as the sandbox uid, so every directory on the way must let "others"
    through; say so plainly instead of bubblewrap's "Can't find source path"."""
    chain = [path, *path.parents]
    for directory in chain:
        mode = directory.stat().st_mode
        need = 0o005 if (readable and directory == path) else 0o001
        if mode & need != need:
            raise SandboxStartFailed(
                f"{directory} (mode {oct(mode & 0o777)}) is not reachable by sandbox uids: "
                f"it needs o+x{'r' if need == 0o005 else ''}",
                reason="bad_layout",
            )


def prepare_common(spec: SandboxSpec, *, as_root: bool) -> None:
    app_dir = Path(spec.app_dir)
    _refuse_symlink(app_dir, "app dir")
    if not app_dir.is_dir():
        raise SandboxStartFailed(f"the app files {app_dir} are missing", reason="app_files_missing")
    _check_reachable(app_dir, readable=True)
    if not (app_dir / spec.entrypoint).is_file():
        raise SandboxStartFailed(
            f"the app's entrypoint {spec.entrypoint} is missing in {app_dir}",
            reason="app_files_missing",
        )
    cache = Path(spec.cache_dir)
    _refuse_symlink(cache, "cache dir")
    if not cache.exists():
        _mkdir_chain(cache.parent)
        cache.mkdir()
        os.chmod(cache, 0o755)
    _check_reachable(cache, readable=True)
    if spec.data_dir is not None:
        data = Path(spec.data_dir)
        _refuse_symlink(data, "data dir")
        if not data.exists():
            _mkdir_chain(data.parent)
            data.mkdir()
        if as_root:
            os.chown(data, spec.uid, spec.uid, follow_symlinks=False)
        os.chmod(data, 0o700)
        _check_reachable(data.parent, readable=False)
    if spec.meta_dir is not None:
        meta = Path(spec.meta_dir)
        _refuse_symlink(meta, "meta dir")
        if not meta.exists():
            _mkdir_chain(meta.parent)
            meta.mkdir()
        if as_root:
            # The platform (DS_RUN_AS, or root) writes users.json; the sandbox uid reads it.
            platform = access.run_as_user()
            os.chown(meta, platform.uid if platform else 0, spec.uid, follow_symlinks=False)
        os.chmod(meta, 0o750)
        _check_reachable(meta.parent, readable=False)


def open_cache_databases(cache_dir: str) -> dict[str, int]:
    """Read-only fds of the app version's SQLite caches, for bubblewrap to copy in (--file)."""
    fds: dict[str, int] = {}
    for name in launcher.CACHE_DATABASES:
        with contextlib.suppress(FileNotFoundError):
            fds[name] = os.open(Path(cache_dir) / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    return fds


def close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class StartFiles:
    """The fds one bubblewrap reads while it starts: Deno's cache copies (name -> fd) and the
    seccomp filter. Close them once it has started; its copies live on."""

    cache: dict[str, int] = field(default_factory=dict)
    seccomp: int | None = None

    def fds(self) -> tuple[int, ...]:
        return (*self.cache.values(), *([self.seccomp] if self.seccomp is not None else []))

    def close(self) -> None:
        close_fds(self.cache)
        if self.seccomp is not None:
            close_fds({"seccomp": self.seccomp})
        self.cache, self.seccomp = {}, None


def open_start_files(
    spec: SandboxSpec, *, seccomp_filter: seccomp.Filter | None, warming: bool = False
) -> StartFiles:
    files = StartFiles()
    try:
        if not warming:
            files.cache = open_cache_databases(spec.cache_dir)
        if seccomp_filter is not None:
            files.seccomp = seccomp_filter.open_fd()
    except OSError:
        files.close()
        raise
    return files


def checkpoint_cache_databases(cache_dir: str) -> None:
    """Fold the write-ahead logs into the database files after warming, so each sandbox gets
    one self-contained file per cache (a copy without its -wal would lose the entries)."""
    for name in launcher.CACHE_DATABASES:
        path = Path(cache_dir) / name
        if not path.is_file() or path.is_symlink():
            continue  # the copy is root's and holds no links: this is only a sanity check
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("PRAGMA journal_mode=DELETE")
        finally:
            con.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
