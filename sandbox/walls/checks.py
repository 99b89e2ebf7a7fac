"""The sandbox preflight in `manage.py check --deploy`: can this host build real sandboxes?

The supervisor runs the same checks at start (`sandbox.walls.preflight`) and refuses sandboxes
when one fails; here they run before anything starts, each with its own id, and go further
where the supervisor only looks: bubblewrap is started, a trial cgroup is created and removed,
Deno's version is read.

S001 bubblewrap missing. S002 bubblewrap present but cannot build a sandbox (user namespaces
off or restricted, e.g. by AppArmor). S003 no usable cgroups (or, with
DS_SANDBOX_CGROUP_DELEGATED, not in a delegated one). S004 the sandbox uid range is not free
(host users or groups, or subordinate ids for rootless containers, inside it). S005 Deno
missing. S006 Deno is not the pinned version. S007 libseccomp missing. S008 (a warning): not
run as root, so what needs root (cgroups) was not checked.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.metadata
import os
import pwd
import re
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from sandbox.walls import cgroups, preflight, seccomp

# Appspace sandboxes run as DS_SANDBOX_UID_BASE + appspace id, install jobs as
# base + 2**24 + n (appspaces/sandboxes.py): every uid in [base, base + 2**25) may be used.
SANDBOX_UID_SPAN = 2**25
PROBE_TIMEOUT = 20


def _error(id_: str, msg: str, hint: str | None = None) -> Error:
    return Error(msg, hint=hint, id=f"dropserver.{id_}")


def bwrap_problem() -> str | None:
    """Start bubblewrap as a sandbox uid does (unprivileged, new user/pid/net namespaces), or
    as this user when not root; None when it runs."""
    argv = [settings.DS_SANDBOX_BWRAP, "--unshare-all", "--die-with-parent"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
    if os.geteuid() == 0:
        uid = str(settings.DS_SANDBOX_UID_BASE)  # base + 0: no appspace has id 0
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
        argv = [*drop, *argv]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be started: {exc}"
    if result.returncode == 0:
        return None
    said = (result.stderr or result.stdout).strip().splitlines()
    return (
        f"bubblewrap ({settings.DS_SANDBOX_BWRAP}) cannot build a sandbox here: exit status "
        f"{result.returncode}{': ' + said[-1] if said else ''}"
    )


def cgroup_problem() -> str | None:
    """Create and remove a trial group where the supervisor would put sandboxes."""
    try:
        backend = preflight.cgroup_backend()
        trial = backend.create(f"check-{os.getpid()}", cgroups.CgroupLimits(64 * 2**20, 10, 8))
        trial.remove()
    except (cgroups.CgroupError, OSError) as exc:
        return str(exc)
    if not backend.children():  # no supervisor here: leave nothing behind
        with contextlib.suppress(cgroups.CgroupError, OSError):
            backend.remove_parent()
    return None


def _overlaps(start: int, count: int, base: int) -> bool:
    return start < base + SANDBOX_UID_SPAN and base < start + count


def _subordinate(path: Path, base: int) -> list[str]:
    found = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        valid = len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()
        if valid and _overlaps(int(parts[1]), int(parts[2]), base):
            found.append(f"{path}: {line.strip()}")
    return found


def uid_range_problem(
    subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid")
) -> str | None:
    """Sandbox uids must belong to nobody else: a host user with one of them could read that
    appspace's data, and so could whoever has it as a subordinate id (rootless containers)."""
    base = settings.DS_SANDBOX_UID_BASE
    taken = [
        f"user {u.pw_name} ({u.pw_uid})" for u in pwd.getpwall() if _overlaps(u.pw_uid, 1, base)
    ]
    taken += [
        f"group {g.gr_name} ({g.gr_gid})" for g in grp.getgrall() if _overlaps(g.gr_gid, 1, base)
    ]
    taken += _subordinate(subuid, base) + _subordinate(subgid, base)
    if not taken:
        return None
    shown = ", ".join(taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
    return (
        f"the sandbox uid range {base}-{base + SANDBOX_UID_SPAN - 1} (DS_SANDBOX_UID_BASE) is "
        f"not free: {shown}"
    )


def pinned_deno_version() -> str | None:
    """The Deno this checkout pins (requirements/base.txt), else the installed package's."""
    with_pin = Path(settings.BASE_DIR) / "requirements" / "base.txt"
    try:
        if match := re.search(r"^deno==([\w.]+)", with_pin.read_text(), re.MULTILINE):
            return match.group(1)
    except OSError:
        pass
    try:
        return importlib.metadata.version("deno")
    except importlib.metadata.PackageNotFoundError:
        return None


def deno_version_problem(deno: str) -> str | None:
    try:
        out = subprocess.run(
            [deno, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Deno at {deno} does not run: {exc}"
    match = re.match(r"deno (\S+)", out)
    found = match.group(1) if match else "unknown"
    wanted = pinned_deno_version()
    if wanted is None or found == wanted:
        return None
    return (
        f"Deno at {deno} is {found}, not the pinned {wanted}: the sandbox's permission flags "
        "are tested against that version only"
    )


@register(Tags.security, deploy=True)
def check_sandbox_host(app_configs=None, **kwargs) -> list[Error | Warning]:
    found: list[Error | Warning] = []
    if missing := preflight.missing_bwrap():
        found.append(_error("S001", missing))
    elif problem := bwrap_problem():
        found.append(
            _error(
                "S002",
                problem,
                hint="Sandboxes need unprivileged user namespaces (sysctl "
                "kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ also an AppArmor profile "
                "allowing them for bwrap, or kernel.apparmor_restrict_unprivileged_userns=0).",
            )
        )
    if os.geteuid() == 0:
        if problem := cgroup_problem():
            found.append(_error("S003", f"cgroups: {problem}"))
    else:
        found.append(
            Warning(
                "Not run as root: whether the supervisor can create cgroups was not checked.",
                hint="Run it as root: sudo dropserver-manage check --deploy",
                id="dropserver.S008",
            )
        )
    if problem := uid_range_problem():
        found.append(
            _error(
                "S004",
                problem,
                hint="Set DS_SANDBOX_UID_BASE to a range nothing else uses (before the first "
                "appspace: existing data is owned by the old uids).",
            )
        )
    deno, problem = preflight.find_deno()
    if deno is None:
        found.append(_error("S005", problem or "Deno not found"))
    elif problem := deno_version_problem(deno):
        found.append(
            _error(
                "S006",
                problem,
                hint="pip install --require-hashes -r requirements/base.lock, and leave "
                "DS_SANDBOX_DENO unset",
            )
        )
    try:
        seccomp.build()
    except seccomp.SeccompUnavailable as exc:
        found.append(_error("S007", str(exc)))
    return found
