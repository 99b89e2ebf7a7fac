"""Per-sandbox cgroups: one interface, a cgroup v1 and a cgroup v2 backend, chosen by probing.

Each sandbox gets a group `<parent>/<instance>/<name>` (parent `dropserver` by default) with a
memory hard limit and no swap, a CPU quota, a pids limit, IO accounting where the host has it,
freeze/thaw, kill-all and usage read-back. The instance group itself carries the instance
ceiling (`CgroupLimits` of all sandboxes together: memory, CPU, pids), written each time a
sandbox is created, so the platform always keeps what the admin reserved. The supervisor
writes the new process into the group's `cgroup.procs` files between fork and exec (see
`sandbox.walls.spawn`), so no app code ever runs outside its limits.

Longer than most modules on purpose: the v1 and v2 backends answer one interface side by
side, so a change to a limit is made (and reviewed) for both at once.

Where the instance group lives: at the top of each hierarchy (`/dropserver/<instance>`), or,
when the supervisor runs in a cgroup subtree delegated to it (systemd `Delegate=yes`,
`sandbox.walls.delegation`), below its own cgroup (`<own>/dropserver/<instance>`); the
backends take that base per hierarchy and are otherwise the same.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CFS_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio")
V1_REQUIRED = ("memory", "cpu", "cpuacct", "pids", "freezer")
V2_REQUIRED = ("memory", "cpu", "pids")


class CgroupError(RuntimeError):
    """cgroups are missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class IoLimit:
    """Disk IO of one block device ("major:minor"); 0: no limit."""

    device: str
    read_bps: int = 0
    write_bps: int = 0
    read_iops: int = 0
    write_iops: int = 0

    def any(self) -> bool:
        return any((self.read_bps, self.write_bps, self.read_iops, self.write_iops))


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    cpu_percent: int
    pids: int
    io: tuple[IoLimit, ...] = ()


def throttle_device(path: str | Path) -> str | None:
    """The block device ("major:minor") IO limits must name for files under `path`: its
    filesystem's device, or the whole disk of a partition (v1 throttles disks, not
    partitions). A loop device (a per-appspace image) is named itself. None where the
    filesystem has no block device (tmpfs, overlay, NFS): no IO limit can apply there."""
    st_dev = os.stat(path).st_dev
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    sys_dir = Path("/sys/dev/block") / dev
    if not sys_dir.exists():
        return None
    if (sys_dir / "partition").exists():
        with contextlib.suppress(OSError):
            return (sys_dir.resolve().parent / "dev").read_text().strip()
        return None
    return dev


def _v1_io_files(blkio: Path, limits: tuple[IoLimit, ...]) -> list[tuple[Path, str]]:
    """blkio.throttle.{read,write}_{bps,iops}_device lines (0: not written, no limit)."""
    files = []
    for io in limits:
        for kind, value in (
            ("read_bps", io.read_bps),
            ("write_bps", io.write_bps),
            ("read_iops", io.read_iops),
            ("write_iops", io.write_iops),
        ):
            if value:
                files.append((blkio / f"blkio.throttle.{kind}_device", f"{io.device} {value}"))
    return files


def _v2_io_files(group: Path, limits: tuple[IoLimit, ...]) -> list[tuple[Path, str]]:
    """One io.max line per device (0: "max")."""
    files = []
    for io in limits:
        if io.any():
            values = zip(
                ("rbps", "wbps", "riops", "wiops"),
                (io.read_bps, io.write_bps, io.read_iops, io.write_iops),
                strict=True,
            )
            text = " ".join(f"{k}={v or 'max'}" for k, v in values)
            files.append((group / "io.max", f"{io.device} {text}"))
    return files


def _set_ceiling(files: list[tuple[Path, str]]) -> None:
    """Write the instance ceiling; a value the kernel refuses (e.g. a memory limit below what
    the sandboxes use right now) is logged and the old one stays."""
    for path, value in files:
        try:
            _write(path, value)
        except OSError as exc:
            logging.getLogger("sandbox").warning(
                "instance ceiling %s=%s refused: %s", path, value, exc
            )


