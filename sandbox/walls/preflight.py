"""Refuse to be unsafe: checks that this host can build real sandboxes, and says what is missing.

Without bubblewrap, usable cgroups, root or libseccomp (the filter is compiled here, once per
supervisor start), sandboxes do not start; `ensure`/`run_once` fail with these messages.
DS_SANDBOX_UNSAFE_DEV=1 lets a developer run apps anyway with whatever layers exist, and every
start says so loudly in the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from sandbox import layout
from sandbox.walls import cgroups, delegation, launcher, seccomp

log = logging.getLogger("sandbox")


@dataclass
class HostCheck:
    bwrap: bool
    cgroup_backend: cgroups.CgroupBackend | None
    root: bool
    deno: str | None
    problems: list[str] = field(default_factory=list)
    unsafe_dev: bool = False
    seccomp_filter: seccomp.Filter | None = None  # compiled once, loaded by every bubblewrap

    @property
    def safe(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        """Sandboxes may start: everything is there, or the developer opted out of safety."""
        return self.deno is not None and (self.safe or self.unsafe_dev)

    def message(self) -> str:
        return "Sandboxes cannot start safely on this host: " + "; ".join(self.problems)


def check_host() -> HostCheck:
    problems: list[str] = []
    if bwrap_problem := missing_bwrap():
        problems.append(bwrap_problem)
    seccomp_filter: seccomp.Filter | None = None
    try:
        seccomp_filter = seccomp.build()
    except seccomp.SeccompUnavailable as exc:
        problems.append(str(exc))
    warn_ipv6_only_resolver()
    root = os.geteuid() == 0
    if not root:
        problems.append(
            "the supervisor is not running as root: it needs root to give each sandbox its own "
            "uid and cgroups (run `manage.py sandboxd` / `manage.py serve` as root)"
        )
    backend: cgroups.CgroupBackend | None = None
    try:
        backend = cgroup_backend()
    except (cgroups.CgroupError, OSError) as exc:
        problems.append(str(exc))
    deno, deno_problem = find_deno()
    if deno_problem:
        problems.append(deno_problem)
    return HostCheck(
        bwrap=bwrap_problem is None,
        cgroup_backend=backend,
        root=root,
        deno=deno,
        problems=problems,
        unsafe_dev=settings.DS_SANDBOX_UNSAFE_DEV,
        seccomp_filter=seccomp_filter,
    )


def missing_bwrap() -> str | None:
    bwrap = Path(settings.DS_SANDBOX_BWRAP)
    if bwrap.is_file() and os.access(bwrap, os.X_OK):
        return None
    return (
        f"bubblewrap not found at {bwrap}: install it (apt-get install -y bubblewrap) "
        "or set DS_SANDBOX_BWRAP"
    )


def find_deno() -> tuple[str | None, str | None]:
    """(the Deno binary sandboxes run, None) or (None, what is wrong)."""
    try:
        candidate = launcher.deno_path()
    except Exception as exc:  # the `deno` package missing or broken
        return None, f"Deno not found ({exc}): pip install -r requirements/base.txt"
    if Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return candidate, None
    return None, f"Deno at {candidate} is missing or not executable"


def cgroup_backend() -> cgroups.CgroupBackend:
    """The cgroups sandboxes of this instance get: the instance group at the top of each
    hierarchy, or below the supervisor's own cgroup when it is delegated to it (systemd)."""
    parent = f"{settings.DS_SANDBOX_CGROUP_PARENT.strip('/')}/{layout.instance_name()}"
    bases = delegation.bases() if settings.DS_SANDBOX_CGROUP_DELEGATED else None
    backend = cgroups.probe(parent, ceiling=instance_ceiling(), bases=bases)
    if bases is not None:
        own = bases.get("memory", bases.get(""))
        log.info("sandbox cgroups go below the supervisor's delegated cgroup %s", own)
    return backend


def warn_ipv6_only_resolver(resolv_conf: Path = Path("/etc/resolv.conf")) -> bool:
    """Sandboxes have no IPv6 (seccomp refuses AF_INET6 sockets), so a host whose resolvers
    are all IPv6 leaves apps with an allowlist unable to resolve names: say so at start."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return False
    servers = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    if servers and all(":" in server for server in servers):
        log.warning(
            "%s lists only IPv6 nameservers (%s): sandboxes have no IPv6, so apps with an "
            "allowlist cannot resolve names; add an IPv4 nameserver",
            resolv_conf,
            ", ".join(servers),
        )
        return True
    return False


def warn_unsafe(check: HostCheck, sandbox_id: str) -> None:
    """Logged on every start in the opt-out mode, so nobody runs it by accident for long."""
    log.warning(
        "UNSAFE DEVELOPMENT MODE (DS_SANDBOX_UNSAFE_DEV=1): starting sandbox %s without full "
        "isolation (%s). Never use this with apps you do not trust.",
        sandbox_id,
        "; ".join(check.problems) or "all layers present",
    )


def instance_ceiling() -> cgroups.CgroupLimits:
    """What all sandboxes together may use (DS_SANDBOXES_*): by default the host's memory
    minus DS_SANDBOXES_RESERVE_MB, its CPUs minus half a core, and DS_SANDBOXES_PIDS."""
    memory_mb = settings.DS_SANDBOXES_MEMORY_MB
    if memory_mb <= 0:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        memory_mb = max(total_mb - settings.DS_SANDBOXES_RESERVE_MB, 256)
    cpu_percent = settings.DS_SANDBOXES_CPU_PERCENT
    if cpu_percent <= 0:
        cpu_percent = max(len(os.sched_getaffinity(0)) * 100 - 50, 50)
    return cgroups.CgroupLimits(
        memory_bytes=memory_mb * 1024 * 1024,
        cpu_percent=cpu_percent,
        pids=settings.DS_SANDBOXES_PIDS,
        io=_ceiling_io(),
    )


def _ceiling_io() -> tuple[cgroups.IoLimit, ...]:
    """DS_SANDBOXES_IO_* on the block device under DS_DATA_DIR (none set, or no block device
    there: no IO ceiling)."""
    s, mb = settings, 1024 * 1024
    values = (
        s.DS_SANDBOXES_IO_READ_MBPS * mb,
        s.DS_SANDBOXES_IO_WRITE_MBPS * mb,
        s.DS_SANDBOXES_IO_READ_IOPS,
        s.DS_SANDBOXES_IO_WRITE_IOPS,
    )
    if not any(values):
        return ()
    try:
        device = cgroups.throttle_device(layout.data_dir())
    except OSError:
        device = None
    if device is None:
        log.warning("no block device under %s: no IO ceiling for the sandboxes", layout.data_dir())
        return ()
    return (cgroups.IoLimit(device, *values),)
