"""Every filesystem a sandbox sees, what each is for, and why none of them lets it store bytes
that no cap or quota counts; plus the two host-side mounts the supervisor makes for it.

The rule (security round 2, class 2): nothing writable outside the data dir, and every
writable byte capped or counted. Each mount below is one of
- read-only (the app, the harness, Deno and its libraries, meta, `/etc` files, `/dev`, `/`);
- a size-capped tmpfs whose pages are charged to the sandbox's memory cgroup (tmpfs pages go
  to the cgroup of the task that writes them): `/tmp`, `/cache`, the warm job's `/cache`;
- the data dir, counted by the disk quota (and bound read-only when over it);
- the socket dir: a tmpfs of one page and a handful of inodes, mounted by the supervisor on
  the host (the gateway must reach the socket), handed to the root after the app is ready.

In the sandbox (source; mode; why):
- `/`: bubblewrap's own tmpfs; ro (`--remount-ro /`); holds only the mount points below.
- `/proc`: a fresh procfs of the sandbox's pid namespace; Deno reads `/proc/self`.
- `/dev`: bubblewrap's minimal `/dev`; ro (`--remount-ro /dev`): null, zero, urandom still
  take writes (device nodes), but no file and no `/dev/shm` entry can be made.
- `/tmp`: tmpfs of `tmpfs_mb`; rw, capped, memory cgroup; no Deno grant (native code only).
- `/usr/bin/deno` and the libraries `ldd` lists: host files; ro.
- `/dropserver`: `sandbox/harness/`; ro.  `/app`: `apps/<app>/<version>/files/`; ro.
- `/cache` (serving, app-init, migrate): a 32 MB tmpfs with `gen/` bound ro and `--file`
  copies of Deno's SQLite caches; Deno writes its copies (capped, memory cgroup), the app has
  no grant. V8 ignores a code cache it cannot open read-write.
- `/cache` (warm job): `run/<job>/`, a tmpfs the supervisor mounts (`memory_mb`, 65536
  inodes, memory cgroup); rw; root copies the result out with no-follow opens (`copy_out`).
- `/data`: `appspaces/<id>/data/`; rw (ro over quota); the one persistent writable place,
  counted by the disk quota.
- `/meta`: `appspaces/<id>/meta/`; ro; `users.json`, written by the host.
- `/run/ds`: `run/<id>/`, a tmpfs the supervisor mounts (4 KiB, 4 inodes); rw until the app
  is ready (Deno must create `http.sock` there), then root's 0755: the app can neither
  replace the socket nor add an entry.
- `/etc/hosts`, `/etc/nsswitch.conf` (from `run/etc/`), `/etc/resolv.conf`: ro; only with a
  network allowlist.

Outside the sandbox the app also writes its log (`logs/<id>/`), capped by rate, line length,
size and rotation (`sandbox.output`).

Host-side mounts live in the supervisor's mount namespace: the gateway must run in the same
one to see the sockets (docs/sandbox.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from pathlib import Path

from sandbox import layout
from sandbox.spec import SandboxSpec

# --- what bubblewrap mounts ----------------------------------------------------------------------

CACHE_TMPFS_BYTES = 32 * 1024 * 1024
# The socket dir: one page, the root inode plus the socket plus slack. A socket stores nothing.
RUN_TMPFS_BYTES = 4096
RUN_TMPFS_INODES = 4
# The warm job's /cache: the emit cache and Deno's SQLite caches of one app version.
WARM_TMPFS_INODES = 65536


def bwrap_mounts(
    spec: SandboxSpec,
    mode: str,
    *,
    deno: str,
    libraries: tuple[str, ...],
    cache_fds: dict[str, int] | None,
    warming: bool,
    network: bool,
    etc_dir: Path,
) -> tuple[list[str], str]:
    """bubblewrap's filesystem arguments for one sandbox, and the directory to start in."""
    v = layout
    argv = ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(spec.limits.tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    argv += ["--ro-bind", deno, v.SANDBOX_DENO]
    for lib in libraries:
        argv += ["--ro-bind", lib, lib]
    argv += ["--ro-bind", str(layout.HARNESS_DIR), v.SANDBOX_HARNESS]
    argv += ["--ro-bind", spec.app_dir, v.SANDBOX_APP]
    if warming:
        # A tmpfs the supervisor mounted (`mount_warm_stage`), never the shared cache on disk.
        argv += ["--bind", str(layout.sandbox_run_dir(spec.id)), v.SANDBOX_CACHE]
    else:
        argv += ["--size", str(CACHE_TMPFS_BYTES), "--tmpfs", v.SANDBOX_CACHE]
        gen = Path(spec.cache_dir) / "gen"
        if gen.is_dir():
            argv += ["--ro-bind", str(gen), f"{v.SANDBOX_CACHE}/gen"]
        for name, fd in sorted((cache_fds or {}).items()):
            argv += ["--file", str(fd), f"{v.SANDBOX_CACHE}/{name}"]
    chdir = "/"
    if spec.data_dir is not None and mode in ("appspace", "migrate"):
        # Over quota: the mount refuses writes even if Deno's check were bypassed.
        argv += ["--ro-bind" if spec.data_readonly else "--bind", spec.data_dir, v.SANDBOX_DATA]
        chdir = v.SANDBOX_DATA
    if spec.meta_dir is not None and mode in ("appspace", "migrate"):
        argv += ["--ro-bind", spec.meta_dir, v.SANDBOX_META]
    if mode == "appspace":
        # A tmpfs the supervisor mounted (`mount_run_dir`): nothing can be stored there.
        argv += ["--bind", str(layout.sandbox_run_dir(spec.id)), v.SANDBOX_RUN]
    if network:
        argv += ["--ro-bind", str(etc_dir / "hosts"), "/etc/hosts"]
        argv += ["--ro-bind", str(etc_dir / "nsswitch.conf"), "/etc/nsswitch.conf"]
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return argv, chdir


# --- what the supervisor mounts on the host ------------------------------------------------------

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, options: str) -> None:
    """mount(2) through libc: one call, no `mount` binary and its option parsing."""
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach whatever is mounted on `target` (nothing mounted is fine)."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point; gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _fresh_dir(path: Path) -> None:
    """An empty root-owned dir at `path` (run/ is root's 0711, so no sandbox races this)."""
    unmount(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        remove_tree(path)
    path.mkdir(mode=0o700)


def mount_run_dir(spec: SandboxSpec, *, as_root: bool) -> Path:
    """run/<id>/ for a starting appspace: a 4 KiB tmpfs owned by its uid (Deno creates the
    socket in it). Without root (UNSAFE development mode) a plain directory."""
    run = layout.sandbox_run_dir(spec.id)
    run.parent.mkdir(parents=True, exist_ok=True)
    _fresh_dir(run)
    if not as_root:
        os.chmod(run, 0o700)
        return run
    _mount_tmpfs(
        run,
        f"size={RUN_TMPFS_BYTES},nr_inodes={RUN_TMPFS_INODES},mode=0700,"
        f"uid={spec.uid},gid={spec.uid}",
    )
    return run


def seal_run_dir(sandbox_id: str, uid: int, platform_gid: int | None = None) -> None:
    """Once the socket is bound: the dir becomes root's, so the sandbox can no longer remove,
    rename or replace the socket, nor add an entry. Deno keeps serving on its socket.

    With a platform group (the DS_RUN_AS user's, `sandbox.access`), the dir is root:<group>
    0750 and the socket <uid>:<group> 0660: the unprivileged web servers may connect (a unix
    connect needs write permission on the socket), nobody else may even look in. The socket
    is reached through an O_PATH|O_NOFOLLOW descriptor and must be the uid's own socket."""
    fd = os.open(layout.sandbox_run_dir(sandbox_id), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, 0, platform_gid or 0)
        os.fchmod(fd, 0o755 if platform_gid is None else 0o750)
        if platform_gid is None:
            return
        sock = os.open(layout.SOCKET_NAME, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:
            st = os.fstat(sock)
            if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
                raise OSError(f"{layout.SOCKET_NAME} of {sandbox_id} is not the uid's socket")
            os.chown(f"/proc/self/fd/{sock}", uid, platform_gid)  # that very inode
            os.chmod(f"/proc/self/fd/{sock}", 0o660)
        finally:
            os.close(sock)
    finally:
        os.close(fd)


def remove_run_dir(sandbox_id: str) -> None:
    run = layout.sandbox_run_dir(sandbox_id)
    with contextlib.suppress(OSError):
        unmount(run)
    remove_tree(run)


def mount_warm_stage(spec: SandboxSpec, *, as_root: bool) -> Path:
    """run/<job>/ for a warm job: a tmpfs of `memory_mb` owned by the job's uid, bound as its
    /cache. Its pages count in the job's memory cgroup."""
    stage = layout.sandbox_run_dir(spec.id)
    stage.parent.mkdir(parents=True, exist_ok=True)
    _fresh_dir(stage)
    if not as_root:
        os.chmod(stage, 0o755)
        return stage
    _mount_tmpfs(
        stage,
        f"size={spec.limits.memory_mb}m,nr_inodes={WARM_TMPFS_INODES},mode=0755,"
        f"uid={spec.uid},gid={spec.uid}",
    )
    return stage


def unmount_stale(run_dir: Path) -> None:
    """Detach every mount below `run_dir` (left by a supervisor that was killed)."""
    prefix = os.path.realpath(run_dir) + os.sep
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        points = [_unescape(line.split()[4]) for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        with contextlib.suppress(OSError):
            unmount(Path(point))


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


# --- root reading what a sandbox wrote -----------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class CopyRefused(OSError):
    """What the sandbox left is more than its tmpfs could hold, or too deep."""


def copy_out(source: Path, target: Path, *, max_bytes: int, max_depth: int = 32) -> None:
    """Copy the regular files and directories under `source` (a sandbox's tmpfs) into a new
    root-owned `target` (dirs 0755, files 0644). Every open is O_NOFOLLOW relative to an
    opened parent: symlinks, sockets, fifos and devices are skipped, never followed, and a
    name swapped mid-copy can only make that entry fail."""
    budget = [max_bytes]
    src = os.open(source, _DIR_FLAGS)
    try:
        os.mkdir(target, 0o755)
        dst = os.open(target, _DIR_FLAGS)
        try:
            _copy_dir(src, dst, budget, max_depth)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_dir(src: int, dst: int, budget: list[int], depth: int) -> None:
    if depth <= 0:
        raise CopyRefused("the cache is nested too deeply")
    for name in os.listdir(src):
        try:
            st = os.stat(name, dir_fd=src, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=src)
            try:
                os.mkdir(name, 0o755, dir_fd=dst)
                out = os.open(name, _DIR_FLAGS, dir_fd=dst)
                try:
                    _copy_dir(child, out, budget, depth - 1)
                finally:
                    os.close(out)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(name, src, dst, budget)


def _copy_file(name: str, src: int, dst: int, budget: list[int]) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=src)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # swapped for something else since the stat
        out = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dst,
        )
        try:
            while chunk := os.read(fd, 1 << 20):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise CopyRefused("the cache is larger than its tmpfs")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """rmtree that never follows a symlink (shutil.rmtree uses fd-relative opens on Linux)."""
    if path.is_symlink():
        path.unlink()
        return
    shutil.rmtree(path, ignore_errors=True)
