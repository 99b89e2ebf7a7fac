"""Child-process hygiene shared by the commands that start other processes."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn asking the kernel to send `sig` to the child when this process dies.

    Runs between fork and exec. If we died before the prctl took effect, the child has
    already been re-parented, so it exits instead of running as an orphan.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)

    return preexec
