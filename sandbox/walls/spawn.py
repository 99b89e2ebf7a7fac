"""Starts a sandbox process: joins its cgroups, drops to its uid, then execs bubblewrap.

Everything privileged happens here, in the child between fork and exec, in this order:
1. join the sandbox's cgroups (needs root, and must precede any app code);
2. drop supplementary groups, gid and uid to the sandbox's (bubblewrap then runs *as* that uid;
   started as root with --uid, the sandbox user would map back to real root);
3. no_new_privs, so nothing exec'd later can regain privileges;
4. PR_SET_PDEATHSIG last: the kernel clears it on credential changes, so set it after them.
The preexec function only calls os.* and prctl: it runs in a forked child of the supervisor.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # resolved here, not in the forked child


def sandbox_preexec(
    *, uid: int | None, cgroup_procs: list[str], umask: int = 0o077
) -> Callable[[], None]:
    """`uid` None keeps the current user (the unsafe development mode when not root)."""
    supervisor = os.getpid()

    def preexec() -> None:
        pid = str(os.getpid()).encode()
        for path in cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if os.getuid() != uid or os.geteuid() != uid:
                os._exit(126)
        os.umask(umask)
        if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != supervisor:
            os._exit(1)  # the supervisor died before the death signal was armed

    return preexec


def start(
    argv: list[str],
    *,
    uid: int | None,
    cgroup_procs: list[str],
    env: dict[str, str] | None = None,
    umask: int = 0o077,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen:
    """The sandbox's outermost process (bubblewrap) with stdout/stderr piped to the supervisor."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or {},
        cwd="/",
        close_fds=True,
        pass_fds=pass_fds,
        start_new_session=True,
        preexec_fn=sandbox_preexec(uid=uid, cgroup_procs=cgroup_procs, umask=umask),
    )
