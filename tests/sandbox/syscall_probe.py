"""A test-only program run in the sandbox's exact bubblewrap layout and seccomp filter: it makes
raw syscalls and reports their errno, so the filter is checked in the kernel, from the host.

The program is the sandbox's own Deno with `--allow-ffi` (test-only: no app ever gets FFI)
calling libc's `syscall()`; its argv is the production `launcher.bwrap_argv` with only the
command after `--` replaced, started by the production `spawn.start` (uid drop, no_new_privs).
Exit status: 0 when every call returned what was expected, 1 otherwise (stdout says which);
a call that the filter must answer by killing the process ends in SIGSYS instead.
"""

from __future__ import annotations

import errno
import json
import subprocess
from dataclasses import dataclass

import pyseccomp

from sandbox.walls import launcher, prepare, spawn
from sandbox.walls.seccomp import Filter
from tests.sandbox.fixtures import AppVersion, lay_out_app, unique_uid

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK = 1, 2, 10, 16, 17, 40
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIGCHLD = 17

PROBE_JS = r"""
const [libcPath, mode, spec] = Deno.args;
const { nr, checks } = JSON.parse(spec);
const libc = Deno.dlopen(libcPath, {
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
});
const errno = () => new Deno.UnsafePointerView(libc.symbols.__errno_location()).getInt32();
function sys(number, ...args) {
  const all = [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map((a) => BigInt(a));
  const result = libc.symbols.syscall(BigInt(number), ...all);
  return result < 0n ? -errno() : Number(result);
}
if (mode === "checks") {
  const report = [];
  for (const [name, call, args, expect] of checks) {
    const got = sys(nr[call], ...args);
    const ok = expect === "ok" ? got >= 0 : got === -expect;
    report.push({ name, got, expect, ok });
  }
  console.log(JSON.stringify(report));
  Deno.exit(report.every((r) => r.ok) ? 0 : 1);
} else if (mode === "x32") {
  // getpid through the x32 table: the filter must kill, never look the number up natively.
  console.log(JSON.stringify({ survived: sys(0x40000000 + nr.getpid) }));
  Deno.exit(3);
} else if (mode === "i386") {
  // getpid (20) through int 0x80, the i386 entry point: mov eax, 20; int 0x80; ret.
  const page = sys(nr.mmap, 0, 4096, 7, 0x22, -1, 0);
  const ptr = Deno.UnsafePointer.create(BigInt(page));
  new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, 8))
    .set([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3]);
  const fn = new Deno.UnsafeFnPointer(ptr, { parameters: [], result: "i32" });
  console.log(JSON.stringify({ survived: fn.call() }));
  Deno.exit(3);
}
"""

