"""The disk quota the kernel enforces: one sparse ext4 image per appspace, loop-mounted by the
supervisor at the appspace's data dir while its sandbox runs.

The image is `appspaces/<id>/data.img` (next to `data/`, which stays the path the sandbox, the
backups and the admin see). A write past the image's size fails with ENOSPC inside the app at
once, whatever the writer; no measure can lag behind it. Only root can mount: everything here
runs in the supervisor.

- `attach_for(spec)` / `detach_for(spec)`: what the supervisor calls around an appspace's
  run (and a migration of its data); they decide whether the image applies at all.
- `attach(data_dir, disk_mb, uid)`: create the image on first use (`mkfs.ext4 -d` copies what
  the plain data dir held, so an appspace that ran before the images existed, or whose data a
  restore swapped in while it was stopped, keeps its files), grow it offline when the quota was
  raised (`resize2fs`), shrink it offline when the quota was lowered and the data fits
  (`resize2fs` refuses otherwise: the image keeps its size until the data fits), check it
  (`e2fsck -p`: the recovery after a crash) and mount it (nosuid, nodev).
- `detach(data_dir)`: unmount it (the loop device is freed with the last reference:
  `mount -o loop` sets autoclear).
- `unmount_stale()`: at supervisor start, detach every image a killed supervisor left mounted.
- `available()`: whether this host can do it (root, /dev/loop-control, the e2fsprogs tools);
  where it cannot, the measured quota (`appspaces.usage.quota`) is the only one.

The e2fsprogs and util-linux binaries are run, not re-implemented (mkfs, fsck and resize are
not things to hand-write); the mount goes through `mount(8)` for its loop-device set-up.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from django.conf import settings

from sandbox import layout
from sandbox.spec import SandboxSpec
from sandbox.walls import mounts

log = logging.getLogger("sandbox")

IMAGE_NAME = "data.img"
MB = 1024 * 1024
TOOLS = ("mkfs.ext4", "e2fsck", "resize2fs", "mount", "umount")
_TIMEOUT = 300  # a resize of a large image is the slowest step


class DiskImageError(OSError):
    """The image could not be created, checked, resized or mounted."""


def enabled() -> bool:
    """Whether appspace data goes into images: DS_SANDBOX_DISK_IMAGES when set (0: never),
    else (the default) wherever this host can loop-mount."""
    wanted = settings.DS_SANDBOX_DISK_IMAGES
    return available()[0] if wanted is None else bool(wanted)


def measured_because() -> str:
    """Why the measured quota holds instead of the images ("" when the images are used)."""
    if settings.DS_SANDBOX_DISK_IMAGES is False:
        return "switched off (DS_SANDBOX_DISK_IMAGES=0)"
    usable, why = available()
    return "" if usable else f"this host cannot loop-mount: {why}"


@functools.cache
def available() -> tuple[bool, str]:
    """(usable, why not) for this host (asked once per process: the host does not change)."""
    if os.geteuid() != 0:
        return False, "the supervisor is not root (only root can loop-mount)"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control (no loop devices)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return False, f"missing tools: {', '.join(missing)}"
    return True, ""


def attach_for(spec: SandboxSpec, *, as_root: bool) -> bool:
    """Mount the appspace's data image at its data dir (DS_SANDBOX_DISK_IMAGES); False when
    the measured quota alone applies (off, no root or loop devices, or creating it failed)."""
    data = Path(spec.data_dir) if spec.data_dir else None
    if (
        data is None
        or not enabled()
        or not spec.limits.disk_mb
        or not as_root
        or data.name != "data"
        or data.parent.parent != layout.appspaces_dir()  # not a restore's staged copy
    ):
        return False
    try:
        attach(data, spec.limits.disk_mb, spec.uid)
    except OSError as exc:
        if image_path(data).exists():
            # Its data is in the image: starting on the empty dir under it would look like
            # data loss to the app and its owner, and bury the image at the next start.
            raise
        log.error("sandbox %s: no data image, measured quota only: %s", spec.id, exc)
        return False
    return True


def detach_for(spec: SandboxSpec) -> None:
    if spec.data_dir and enabled():
        try:
            detach(spec.data_dir)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("sandbox %s: cannot unmount its data image: %s", spec.id, exc)


def image_path(data_dir: str | Path) -> Path:
    return Path(data_dir).parent / IMAGE_NAME


def is_mounted(path: str | Path) -> bool:
    return os.path.realpath(path) in _mount_points()


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        return {mounts._unescape(line.split()[4]) for line in fh}


def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DiskImageError(errno.EIO, f"{argv[0]}: {exc}") from None
    if done.returncode not in ok:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise DiskImageError(errno.EIO, f"{argv[0]} failed ({done.returncode}): {tail[0]}")
    return done


def _create(image: Path, data: Path, size: int, uid: int) -> None:
    """A sparse image holding what `data` holds, its root owned by the appspace uid."""
    tmp = image.with_name(image.name + ".new")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb") as fh:
        fh.truncate(size)
    argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={uid}:{uid}"]
    has_files = data.is_dir() and any(data.iterdir())
    if has_files:
        argv += ["-d", str(data)]
    try:
        _run(*argv, str(tmp))
    except DiskImageError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, image)  # only a complete image is ever used
    if has_files:  # now in the image; the mount would hide (and keep paying for) the copies
        for entry in data.iterdir():
            mounts.remove_tree(entry) if entry.is_dir() else entry.unlink()


def _resize(image: Path, size: int) -> None:
    """Offline: grow, or shrink when the data fits (resize2fs refuses otherwise)."""
    current = image.stat().st_size
    if current == size:
        return
    _run("e2fsck", "-f", "-p", str(image), ok=(0, 1))
    if size > current:
        with open(image, "r+b") as fh:
            fh.truncate(size)
        _run("resize2fs", str(image))
        return
    try:
        _run("resize2fs", str(image), f"{size // 1024}K")
    except DiskImageError as exc:
        log.warning(
            "%s keeps %d MB: the data does not fit the lower quota (%s)", image, current // MB, exc
        )
        return
    with open(image, "r+b") as fh:
        fh.truncate(size)


def attach(data_dir: str | Path, disk_mb: int, uid: int) -> None:
    """Mount the appspace's image (created, resized, checked as needed) at `data_dir`."""
    data = Path(data_dir)
    if is_mounted(data):
        detach(data)  # a leftover: mount afresh so a new size applies
    image = image_path(data)
    size = disk_mb * MB
    data.mkdir(mode=0o700, exist_ok=True)
    if image.exists() and data.is_dir() and any(data.iterdir()):
        # The plain dir has data while the image is not mounted: a restore swapped it in
        # while the appspace was stopped. It is the newer data: the image is rebuilt from it
        # (the replaced image is kept as data.img.replaced until the next replacement).
        os.replace(image, image.with_name(IMAGE_NAME + ".replaced"))
    if not image.exists():
        _create(image, data, size, uid)
    else:
        _require_released(image)
        _resize(image, size)
        _run("e2fsck", "-p", str(image), ok=(0, 1))  # replays the journal after a crash
    os.chmod(image, 0o600)
    _run("mount", "-o", "loop,nosuid,nodev", str(image), str(data))
    try:
        with contextlib.suppress(OSError):
            (data / "lost+found").rmdir()  # e2fsck makes it again when it needs it
        os.chown(data, uid, uid)
        os.chmod(data, 0o700)
    except OSError:
        detach(data)
        raise


