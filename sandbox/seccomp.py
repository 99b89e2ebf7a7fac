"""The seccomp filter of every sandbox: syscalls and socket families no app needs, refused.

Built once per supervisor start with libseccomp (Debian's libseccomp2, through the `pyseccomp`
ctypes binding) and handed to bubblewrap as `--seccomp FD`; bubblewrap loads it right before it
execs Deno, after its own mount and namespace work, so the rules bind Deno and nothing it starts.

Why each rule (Deno never needs any of these; a V8 escape would want most of them):
- `socket`/`socketpair` take AF_UNIX and AF_INET only. AF_INET6 gets EAFNOSUPPORT, so glibc and
  tokio fall back to IPv4: Deno 2.9.8 cannot deny IPv6 ranges in `--deny-net`, and an
  allowlisted name resolving to another host's ULA or link-local address would be reachable.
  IPv4 stays fully covered by `--deny-net` (checked on resolved addresses). AF_NETLINK,
  AF_PACKET, AF_VSOCK... are kernel attack surface with no use in an app.
- `clone3` gets ENOSYS so glibc falls back to `clone`, whose flags a filter can read (clone3
  passes them in memory); `clone` with a namespace flag, `unshare` and `setns` get EPERM.
- the rest is the usual container-runtime deny list: io_uring (submits I/O the filter never
  sees), eBPF, perf, userfaultfd, keyrings, other processes' memory, modules and kexec,
  mounts, host administration, file handles (they bypass path checks), chroot, personality
  other than the default (PER_LINUX) one.
Foreign architectures (i386 through `int 0x80`, x32 on x86_64) kill the process: a filter that
knows only native syscall numbers must never be asked about another table.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

AF_UNSPEC = 0
AF_UNIX = 1
AF_INET = 2

# Namespace flags of clone(). CLONE_NEWTIME (0x80) is absent on purpose: in clone() that bit is
# part of the exit signal; only unshare() and clone3() accept it, and both are refused whole.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# Refused outright with EPERM, grouped by why.
REFUSED: dict[str, tuple[str, ...]] = {
    "io_uring: I/O submitted through it is never seen by seccomp": (
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ),
    "kernel attack surface": ("bpf", "perf_event_open", "userfaultfd"),
    "kernel keyrings": ("keyctl", "add_key", "request_key"),
    "other processes' memory and files": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "pidfd_getfd",
        "kcmp",
    ),
    "kernel code": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
    ),
    "mounts": (
        "mount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsmount",
        "fspick",
        "mount_setattr",
        "chroot",
    ),
    "namespaces": ("unshare", "setns"),
    "host administration": (
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "syslog",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "clock_settime",
        "iopl",
        "ioperm",
        "vhangup",
        "lookup_dcookie",
        "uselib",
        "_sysctl",
        "sysfs",
        "ustat",
        "fanotify_init",
    ),
    "file handles: they open files by inode, past every path check": (
        "open_by_handle_at",
        "name_to_handle_at",
    ),
}
# Refused with ENOSYS, so that callers fall back (glibc's pthread_create -> clone).
UNIMPLEMENTED = ("clone3",)


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
    flt = sc.SyscallFilter(sc.ALLOW)
    try:
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        eperm = sc.ERRNO(errno.EPERM)
        for names in REFUSED.values():
            for name in names:
                flt.add_rule(eperm, name)
        for name in UNIMPLEMENTED:
            flt.add_rule(sc.ERRNO(errno.ENOSYS), name)
        # The family is an int: a 64-bit compare refuses anything the kernel would not read as
        # 1 or 2 (upper bits set compare as greater, so they are refused, never let through).
        no_family = sc.ERRNO(errno.EAFNOSUPPORT)
        for name in ("socket", "socketpair"):
            flt.add_rule(no_family, name, sc.Arg(0, sc.GT, AF_INET))
            flt.add_rule(no_family, name, sc.Arg(0, sc.EQ, AF_UNSPEC))
        for flag in CLONE_NAMESPACE_FLAGS.values():
            flt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        # Only the default persona; the kernel reads an unsigned int, so a value with upper
        # bits set and zero below is refused too (harmless: nothing sets upper bits).
        flt.add_rule(eperm, "personality", sc.Arg(0, sc.NE, 0))
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


def refused_syscalls() -> list[str]:
    """Every syscall refused whatever its arguments (EPERM or ENOSYS)."""
    return [name for names in REFUSED.values() for name in names] + list(UNIMPLEMENTED)