# (name, syscall, args, expected: errno under the filter, or "ok" for calls that must work).
# Most refused calls would fail differently (or succeed) without the filter, so each result
# proves the filter answered: unshare(0), ptrace(TRACEME), personality(PER_LINUX32) and
# socket(AF_INET6) succeed without it; io_uring_setup(NULL) and perf_event_open(NULL) give
# EFAULT; clone3(NULL) gives EINVAL; setns(-1) gives EBADF.
CHECKS: list[tuple[str, str, list[int], int | str]] = [
    ("socket AF_INET6", "socket", [AF_INET6, SOCK_STREAM, 0], errno.EAFNOSUPPORT),
    ("socket AF_INET6 udp", "socket", [AF_INET6, SOCK_DGRAM, 0], errno.EAFNOSUPPORT),
    ("socket AF_NETLINK", "socket", [AF_NETLINK, SOCK_RAW, 0], errno.EAFNOSUPPORT),
    ("socket AF_PACKET", "socket", [AF_PACKET, SOCK_DGRAM, 0], errno.EAFNOSUPPORT),
    ("socket AF_VSOCK", "socket", [AF_VSOCK, SOCK_STREAM, 0], errno.EAFNOSUPPORT),
    ("socket AF_INET6 in upper bits", "socket", [(1 << 32) | AF_INET6, 1, 0], errno.EAFNOSUPPORT),
    ("socketpair AF_INET6", "socketpair", [AF_INET6, SOCK_STREAM, 0, 0], errno.EAFNOSUPPORT),
    ("io_uring_setup", "io_uring_setup", [1, 0], errno.EPERM),
    ("io_uring_enter", "io_uring_enter", [0, 0, 0, 0, 0, 0], errno.EPERM),
    ("io_uring_register", "io_uring_register", [0, 0, 0, 0], errno.EPERM),
    ("unshare(0)", "unshare", [0], errno.EPERM),
    ("unshare(CLONE_NEWUSER)", "unshare", [CLONE_NEWUSER], errno.EPERM),
    ("setns", "setns", [-1, 0], errno.EPERM),
    ("clone3", "clone3", [0, 0], errno.ENOSYS),
    (
        "clone(CLONE_NEWUSER|CLONE_NEWNET)",
        "clone",
        [CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD],
        errno.EPERM,
    ),
    ("ptrace(TRACEME)", "ptrace", [0, 0, 0, 0], errno.EPERM),
    ("process_vm_readv", "process_vm_readv", [1, 0, 0, 0, 0, 0], errno.EPERM),
    ("personality(PER_LINUX32)", "personality", [0x0008], errno.EPERM),
    ("keyctl", "keyctl", [0, -2, 1], errno.EPERM),
    ("add_key", "add_key", [0, 0, 0, 0, 0], errno.EPERM),
    ("bpf", "bpf", [0, 0, 0], errno.EPERM),
    ("perf_event_open", "perf_event_open", [0, 0, -1, -1, 0], errno.EPERM),
    ("userfaultfd", "userfaultfd", [0], errno.EPERM),
    ("mount", "mount", [0, 0, 0, 0, 0], errno.EPERM),
    ("chroot", "chroot", [0], errno.EPERM),
    ("open_by_handle_at", "open_by_handle_at", [-1, 0, 0], errno.EPERM),
    ("name_to_handle_at", "name_to_handle_at", [-1, 0, 0, 0, 0], errno.EPERM),
    ("syslog", "syslog", [3, 0, 0], errno.EPERM),
    # What Deno and its apps need keeps working.
    ("socket AF_INET", "socket", [AF_INET, SOCK_STREAM, 0], "ok"),
    ("socket AF_INET udp", "socket", [AF_INET, SOCK_DGRAM, 0], "ok"),
    ("socket AF_UNIX", "socket", [AF_UNIX, SOCK_STREAM, 0], "ok"),
    ("personality(query PER_LINUX)", "personality", [0], "ok"),
    ("getpid", "getpid", [], "ok"),
]


@dataclass
class ProbeResult:
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> list[dict]:
        return json.loads(self.stdout.strip().splitlines()[-1])


def probe_app() -> AppVersion:
    return lay_out_app({"app.ts": "export {};\n", "probe.js": PROBE_JS})


def run_probe(
    app: AppVersion,
    mode: str,
    seccomp_filter: Filter | None,
    checks: list[tuple[str, str, list[int], int | str]] | None = None,
) -> ProbeResult:
    """`mode`: "checks" (`checks`, CHECKS by default), "x32" or "i386" (a foreign-architecture
    syscall)."""
    checks = CHECKS if checks is None else checks
    spec = app.job_spec(uid=unique_uid())
    prepare.prepare_common(spec, as_root=True)
    fd = seccomp_filter.open_fd() if seccomp_filter is not None else None
    try:
        argv = launcher.bwrap_argv(spec, "app-init", seccomp_fd=fd)
        outer = argv[: argv.index("--") + 1]
        names = {call for _, call, _, _ in checks} | {"getpid", "mmap"}
        arch = pyseccomp.system_arch()
        numbers = {name: pyseccomp.resolve_syscall(arch, name) for name in names}
        config = json.dumps({"nr": numbers, "checks": checks})
        libc = next(
            lib for lib in launcher.shared_libraries(launcher.deno_path()) if "libc." in lib
        )
        command = [
            launcher.layout.SANDBOX_DENO,
            "run",
            *launcher.DENO_COMMON,
            "--allow-ffi",  # test-only: the probe's raw syscalls
            "/app/probe.js",
            libc,
            mode,
            config,
        ]
        proc = spawn.start(
            outer + command,
            uid=spec.uid,
            cgroup_procs=[],
            pass_fds=(fd,) if fd is not None else (),
        )
    finally:
        if fd is not None:
            prepare.close_fds({"seccomp": fd})
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return ProbeResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
