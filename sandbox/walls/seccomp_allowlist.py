"""The one reviewed list of what a sandbox may ask the kernel: every syscall sandboxed Deno (and
bubblewrap's pid-1 reaper, which runs under the same filter) uses, each group saying why, plus
the argument rules that are cheap to check. Anything not listed is refused with ENOSYS, so a
library probing for a newer call falls back as it would on an older kernel.

Derived from traces, not guessed: `python -m sandbox.walls.seccomp_trace` runs every app feature
(install, app-init, migrations, HTTP, WebSockets, files, SQLite, Workers, WebAssembly, timers,
crypto, compression, fetch / connect / DNS to an allowlisted host, refused permissions) of a
feature tour, the example apps and the gateway test app under `strace -f`, and prints every
syscall made under the filter that this file lacks. Re-run it when Deno, glibc or bubblewrap
change (a new Deno release is the usual reason for a missing syscall), review what it prints,
and add the call here with its reason. `sandbox/walls/seccomp.py` compiles this file; nothing else
decides what the filter allows.

Kept off the list on purpose (a V8 escape would want them, Deno does not use them): ptrace and
other processes' memory, io_uring, eBPF, perf, userfaultfd, keyrings, namespaces (unshare,
setns, clone with a namespace flag, clone3 whose flags seccomp cannot read), mounts, modules,
kexec, file handles, host administration. Those answer EPERM (`REFUSED`) rather than ENOSYS:
same refusal, but a clearer one in a trace. Another architecture's syscall table (i386
`int 0x80`, x32) kills the process (set in `sandbox/walls/seccomp.py`).
"""

from __future__ import annotations

import errno

# --- Unconditionally allowed, by what Deno uses them for --------------------------------------
ALLOWED: dict[str, tuple[str, ...]] = {
    "process start: execve of Deno by bubblewrap, the dynamic loader, glibc and Rust std setup": (
        "execve",
        "brk",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "getrandom",
        "sched_getaffinity",
        "uname",
    ),
    "memory: V8's heap and JIT (executable pages), allocators, thread stacks, guard pages": (
        "mmap",
        "munmap",
        "mprotect",
        "mremap",
        "madvise",
    ),
    "memory protection keys: V8 write-protects JIT code with them where the CPU has PKU": (
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
    ),
    "threads and their synchronisation: tokio, V8's platform and GC threads, Workers": (
        "futex",
        "sched_yield",
        "gettid",
        "getpid",
        "getppid",
        "tgkill",
        "exit",
        "exit_group",
        "nanosleep",
        "clock_nanosleep",
    ),
    "time: timers, Date, performance.now": ("clock_gettime", "clock_getres", "gettimeofday"),
    "signals: Deno's SIGTERM/SIGINT handling, V8's stack guard, glibc thread cancellation": (
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "sigaltstack",
        "kill",
    ),
    "bubblewrap's pid-1 reaper in the sandbox (filtered too): waits for Deno and exits with it": (
        "wait4",
    ),
    "the event loop: epoll, eventfd wake-ups, pipes to Workers' threads": (
        "epoll_create1",
        "epoll_ctl",
        "epoll_wait",
        "eventfd2",
        "pipe2",
        "poll",
    ),
    "files (the data dir, the app, Deno's caches; mounts and Deno permissions bound the paths)": (
        "openat",
        "open",
        "close",
        "read",
        "write",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "lseek",
        "newfstatat",
        "fstat",
        "stat",
        "lstat",
        "statx",
        "statfs",
        "fstatfs",
        "access",
        "faccessat2",
        "readlink",
        "readlinkat",
        "getdents64",
        "getcwd",
        "chdir",
        "fcntl",
        "dup",
        "dup3",
        "flock",
        "fsync",
        "fdatasync",
        "ftruncate",
        "fallocate",
        "mkdirat",
        "mkdir",
        "unlinkat",
        "unlink",
        "rmdir",
        "renameat2",
        "rename",
        "fchmod",
        "chmod",
        "fchmodat",
        "utimensat",
        "copy_file_range",
        "sendfile",
        "umask",
    ),
    "Deno.watchFs": ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"),
    "sockets: the app's unix socket, outbound connections, DNS (families limited below)": (
        "bind",
        "listen",
        "accept4",
        "connect",
        "getsockname",
        "getpeername",
        "setsockopt",
        "getsockopt",
        "shutdown",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "sendmmsg",
    ),
    "identity reads (glibc, Deno's permission checks); never a change": (
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getrusage",
        "sysinfo",
        "sched_getparam",
        "sched_getscheduler",
    ),
}

