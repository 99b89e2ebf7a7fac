"""Class 2 of the second review: nothing writable outside the data dir, every writable byte
capped or counted (`sandbox/walls/mounts.py` lists each mount and why).

Two hostile apps, each judged from the host by the bytes allocated under DS_DATA_DIR outside
the appspace's data dir (walked across mounts, so the socket dir's tmpfs counts):
- a real appspace behind the supervisor, production flags: before it serves, it replaces its
  socket path with a directory and writes megabytes into it (its Deno grant on the socket path
  allows that); once served, it tries to replace the socket;
- the OS layer alone, as after a V8 escape: the production bubblewrap layout for an appspace
  (its socket-dir tmpfs mounted by the production code) with Deno's read/write checks off, trying
  every place a process of that uid could write, MBs each, the data dir read-only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from sandbox import layout
from sandbox.walls import cgroups, launcher, mounts, prepare, spawn
from tests.sandbox.fixtures import HELLO_APP, poll

pytestmark = pytest.mark.sandbox

MB = 1024 * 1024
FEW_KB = 16 * 1024


def allocated_outside(root: Path, data_dir: Path) -> dict[str, int]:
    """Allocated bytes of every file and directory under `root` but outside `data_dir`,
    crossing mount points (a tmpfs on the host is where an app could hide bytes)."""
    sizes: dict[str, int] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == data_dir or data_dir in Path(folder).parents:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            sizes[path] = st.st_blocks * 512
    return sizes


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What grew, path by path (a new directory on ext4 is a 4 KiB block)."""
    grown = {path: size - before.get(path, 0) for path, size in after.items()}
    return {path: size for path, size in grown.items() if size > 0}


# --- a real appspace ----------------------------------------------------------------------------

BEFORE_SERVING = r"""
import { createApp } from "@dropserver/app";
const chunk = new Uint8Array(1 << 20).fill(120);
async function fill(path, mb) {
  let written = 0;
  try {
    const f = await Deno.open(path, { write: true, create: true, truncate: true });
    try { for (let i = 0; i < mb; i++) written += await f.write(chunk); } finally { f.close(); }
    return { written };
  } catch (e) { return { written, error: e.name }; }
}
const attempt = async (f) => { try { await f(); return "ok"; } catch (e) { return e.name; } };
// Before Deno.serve binds it, the socket path is free: the app's grant on it lets it be a
// directory, and anything below it too. (Only when serving: app-init has no such grant.)
const serving = await Deno.permissions.query({ name: "write", path: "/run/ds/http.sock" });
if (serving.state === "granted") {
  const report = { mkdir: await attempt(() => Deno.mkdir("/run/ds/http.sock")) };
  report.fill = await fill("/run/ds/http.sock/blob", 4);
  for (let i = 0; i < 8; i++) {
    report[`small${i}`] = await attempt(() => Deno.writeTextFile(`/run/ds/http.sock/f${i}`, "x"));
  }
  await Deno.writeTextFile("/data/before.json", JSON.stringify(report));
  // Hold still until the host has measured, then make room for the socket.
  const pause = () => new Promise((r) => setTimeout(r, 20));
  while ((await attempt(() => Deno.stat("/meta/measured"))) !== "ok") await pause();
  await Deno.remove("/run/ds/http.sock", { recursive: true });
}
"""

AFTER_SERVING = r"""
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () => {
  const attempt = async (f) => { try { await f(); return "ok"; } catch (e) { return e.name; } };
  return Response.json({
    remove: await attempt(() => Deno.remove("/run/ds/http.sock")),
    rename: await attempt(() => Deno.rename("/run/ds/http.sock", "/data/moved.sock")),
    mkdir: await attempt(() => Deno.mkdir("/run/ds/http.sock/d")),
  });
} }] });
"""


def test_a_served_appspace_stores_nothing_in_its_socket_dir(supervisor, make_app, http_request):
    app = make_app({"app.ts": BEFORE_SERVING + AFTER_SERVING})
    app.warm(supervisor.client)
    spec = app.spec()
    data = Path(spec.data_dir)
    root = layout.data_dir()
    prepare.prepare_common(spec, as_root=True)  # the appspace's folders, as made at creation
    baseline = allocated_outside(root, data)
    started: dict = {}
    thread = threading.Thread(target=lambda: started.update(path=supervisor.client.ensure(spec)))
    thread.start()
    try:
        before = json.loads(poll(lambda: _read(data / "before.json"), timeout=20))
        # Measured from the host while the app holds what it managed to write.
        run_dir = layout.sandbox_run_dir(spec.id)
        held = sum(
            os.lstat(os.path.join(d, n)).st_blocks * 512
            for d, ds, fs in os.walk(run_dir)
            for n in ds + fs
        )
        grown = growth(baseline, allocated_outside(root, data))
    finally:
        meta = Path(spec.meta_dir)
        (meta / "measured").write_text("")
        thread.join(30)
    assert before["mkdir"] == "ok"  # the Deno grant allows it: the mount is what stops it
    assert before["fill"]["written"] <= 4096, before
    assert before["fill"]["error"], before
    assert held <= 8192, held
    assert sum(grown.values()) <= FEW_KB, grown

    status, _, body = http_request(started["path"])
    assert status == 200
    after = json.loads(body)
    assert after["remove"] != "ok" and after["mkdir"] != "ok", after
    assert after["rename"] != "ok", after
    st = os.stat(layout.sandbox_run_dir(spec.id))
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)  # sealed once ready
    assert sum(growth(baseline, allocated_outside(root, data)).values()) <= FEW_KB


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


