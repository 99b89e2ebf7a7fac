"""The seccomp filter: its compiled program rule by rule, then the kernel enforcing it on a real
sandbox (a raw-syscall probe in the same layout, /proc of a running appspace, apps that still
work: Workers, node:sqlite, WebAssembly, serving on the unix socket)."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path

import pyseccomp
import pytest

from sandbox.spec import SandboxSpec
from sandbox.walls import launcher, seccomp
from tests.sandbox import bpf
from tests.sandbox.syscall_probe import CHECKS, probe_app, run_probe

pytestmark = pytest.mark.sandbox

# x86_64 numbers from the kernel's syscall_64.tbl, written out so that this test does not
# trust the library that compiled the filter for them.
X86_64 = {
    "socket": 41,
    "socketpair": 53,
    "clone": 56,
    "clone3": 435,
    "unshare": 272,
    "setns": 308,
    "ptrace": 101,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "move_mount": 429,
    "open_tree": 428,
    "fsopen": 430,
    "fsmount": 432,
    "fspick": 433,
    "personality": 135,
    "acct": 163,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "syslog": 103,
    "quotactl": 179,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "chroot": 161,
}
ALLOWED_X86_64 = {"read": 0, "write": 1, "mmap": 9, "getpid": 39, "connect": 42, "execve": 59}
THREAD_FLAGS = 0x3D0F00  # glibc's pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|...
AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK = 10, 16, 17, 40


@pytest.fixture(scope="module")
def program() -> bytes:
    return seccomp.build().bpf


def needs_x86_64() -> None:
    assert pyseccomp.system_arch() == bpf.AUDIT_ARCH_X86_64, (
        "these checks hold x86_64 syscall numbers: add this architecture's"
    )


def test_the_required_syscalls_are_refused(program):
    needs_x86_64()
    for name, nr in X86_64.items():
        if name in ("socket", "socketpair", "clone", "personality"):
            continue  # argument-dependent, below
        verdict = bpf.run(program, nr)
        expected = errno.ENOSYS if name == "clone3" else errno.EPERM
        assert verdict.errno() == expected, (name, verdict)
    for name, nr in ALLOWED_X86_64.items():
        assert bpf.run(program, nr).allowed, name


def test_every_listed_syscall_exists_and_is_refused(program):
    arch = pyseccomp.system_arch()
    for name in seccomp.refused_syscalls():
        nr = pyseccomp.resolve_syscall(arch, name)
        assert nr >= 0, name
        assert bpf.run(program, nr, arch).errno() in (errno.EPERM, errno.ENOSYS), name


def test_socket_families_other_than_unix_and_inet_are_refused(program):
    needs_x86_64()
    for call in ("socket", "socketpair"):
        nr = X86_64[call]
        assert bpf.run(program, nr, bpf.AUDIT_ARCH_X86_64, 1, 1, 0).allowed  # AF_UNIX
        assert bpf.run(program, nr, bpf.AUDIT_ARCH_X86_64, 2, 1, 0).allowed  # AF_INET
        for family in (0, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK, 3, 0xFFFFFFFF):
            verdict = bpf.run(program, nr, bpf.AUDIT_ARCH_X86_64, family, 1, 0)
            assert verdict.errno() == errno.EAFNOSUPPORT, (call, family)
        # Upper bits the kernel would drop must not smuggle a family through.
        for family in ((1 << 32) | AF_INET6, (1 << 63) | 2):
            verdict = bpf.run(program, nr, bpf.AUDIT_ARCH_X86_64, family, 1, 0)
            assert verdict.errno() == errno.EAFNOSUPPORT, (call, hex(family))


def test_clone_with_namespace_flags_and_odd_personalities_are_refused(program):
    needs_x86_64()
    clone, personality = X86_64["clone"], X86_64["personality"]
    assert bpf.run(program, clone, bpf.AUDIT_ARCH_X86_64, THREAD_FLAGS).allowed
    assert bpf.run(program, clone, bpf.AUDIT_ARCH_X86_64, 17).allowed  # fork(): SIGCHLD
    for name, flag in seccomp.CLONE_NAMESPACE_FLAGS.items():
        verdict = bpf.run(program, clone, bpf.AUDIT_ARCH_X86_64, THREAD_FLAGS | flag)
        assert verdict.errno() == errno.EPERM, name
    assert bpf.run(program, personality, bpf.AUDIT_ARCH_X86_64, 0).allowed
    for persona in (0x0008, 0x0040000, 0x0400000, 0xFFFFFFFF):  # LINUX32, ADDR_NO_RANDOMIZE...
        assert bpf.run(program, personality, bpf.AUDIT_ARCH_X86_64, persona).errno() == 1


def test_foreign_architectures_are_killed(program):
    needs_x86_64()
    for nr in (20, 39, 41, 0):  # i386 getpid, and numbers that are harmless natively
        assert bpf.run(program, nr, bpf.AUDIT_ARCH_I386).action == bpf.RET_KILL_PROCESS
    x32_getpid = bpf.X32_SYSCALL_BIT | 39
    assert bpf.run(program, x32_getpid).action == bpf.RET_KILL_PROCESS


def test_the_launcher_hands_the_filter_to_bubblewrap(ds_data_dir):
    spec = SandboxSpec.for_appspace(appspace_id="a", app_id="b", version="1", uid=200001)
    argv = launcher.bwrap_argv(spec, "appspace", seccomp_fd=9)
    outer = argv[: argv.index("--")]
    assert outer[outer.index("--seccomp") + 1] == "9"


def test_the_kernel_refuses_each_denied_syscall_family_in_the_sandbox(ds_data_dir):
    result = run_probe(probe_app(), "checks", seccomp.build())
    assert result.returncode == 0, result
    report = result.report()
    assert [r["name"] for r in report] == [c[0] for c in CHECKS]
    assert all(r["ok"] for r in report), [r for r in report if not r["ok"]]


@pytest.mark.parametrize("mode", ["x32", "i386"])
def test_a_foreign_architecture_syscall_kills_the_sandbox(ds_data_dir, mode):
    needs_x86_64()
    result = run_probe(probe_app(), mode, seccomp.build())
    # bubblewrap reports its child's death by signal as 128 + the signal.
    assert result.returncode == 128 + signal.SIGSYS, result
    assert "survived" not in result.stdout


def test_a_running_appspace_is_filtered_from_the_host(supervisor, make_app, http_request):
    from tests.sandbox.fixtures import HELLO_APP

    spec = make_app({"app.ts": HELLO_APP}).spec()
    status, _, _ = http_request(supervisor.client.ensure(spec))
    assert status == 200
    deno = supervisor.deno_pid(spec.id)
    fields = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{deno}/status").read_text().splitlines()
    )
    assert fields["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
    assert int(fields["Seccomp_filters"]) >= 1
    assert fields["NoNewPrivs"].strip() == "1"


WORKS_APP = """
import { createApp } from "@dropserver/app";
import { DatabaseSync } from "node:sqlite";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
const worker = () => new Promise((ok, fail) => {
  const w = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
  w.onmessage = (e) => { w.terminate(); ok(e.data); };
  w.onerror = (e) => { e.preventDefault(); fail(new Error(e.message)); };
  w.postMessage(20);
});
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async (ctx) =>
  Response.json([
    await attempt("worker", worker),
    await attempt("sqlite", () => {
      const db = new DatabaseSync(`${ctx.dataPath}/app.db`);
      db.exec("CREATE TABLE IF NOT EXISTS t (v TEXT)");
      db.prepare("INSERT INTO t VALUES (?)").run("x");
      const n = db.prepare("SELECT count(*) AS n FROM t").get().n;
      db.close();
      return n;
    }),
    await attempt("wasm", async () => {
      const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1,
        127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);
      const { instance } = await WebAssembly.instantiate(bytes);
      return instance.exports.add(2, 3);
    }),
    await attempt("timers", () => new Promise((ok) => setTimeout(() => ok("tick"), 5))),
    await attempt("crypto", async () =>
      (await crypto.subtle.digest("SHA-256", new TextEncoder().encode("x"))).byteLength),
  ]) }] });
"""
WORKER = """
self.onmessage = (e) => {
  let a = 0, b = 1;
  for (let i = 0; i < e.data; i++) [a, b] = [b, a + b];
  self.postMessage(a);
};
"""


def test_apps_still_get_workers_sqlite_and_wasm_under_the_filter(
    supervisor, make_app, http_request
):
    app = make_app({"app.ts": WORKS_APP, "worker.ts": WORKER})
    app.warm(supervisor.client)
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    results = {r["name"]: r for r in json.loads(body)}
    assert all(r["ok"] for r in results.values()), results
    assert results["worker"]["value"] == "6765"
    assert results["sqlite"]["value"] == "1" and results["wasm"]["value"] == "5"
    assert (Path(spec.data_dir) / "app.db").stat().st_size > 0  # written, seen from the host
    assert supervisor.client.list()[0]["state"] == "running"