# --- Allowed only with some arguments ---------------------------------------------------------
AF_UNSPEC, AF_UNIX, AF_INET = 0, 1, 2
# socket/socketpair: AF_UNIX and AF_INET only; anything else gets EAFNOSUPPORT. No IPv6 on
# purpose (docs/sandbox.md, "Deny-net list, IPv6 and DNS"); no netlink, packet, vsock...
SOCKET_FAMILIES = (AF_UNIX, AF_INET)
SOCKET_CALLS = ("socket", "socketpair")

# clone: threads and (for Deno's own use) fork-style children, never a new namespace. clone3
# passes its flags in memory where seccomp cannot read them: ENOSYS, glibc falls back to clone.
# CLONE_NEWTIME (0x80) is absent on purpose: in clone() that bit is part of the exit signal;
# only unshare() and clone3() accept it, and both are refused whole.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# ioctl: only these requests (arg 1); any other gets the default answer (ENOSYS).
IOCTLS = {
    "FIONBIO": 0x5421,  # non-blocking sockets (tokio, std)
    "FIOCLEX": 0x5451,  # close-on-exec
    "FIONCLEX": 0x5450,
    "TCGETS": 0x5401,  # isatty() on stdout/stderr (Deno's console)
    "TIOCGWINSZ": 0x5413,  # terminal size (console.table and friends)
    "FIONREAD": 0x541B,  # bytes waiting on a socket
}

# prctl: only these options (arg 0); any other gets the default answer (ENOSYS).
PRCTLS = {
    "PR_SET_NAME": 15,  # thread names (tokio-runtime-worker, V8 DefaultWorker...)
    "PR_GET_NAME": 16,
    "PR_SET_VMA": 0x53564D41,  # names of anonymous mappings (V8, glibc)
}

# personality: the default persona only (Deno queries it); READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE,
# PER_LINUX32... are refused with EPERM.
PERSONALITY_DEFAULT = 0

# --- Refused with EPERM, grouped by why (everything unlisted gets ENOSYS) ---------------------
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
# Refused with ENOSYS by name (the default answer, listed for the reader and the tests).
UNIMPLEMENTED = (
    # clone3 passes its flags in memory, out of seccomp's sight; glibc falls back to clone.
    "clone3",
    # Links: Deno tries one at start (a `node` symlink in its cache for child processes,
    # which no app may start) and carries on without it; apps cannot make links under
    # path-scoped grants. Refused so that not even a V8 escape can plant a link in /data
    # for a host process to follow.
    "symlink",
    "symlinkat",
    "link",
    "linkat",
)

DEFAULT_ERRNO = errno.ENOSYS
ARGUMENT_FILTERED = ("socket", "socketpair", "clone", "ioctl", "prctl", "personality")


def allowed_syscalls() -> list[str]:
    """Every syscall the filter lets through for at least some arguments."""
    return [name for names in ALLOWED.values() for name in names] + list(ARGUMENT_FILTERED)


def refused_syscalls() -> list[str]:
    """Every syscall refused by name whatever its arguments (EPERM, or ENOSYS for clone3)."""
    return [name for names in REFUSED.values() for name in names] + list(UNIMPLEMENTED)