def detach(data_dir: str | Path) -> None:
    """Unmount the image at `data_dir` (nothing mounted is fine)."""
    data = Path(data_dir)
    while is_mounted(data):
        done = subprocess.run(["umount", str(data)], capture_output=True, timeout=_TIMEOUT)
        if done.returncode != 0:
            mounts.unmount(data)  # busy (a backup reading it): detach lazily
    _wait_loop_released(image_path(data))


def _loop_backs(image: Path) -> bool:
    """Whether a loop device still has `image` as its backing file."""
    target = os.path.realpath(image)
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().removesuffix(" (deleted)") == target:
                return True
    return False


def _wait_loop_released(image: Path, timeout: float = 10.0) -> None:
    """The kernel clears an autoclear loop device after the unmount returns (asynchronously):
    e2fsck and resize2fs would see the image as in use until it has."""
    deadline = time.monotonic() + timeout
    while _loop_backs(image) and time.monotonic() < deadline:
        time.sleep(0.01)


def _require_released(image: Path) -> None:
    """An image whose filesystem is still alive somewhere (a lazy unmount, a sandbox's mount
    namespace not yet torn down) must not be checked or resized under it, nor mounted again:
    `mount -o loop` would reuse its loop device and the kernel the live filesystem, with its
    old size. Wait for it, then refuse (the start fails and is retried)."""
    _wait_loop_released(image, timeout=30.0)
    if _loop_backs(image):
        raise DiskImageError(errno.EBUSY, f"{image} is still in use by a loop device")


def unmount_stale() -> None:
    """Unmount every image a killed supervisor left mounted under appspaces/."""
    base = os.path.realpath(layout.appspaces_dir()) + os.sep
    with contextlib.suppress(OSError):
        for point in sorted(_mount_points(), reverse=True):
            if point.startswith(base) and os.path.basename(point) == "data":
                log.warning("unmounting stale data image at %s", point)
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    detach(point)


def mechanism(data_dir: str | Path) -> str:
    """How this appspace's quota is held: "image" (the kernel refuses writes past it) or
    "measured" (read-only above it, after the next measure)."""
    return "image" if enabled() and image_path(data_dir).exists() else "measured"


def free_bytes(data_dir: str | Path) -> int | None:
    """What the app can still write to its mounted image; None when none is mounted."""
    try:
        if not is_mounted(data_dir):
            return None
        st = os.statvfs(data_dir)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