@dataclass
class Usage:
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    cpu_usage_ns: int = 0
    pids: int = 0
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0


class Cgroup(Protocol):
    name: str

    def procs_files(self) -> list[str]: ...
    def procs(self) -> list[int]: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def set_cpu(self, percent: int) -> None: ...
    def kill_once(self) -> None: ...
    def kill_all(self) -> None: ...
    def usage(self) -> Usage: ...
    def remove(self) -> None: ...


class CgroupBackend(Protocol):
    version: str

    def create(self, name: str, limits: CgroupLimits) -> Cgroup: ...
    def open(self, name: str) -> Cgroup: ...
    def children(self) -> list[str]: ...
    def remove_parent(self) -> None: ...


def _write(path: Path, value: str) -> None:
    # One write() per value: cgroup files act on each write call.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if text == "max":
        return -1
    try:
        return int(text)
    except ValueError:
        return default


def _read_keyed(path: Path) -> dict[str, int]:
    """Files of `key value` lines (memory.events, pids.events, memory.oom_control, cpu.stat)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
    return out


def _rmdir_when_empty(path: Path, deadline: float) -> None:
    """rmdir refuses (EBUSY) while a dying task is still accounted; retry until the deadline."""
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- cgroup v1: one hierarchy per controller -------------------------------------------------


class V1Cgroup:
    def __init__(self, name: str, dirs: dict[str, Path]):
        self.name = name
        self.dirs = dirs  # controller -> group directory

    def procs_files(self) -> list[str]:
        # Controllers co-mounted (cpu,cpuacct) share one directory: write once per directory.
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in {*self.dirs.values()}:
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(pids)

    def freeze(self) -> None:
        state = self.dirs["freezer"] / "freezer.state"
        _write(state, "FROZEN")
        deadline = time.monotonic() + 5
        while state.read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name} did not freeze")
            time.sleep(0.002)

    def thaw(self) -> None:
        _write(self.dirs["freezer"] / "freezer.state", "THAWED")

    def set_cpu(self, percent: int) -> None:
        _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(CFS_PERIOD_US * percent // 100))

    def kill_once(self) -> None:
        """SIGKILL every task; frozen first so nothing forks between listing and killing."""
        with contextlib.suppress(OSError, CgroupError):
            self.freeze()
        _kill_pids(self.procs())
        with contextlib.suppress(OSError):
            self.thaw()  # SIGKILL is delivered once the tasks run again

    def kill_all(self) -> None:
        deadline = time.monotonic() + 5
        while pids := self.procs():
            self.kill_once()
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name}: tasks survive SIGKILL: {pids}")
            time.sleep(0.002)

    def usage(self) -> Usage:
        mem = self.dirs["memory"]
        usage = Usage(
            memory_bytes=_read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes"),
            cpu_usage_ns=_read_int(self.dirs["cpuacct"] / "cpuacct.usage"),
            pids=_read_int(self.dirs["pids"] / "pids.current"),
            oom_kills=_read_keyed(mem / "memory.oom_control").get("oom_kill", 0),
            pids_limit_hits=_read_keyed(self.dirs["pids"] / "pids.events").get("max", 0),
        )
        if "blkio" in self.dirs:
            read = write = 0
            path = self.dirs["blkio"] / "blkio.throttle.io_service_bytes_recursive"
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[1] == "Read":
                        read += int(parts[2])
                    elif len(parts) == 3 and parts[1] == "Write":
                        write += int(parts[2])
            usage.io_read_bytes, usage.io_write_bytes = read, write
        return usage

    def remove(self) -> None:
        self.kill_all()
        deadline = time.monotonic() + 5
        for d in {*self.dirs.values()}:
            _rmdir_when_empty(d, deadline)


class V1Backend:
    version = "v1"

    def __init__(
        self,
        mounts: dict[str, Path],
        parent: str,
        ceiling: CgroupLimits | None = None,
        bases: dict[str, str] | None = None,
    ):
        self.mounts = mounts  # controller -> hierarchy mount point
        self.parent = parent.strip("/")
        self.ceiling = ceiling
        # controller -> the cgroup `parent` is created under ("/": the hierarchy's top)
        self.bases = {c: (bases or {}).get(c, "/").strip("/") for c in mounts}

    def _parent_dirs(self) -> dict[str, Path]:
        return {c: m / self.bases[c] / self.parent for c, m in self.mounts.items()}

    def _ensure_parents(self) -> None:
        for ctrl, path in self._parent_dirs().items():
            path.mkdir(parents=True, exist_ok=True)
            if ctrl == "memory":
                # Children must be accounted in the parent too (default on modern kernels).
                with contextlib.suppress(OSError):
                    if (path / "memory.use_hierarchy").read_text().strip() != "1":
                        _write(path / "memory.use_hierarchy", "1")
        if self.ceiling is not None:
            dirs, c = self._parent_dirs(), self.ceiling
            files = [
                (dirs["memory"] / "memory.limit_in_bytes", str(c.memory_bytes)),
                (dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US)),
                (dirs["cpu"] / "cpu.cfs_quota_us", str(CFS_PERIOD_US * c.cpu_percent // 100)),
                (dirs["pids"] / "pids.max", str(c.pids)),
            ]
            if "blkio" in dirs:
                files += _v1_io_files(dirs["blkio"], c.io)
            _set_ceiling(files)

    def create(self, name: str, limits: CgroupLimits) -> V1Cgroup:
        self._ensure_parents()
        dirs = {c: p / name for c, p in self._parent_dirs().items()}
        for d in {*dirs.values()}:
            d.mkdir(exist_ok=True)
        mem = dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
        if (mem / "memory.memsw.limit_in_bytes").exists():
            # memory+swap = memory: the sandbox may not swap at all.
            _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            _write(mem / "memory.swappiness", "0")
        _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(dirs["cpu"] / "cpu.cfs_quota_us", str(CFS_PERIOD_US * limits.cpu_percent // 100))
        _write(dirs["pids"] / "pids.max", str(limits.pids))
        if "blkio" in dirs:
            for path, value in _v1_io_files(dirs["blkio"], limits.io):
                _write(path, value)
        _write(dirs["freezer"] / "freezer.state", "THAWED")
        return V1Cgroup(name, dirs)

    def open(self, name: str) -> V1Cgroup:
        return V1Cgroup(name, {c: p / name for c, p in self._parent_dirs().items()})

    def children(self) -> list[str]:
        names: set[str] = set()
        for path in self._parent_dirs().values():
            with contextlib.suppress(FileNotFoundError):
                names.update(p.name for p in path.iterdir() if p.is_dir())
        return sorted(names)

    def remove_parent(self) -> None:
        for name in self.children():
            self.open(name).remove()
        deadline = time.monotonic() + 5
        for path in self._parent_dirs().values():
            # Only our instance directory; the shared `dropserver` level stays for others.
            _rmdir_when_empty(path, deadline)


# --- cgroup v2: the unified hierarchy --------------------------------------------------------


def _leave_delegated_top(top: Path) -> None:
    """cgroup v2 lets a group hand controllers to its children only while it holds no process
    itself: the supervisor moves out of its delegated cgroup into a `supervisor` leaf, as
    systemd asks of delegated services."""
    procs = (top / "cgroup.procs").read_text().split()
    if not procs:
        return
    leaf = top / "supervisor"
    leaf.mkdir(exist_ok=True)
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            _write(leaf / "cgroup.procs", pid)


class V2Cgroup:
    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path

    def procs_files(self) -> list[str]:
        return [str(self.path / "cgroup.procs")]

    def procs(self) -> list[int]:
        try:
            return sorted(int(x) for x in (self.path / "cgroup.procs").read_text().split())
        except OSError:
            return []

    def freeze(self) -> None:
        _write(self.path / "cgroup.freeze", "1")
        deadline = time.monotonic() + 5
        while _read_keyed(self.path / "cgroup.events").get("frozen") != 1:
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name} did not freeze")
            time.sleep(0.002)

    def thaw(self) -> None:
        _write(self.path / "cgroup.freeze", "0")

    def set_cpu(self, percent: int) -> None:
        _write(self.path / "cpu.max", f"{CFS_PERIOD_US * percent // 100} {CFS_PERIOD_US}")

    def kill_once(self) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            _write(kill_file, "1")  # kernel >= 5.14: atomic, races no fork
        else:
            _kill_pids(self.procs())

    def kill_all(self) -> None:
        deadline = time.monotonic() + 5
        while pids := self.procs():
            self.kill_once()
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name}: tasks survive SIGKILL: {pids}")
            time.sleep(0.002)

    def usage(self) -> Usage:
        p = self.path
        usage = Usage(
            memory_bytes=_read_int(p / "memory.current"),
            memory_peak_bytes=_read_int(p / "memory.peak"),  # kernel >= 5.19
            cpu_usage_ns=_read_keyed(p / "cpu.stat").get("usage_usec", 0) * 1000,
            pids=_read_int(p / "pids.current"),
            oom_kills=_read_keyed(p / "memory.events").get("oom_kill", 0),
            pids_limit_hits=_read_keyed(p / "pids.events").get("max", 0),
        )
        io = p / "io.stat"
        if io.exists():
            read = write = 0
            for line in io.read_text().splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key == "rbytes":
                        read += int(value)
                    elif key == "wbytes":
                        write += int(value)
            usage.io_read_bytes, usage.io_write_bytes = read, write
        return usage

    def remove(self) -> None:
        self.kill_all()
        _rmdir_when_empty(self.path, time.monotonic() + 5)


class V2Backend:
    version = "v2"

    def __init__(
        self, root: Path, parent: str, ceiling: CgroupLimits | None = None, base: str = "/"
    ):
        self.root = root
        self.top = root / base.strip("/")  # the supervisor's delegated cgroup, or the root
        self.parent_path = self.top / parent.strip("/")
        self.ceiling = ceiling

    def _ensure_parents(self) -> set[str]:
        """Create each level down to the instance group, delegating controllers level by level."""
        available = set((self.top / "cgroup.controllers").read_text().split())
        wanted = [c for c in ("memory", "cpu", "pids", "io") if c in available]
        missing = [c for c in V2_REQUIRED if c not in available]
        if missing:
            raise CgroupError(f"cgroup v2 controllers missing at {self.top}: {missing}")
        if self.top != self.root:
            _leave_delegated_top(self.top)
        level = self.top
        for part in self.parent_path.relative_to(self.top).parts:
            enabled = set((level / "cgroup.subtree_control").read_text().split())
            for ctrl in wanted:
                if ctrl not in enabled:
                    _write(level / "cgroup.subtree_control", f"+{ctrl}")
            level = level / part
            level.mkdir(exist_ok=True)
        enabled = set((level / "cgroup.subtree_control").read_text().split())
        for ctrl in wanted:
            if ctrl not in enabled:
                _write(level / "cgroup.subtree_control", f"+{ctrl}")
        if self.ceiling is not None:
            c = self.ceiling
            quota = CFS_PERIOD_US * c.cpu_percent // 100
            _set_ceiling(
                [
                    (level / "memory.max", str(c.memory_bytes)),
                    (level / "cpu.max", f"{quota} {CFS_PERIOD_US}"),
                    (level / "pids.max", str(c.pids)),
                    *(_v2_io_files(level, c.io) if "io" in wanted else []),
                ]
            )
        return set(wanted)

    def create(self, name: str, limits: CgroupLimits) -> V2Cgroup:
        controllers = self._ensure_parents()
        path = self.parent_path / name
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limits.memory_bytes))
        if (path / "memory.swap.max").exists():
            _write(path / "memory.swap.max", "0")
        quota = CFS_PERIOD_US * limits.cpu_percent // 100
        _write(path / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        _write(path / "pids.max", str(limits.pids))
        if "io" in controllers:
            for file, value in _v2_io_files(path, limits.io):
                _write(file, value)
        if "memory" in controllers and (path / "memory.oom.group").exists():
            _write(path / "memory.oom.group", "1")  # an OOM takes the whole sandbox down
        return V2Cgroup(name, path)

    def open(self, name: str) -> V2Cgroup:
        return V2Cgroup(name, self.parent_path / name)

    def children(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in self.parent_path.iterdir() if p.is_dir())
        return []

    def remove_parent(self) -> None:
        for name in self.children():
            self.open(name).remove()
        _rmdir_when_empty(self.parent_path, time.monotonic() + 5)


# --- probing ---------------------------------------------------------------------------------


def _cgroup_mounts(mountinfo: str) -> tuple[dict[str, Path], list[Path]]:
    """(v1 controller -> mount point, v2 mount points) from /proc/self/mountinfo text."""
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mount_point, fstype, super_opts = Path(fields[4]), rfields[0], rfields[2].split(",")
        if fstype == "cgroup2":
            v2.append(mount_point)
        elif fstype == "cgroup":
            for opt in super_opts:
                if opt in V1_CONTROLLERS:
                    v1[opt] = mount_point
    return v1, v2


def probe(
    parent: str,
    mountinfo: str | None = None,
    ceiling: CgroupLimits | None = None,
    bases: dict[str, str] | None = None,
) -> CgroupBackend:
    """The backend this host supports, or CgroupError saying what is missing. `ceiling`: the
    limits of the instance group (all sandboxes together). `bases`: hierarchy ("" for v2, else
    a v1 controller) -> the cgroup to create `parent` under, for a delegated supervisor
    (`sandbox.walls.delegation.bases`); by default the top of each hierarchy.

    A v2 mount with the memory controller wins (pure v2 host). Hybrid hosts mount an empty v2
    hierarchy next to the v1 controllers; there the v1 controllers are what limits anything.
    """
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    v1, v2 = _cgroup_mounts(mountinfo)
    for root in v2:
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            if not os.access(root / "cgroup.subtree_control", os.W_OK):
                raise CgroupError(
                    f"cgroup v2 at {root} is not writable: run the supervisor as root"
                )
            return V2Backend(root, parent, ceiling, (bases or {}).get("", "/"))
    missing = [c for c in V1_REQUIRED if c not in v1]
    if not missing:
        if not all(os.access(v1[c], os.W_OK) for c in V1_REQUIRED):
            raise CgroupError("cgroup v1 hierarchies are not writable: run the supervisor as root")
        mounts = {c: v1[c] for c in V1_CONTROLLERS if c in v1}
        return V1Backend(mounts, parent, ceiling, bases)
    raise CgroupError(
        "No usable cgroups: need cgroup v2 with the memory, cpu and pids controllers, or cgroup v1 "
        f"with {', '.join(V1_REQUIRED)} (missing: {', '.join(missing)}). Boot with cgroups "
        "enabled (systemd does by default) and run the supervisor as root."
    )


class NullCgroup:
    """UNSAFE development mode without cgroups: no limits; the process group stands in."""

    def __init__(self, name: str):
        self.name = name
        self.pid: int | None = None

    def attach(self, pid: int) -> None:
        self.pid = pid

    def procs_files(self) -> list[str]:
        return []

    def procs(self) -> list[int]:
        if self.pid is None:
            return []
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [self.pid]

    def freeze(self) -> None:
        raise CgroupError("no cgroups on this host: cannot freeze")

    def thaw(self) -> None:
        raise CgroupError("no cgroups on this host: cannot thaw")

    def set_cpu(self, percent: int) -> None:
        pass

    def kill_once(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        self.kill_once()

    def usage(self) -> Usage:
        return Usage()

    def remove(self) -> None:
        self.kill_once()
