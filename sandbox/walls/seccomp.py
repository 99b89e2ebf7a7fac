"""The seccomp filter of every sandbox, compiled from the allowlist in `seccomp_allowlist.py`.

Built once per supervisor start with libseccomp (Debian's libseccomp2, through the `pyseccomp`
ctypes binding) and handed to bubblewrap as `--seccomp FD`; bubblewrap loads it right before it
execs Deno (and in its pid-1 reaper), after its own mount and namespace work, so the rules bind
Deno and everything it starts.

What the filter allows, and why, lives in `sandbox/walls/seccomp_allowlist.py` (one reviewed file,
derived from `python -m sandbox.walls.seccomp_trace`); this module only compiles it:
- every listed syscall: allowed;
- `socket`/`socketpair`: AF_UNIX and AF_INET only, else EAFNOSUPPORT (glibc and tokio fall back
  to IPv4; see docs/sandbox.md on IPv6);
- `clone`: allowed without namespace flags, EPERM with one; `clone3`: ENOSYS (glibc falls back
  to `clone`, whose flags a filter can read);
- `ioctl`: the listed requests; `prctl`: the listed options (other values: ENOSYS);
  `personality`: the default persona (query) only, else EPERM;
- the `REFUSED` groups: EPERM; everything else: ENOSYS, so callers fall back cleanly.
Foreign architectures (i386 through `int 0x80`, x32 on x86_64) kill the process: a filter that
knows only native syscall numbers must never be asked about another table.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from sandbox.walls import seccomp_allowlist as policy

AF_UNSPEC, AF_UNIX, AF_INET = policy.AF_UNSPEC, policy.AF_UNIX, policy.AF_INET
CLONE_NAMESPACE_FLAGS = policy.CLONE_NAMESPACE_FLAGS
REFUSED = policy.REFUSED
UNIMPLEMENTED = policy.UNIMPLEMENTED

# Set only by `python -m sandbox.walls.seccomp_trace` in its own supervisor process (never a
# setting): unlisted syscalls are then allowed, so a trace sees what Deno would do unfiltered.
TRACE_PERMISSIVE = False


class SeccompUnavailable(RuntimeError):
    """libseccomp or its binding is missing; the message says what to install."""


@dataclass(frozen=True)
class Filter:
    """The compiled program (an array of `struct sock_filter`) and the rules it came from."""

    bpf: bytes
    arch: int  # the AUDIT_ARCH_* value every other architecture is killed for

    def open_fd(self) -> int:
        """A fresh readable fd holding the program, for one bubblewrap (it reads to EOF).
        The caller closes it once bubblewrap has started (`prepare.close_fds`)."""
        fd = os.memfd_create("ds-seccomp", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.bpf)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        return fd


def build() -> Filter:
    """Compiles the filter for this host's native architecture (raises SeccompUnavailable)."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as exc:
        raise SeccompUnavailable(
            f"libseccomp is not usable ({exc}): apt-get install -y libseccomp2 and "
            "pip install -r requirements/base.txt"
        ) from None
    default = sc.ALLOW if TRACE_PERMISSIVE else sc.ERRNO(policy.DEFAULT_ERRNO)
    flt = sc.SyscallFilter(default)
    try:
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        # A binary search over syscall numbers instead of a chain of ~120 compares: every
        # syscall of every sandbox runs this program.
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
        _add_rules(sc, _SkipDefault(flt, default))
        arch = sc.system_arch()
        fd = os.memfd_create("ds-seccomp-build", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "wb") as sink:
                flt.export_bpf(sink)
            os.lseek(fd, 0, os.SEEK_SET)
            program = b""
            while chunk := os.read(fd, 65536):
                program += chunk
        finally:
            os.close(fd)
    except OSError as exc:
        raise SeccompUnavailable(f"cannot compile the seccomp filter: {exc}") from None
    if not program or len(program) % 8:
        raise SeccompUnavailable("libseccomp exported an empty or malformed program")
    return Filter(bpf=program, arch=arch)


class _SkipDefault:
    """libseccomp refuses (EACCES) a rule whose action is the default one; such a rule changes
    nothing (clone3 is ENOSYS either way; every allow rule while tracing), so it is skipped."""

    def __init__(self, flt, default: int):
        self.flt, self.default = flt, default

    def add_rule(self, action: int, name: str, *args) -> None:
        if action != self.default:
            self.flt.add_rule(action, name, *args)


def _add_rules(sc, flt) -> None:
    """Every rule of the allowlist. Rules with different actions on one syscall never overlap
    (which would leave the answer to libseccomp's ordering); the clone EPERM rules overlap
    each other, with one action."""
    allow, eperm = sc.ALLOW, sc.ERRNO(errno.EPERM)
    for names in policy.ALLOWED.values():
        for name in names:
            flt.add_rule(allow, name)
    for names in policy.REFUSED.values():
        for name in names:
            flt.add_rule(eperm, name)
    for name in policy.UNIMPLEMENTED:
        flt.add_rule(sc.ERRNO(errno.ENOSYS), name)
    # The family is an int compared on 64 bits: anything the kernel would not read as a listed
    # family (upper bits set compare as greater) is refused, never let through.
    no_family = sc.ERRNO(errno.EAFNOSUPPORT)
    families = sorted(policy.SOCKET_FAMILIES)
    for name in policy.SOCKET_CALLS:
        for family in families:
            flt.add_rule(allow, name, sc.Arg(0, sc.EQ, family))
        flt.add_rule(no_family, name, sc.Arg(0, sc.GT, families[-1]))
        for family in range(families[-1]):
            if family not in families:
                flt.add_rule(no_family, name, sc.Arg(0, sc.EQ, family))
    namespaces = 0
    for flag in policy.CLONE_NAMESPACE_FLAGS.values():
        namespaces |= flag
        flt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(allow, "clone", sc.Arg(0, sc.MASKED_EQ, namespaces, 0))
    # ioctl and prctl: the listed requests / options, compared on all 64 bits (a value with
    # upper bits set is refused even if the kernel would read its low 32: refusing more is
    # safe). libseccomp cannot say "not in" on one argument, so every other value gets the
    # default answer, ENOSYS, which callers treat as "not supported here".
    for request in policy.IOCTLS.values():
        flt.add_rule(allow, "ioctl", sc.Arg(1, sc.EQ, request))
    for option in policy.PRCTLS.values():
        flt.add_rule(allow, "prctl", sc.Arg(0, sc.EQ, option))
    # Only the default persona; the kernel reads an unsigned int, so a value with upper bits
    # set and zero below is refused too (harmless: nothing sets upper bits).
    flt.add_rule(allow, "personality", sc.Arg(0, sc.EQ, policy.PERSONALITY_DEFAULT))
    flt.add_rule(eperm, "personality", sc.Arg(0, sc.NE, policy.PERSONALITY_DEFAULT))


def allowed_syscalls() -> list[str]:
    """Every syscall allowed for at least some arguments."""
    return policy.allowed_syscalls()


def refused_syscalls() -> list[str]:
    """Every syscall refused whatever its arguments (EPERM or ENOSYS)."""
    return policy.refused_syscalls()