# --- the OS layer alone (Deno's file checks off, as after a V8 escape) ------------------------

ESCAPED = r"""
const chunk = new Uint8Array(1 << 20).fill(120);
async function fill(path, mb) {
  let written = 0;
  try {
    const f = await Deno.open(path, { write: true, create: true, truncate: true });
    try { for (let i = 0; i < mb; i++) written += await f.write(chunk); } finally { f.close(); }
    return { written };
  } catch (e) { return { written, error: `${e.name}: ${e.message}` }; }
}
const attempt = async (f) => { try { await f(); return "ok"; } catch (e) { return e.name; } };
const report = {};
report["mkdir socket path"] = await attempt(() => Deno.mkdir("/run/ds/http.sock"));
const home = Deno.env.get("HOME") ?? "/root";
for (const path of [
  "/run/ds/http.sock/blob", "/run/ds/blob", "/tmp/blob", "/cache/blob", "/dev/blob",
  "/dev/shm/blob", `${home}/blob`, "/root/blob", "/home/blob", "/blob", "/run/blob",
  "/var/tmp/blob", "/etc/blob", "/usr/bin/blob", "/app/blob", "/dropserver/blob",
  "/meta/blob", "/data/blob", "/cache/gen/blob",
]) report[path] = await fill(path, 3);
for (let i = 0; i < 16; i++) {
  report[`/run/ds/f${i}`] = await attempt(() => Deno.writeTextFile(`/run/ds/f${i}`, "x"));
}
console.log(JSON.stringify(report));
"""


def run_escaped(spec, script: str = "/app/escaped.js", cgroup_procs=()) -> dict:
    """The production bwrap argv for an appspace, Deno told to check nothing about files."""
    prepare.prepare_common(spec, as_root=True)
    mounts.mount_run_dir(spec, as_root=True)
    argv = launcher.bwrap_argv(spec, "appspace")
    outer = argv[: argv.index("--") + 1]
    command = [
        layout.SANDBOX_DENO,
        "run",
        *launcher.DENO_COMMON,
        "--allow-read",  # test-only: every file check off
        "--allow-write",
        "--allow-env",
        script,
    ]
    proc = spawn.start(outer + command, uid=spec.uid, cgroup_procs=list(cgroup_procs))
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = out.decode().strip().splitlines()
    return {"returncode": proc.returncode, **(json.loads(lines[-1]) if lines else {})}


def test_every_writable_grant_is_capped_or_counted_even_without_denos_checks(make_app):
    app = make_app({"app.ts": HELLO_APP, "escaped.js": ESCAPED})
    spec = dataclasses.replace(app.spec(tmpfs_mb=1), data_readonly=True)
    data = Path(spec.data_dir)
    root = layout.data_dir()
    prepare.prepare_common(spec, as_root=True)
    baseline = allocated_outside(root, data)
    data_before = allocated_outside(data, Path("/nonexistent"))
    try:
        report = run_escaped(spec)
        assert report.pop("returncode") == 0, report
        # Measured while the socket dir's tmpfs is still mounted on the host.
        grown = growth(baseline, allocated_outside(root, data))
    finally:
        mounts.remove_run_dir(spec.id)

    written = {path: r["written"] for path, r in report.items() if isinstance(r, dict)}
    # On the host: nothing outside the data dir grew more than a few KB.
    assert sum(grown.values()) <= FEW_KB, (grown, report)
    # The socket dir holds one page at most; a few inodes.
    assert written["/run/ds/http.sock/blob"] + written["/run/ds/blob"] <= 4096, report
    assert sum(report[f"/run/ds/f{i}"] == "ok" for i in range(16)) <= 4, report
    # /tmp and /cache are tmpfs of their own (capped; charged to the memory cgroup).
    assert written["/tmp/blob"] <= 1 * MB, report
    # Nothing else takes a byte: read-only mounts, /dev included, and the read-only data dir.
    for path, count in written.items():
        if path not in ("/run/ds/http.sock/blob", "/run/ds/blob", "/tmp/blob", "/cache/blob"):
            assert count == 0, (path, report[path])
    assert allocated_outside(data, Path("/nonexistent")) == data_before


FLOOD_TMP = r"""
const chunk = new Uint8Array(1 << 20).fill(120);
const f = await Deno.open("/tmp/flood", { write: true, create: true });
let written = 0;
for (let i = 0; i < 160; i++) written += await f.write(chunk);
console.log(JSON.stringify({ written }));
"""


def test_tmp_bytes_are_charged_to_the_memory_cgroup(make_app, settings):
    """A /tmp larger than the memory limit cannot be filled: its pages count in the sandbox's
    memory cgroup (no swap), so the writer is OOM-killed long before the tmpfs is full."""
    app = make_app({"app.ts": HELLO_APP, "flood.js": FLOOD_TMP})
    spec = app.spec(memory_mb=96, heap_mb=32, tmpfs_mb=256)
    parent = f"{settings.DS_SANDBOX_CGROUP_PARENT.strip('/')}/{layout.instance_name()}"
    backend = cgroups.probe(parent)
    cgroup = backend.create(
        f"test-{spec.id}", cgroups.CgroupLimits(memory_bytes=96 * MB, cpu_percent=100, pids=64)
    )
    try:
        report = run_escaped(spec, "/app/flood.js", cgroup_procs=cgroup.procs_files())
        usage = cgroup.usage()
    finally:
        mounts.remove_run_dir(spec.id)
        cgroup.remove()
        backend.remove_parent()
    assert report.get("written", 0) < 160 * MB, report
    assert report["returncode"] != 0, report
    assert usage.oom_kills >= 1, usage
