"""Over quota: the read-only data mode (spec.data_readonly), and the host-side disk usage
measurement (`sandbox.data.usage`) that quota enforcement and cost displays rely on."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from sandbox.data import usage
from sandbox.spec import SandboxSpec, SpecError
from sandbox.walls import launcher

pytestmark = pytest.mark.sandbox

READONLY_APP = """
import { createApp } from "@dropserver/app";
import { DatabaseSync } from "node:sqlite";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async (ctx) =>
  Response.json([
    await attempt("read", () => Deno.readTextFile(`${ctx.dataPath}/notes.txt`)),
    await attempt("sqlite read", () => {
      const db = new DatabaseSync(`${ctx.dataPath}/app.db`, { readOnly: true });
      const n = db.prepare("SELECT count(*) AS n FROM t").get().n;
      db.close();
      return n;
    }),
    await attempt("write", () => Deno.writeTextFile(`${ctx.dataPath}/new.txt`, "x")),
    await attempt("append", () =>
      Deno.writeTextFile(`${ctx.dataPath}/notes.txt`, "more", { append: true })),
    await attempt("truncate", () => Deno.truncate(`${ctx.dataPath}/notes.txt`, 0)),
    await attempt("remove", () => Deno.remove(`${ctx.dataPath}/notes.txt`)),
    await attempt("mkdir", () => Deno.mkdir(`${ctx.dataPath}/d`)),
    await attempt("sqlite write", () => {
      const db = new DatabaseSync(`${ctx.dataPath}/app.db`);
      db.exec("INSERT INTO t VALUES ('y')");
    }),
    await attempt("tmp", () => Deno.writeTextFile("/tmp/x", "x")),
  ]) }] });
"""


def seed_data(spec: SandboxSpec) -> dict[str, bytes]:
    """Files the app wrote while under quota, owned by its uid as they would be."""
    import sqlite3

    data = Path(spec.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    (data / "notes.txt").write_text("hello")
    con = sqlite3.connect(data / "app.db")
    con.execute("CREATE TABLE t (v TEXT)")
    con.execute("INSERT INTO t VALUES ('x')")
    con.commit()
    con.close()
    for path in [data, *data.iterdir()]:
        os.chown(path, spec.uid, spec.uid)
    return {p.name: p.read_bytes() for p in data.iterdir()}


def test_read_only_data_is_bound_read_only_without_a_write_grant(ds_data_dir):
    spec = SandboxSpec.for_appspace(
        appspace_id="a", app_id="b", version="1", uid=200001, data_readonly=True
    )
    argv = launcher.bwrap_argv(spec, "appspace")
    outer, deno = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    ro = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(outer) if a == "--ro-bind"]
    rw = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(outer) if a == "--bind"]
    assert (spec.data_dir, "/data") in ro and "/data" not in [d for _, d in rw]
    flags = dict(a.split("=", 1) for a in deno if a.startswith("--") and "=" in a)
    assert flags["--allow-write"].split(",") == ["/run/ds/http.sock"]
    assert "/data" in flags["--allow-read"].split(",")


def test_the_flag_defaults_off_and_round_trips(ds_data_dir):
    spec = SandboxSpec.for_appspace(appspace_id="a", app_id="b", version="1", uid=200001)
    assert spec.data_readonly is False
    old_client_json = {k: v for k, v in spec.to_json().items() if k != "data_readonly"}
    assert SandboxSpec.from_json(old_client_json) == spec  # specs without the field still work
    on = SandboxSpec.from_json({**spec.to_json(), "data_readonly": True})
    assert on.data_readonly is True
    with pytest.raises(SpecError, match="data_readonly"):
        SandboxSpec.from_json({**spec.to_json(), "data_readonly": "yes"})


def test_an_appspace_over_quota_reads_but_cannot_write(supervisor, make_app, http_request):
    app = make_app({"app.ts": READONLY_APP})
    spec = app.spec()
    ro_spec = SandboxSpec(**{**spec.__dict__, "data_readonly": True})
    before = seed_data(spec)
    status, _, body = http_request(supervisor.client.ensure(ro_spec))
    assert status == 200
    results = {r["name"]: r for r in json.loads(body)}
    assert results.pop("read")["value"] == "hello"
    assert results.pop("sqlite read")["value"] == "1"
    assert results.pop("tmp")["ok"] is False  # unchanged: /tmp never had a write grant
    assert not [r for r in results.values() if r["ok"]], results
    # From the host: the data is exactly what it was, and the mount itself is read-only.
    data = Path(spec.data_dir)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    mounts = Path(f"/proc/{supervisor.deno_pid(spec.id)}/mountinfo").read_text().splitlines()
    data_mount = next(line.split() for line in mounts if line.split()[4] == "/data")
    assert "ro" in data_mount[5].split(",")
    # Back under quota: the same appspace restarts writable.
    result = supervisor.client.ensure(spec)
    status, _, body = http_request(result)
    write = next(r for r in json.loads(body) if r["name"] == "write")
    assert write["ok"] and (data / "new.txt").read_text() == "x"


# --- sandbox.data.usage ------------------------------------------------------------------------


def test_usage_counts_bytes_and_files_without_following_symlinks(tmp_path):
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"x" * 10_000)
    (root / "sub" / "b.txt").write_bytes(b"y" * 100)
    os.link(root / "a.bin", root / "sub" / "hardlink.bin")  # same inode: counted once
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge.bin").write_bytes(b"z" * 1_000_000)
    (root / "link-to-file").symlink_to(outside / "huge.bin")
    (root / "sub" / "link-to-dir").symlink_to(outside)
    with open(root / "sparse", "wb") as fh:
        fh.truncate(50_000_000)
    found = usage.measure(root)
    assert found.files == 6 and found.dirs == 2
    assert 10_100 <= found.apparent_bytes - 50_000_000 < 20_000 + 4 * 4096
    assert found.bytes < 1_000_000  # neither the sparse length nor the symlink targets
    assert usage.measure(tmp_path / "missing") == usage.DiskUsage()
    with pytest.raises(OSError):
        usage.measure(root / "sub" / "link-to-dir")  # the root itself must not be a symlink


def test_usage_walks_trees_deeper_than_path_max_with_two_fds(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    depth = 1500  # 1500 * "dddd/" is well past PATH_MAX (4096)
    try:
        fd = os.open(root, os.O_RDONLY)
        for _ in range(depth):
            os.mkdir("dddd", dir_fd=fd)
            child = os.open("dddd", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(leaf, b"q" * 5000)
        os.close(leaf)
        os.close(fd)
        fds_before = len(os.listdir("/proc/self/fd"))
        found = usage.measure(root)
        assert (found.dirs, found.files) == (depth, 1)
        assert len(os.listdir("/proc/self/fd")) == fds_before
    finally:
        # shutil.rmtree (pytest's cleanup too) recurses once per level: past ~1000 it fails.
        subprocess.run(["rm", "-rf", "--", str(root)], check=True)


def test_usage_survives_files_vanishing_during_the_walk(tmp_path):
    root = tmp_path / "data"
    for i in range(20):
        (root / f"d{i}").mkdir(parents=True)
        for j in range(20):
            (root / f"d{i}" / f"f{j}").write_bytes(b"x" * 100)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            d = root / f"d{n % 20}"
            for entry in list(d.iterdir()) if d.exists() else []:
                entry.unlink(missing_ok=True)
            if d.exists():
                d.rmdir()
            d.mkdir()
            (d / "f0").write_bytes(b"x")
            n += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(100):
            found = usage.measure(root)  # never raises for vanished entries
            assert 0 <= found.files <= 400 and found.dirs <= 20
    finally:
        stop.set()
        thread.join(10)


def test_usage_measures_what_an_app_wrote(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": """
import { createApp } from "@dropserver/app";
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async (ctx) => {
  await Deno.mkdir(`${ctx.dataPath}/a/b`, { recursive: true });
  await Deno.writeFile(`${ctx.dataPath}/a/b/blob`, new Uint8Array(300_000));
  await Deno.symlink("/etc/passwd", `${ctx.dataPath}/a/link`).catch(() => {});
  return new Response("ok");
} }] });
"""
        }
    )
    spec = app.spec()
    assert http_request(supervisor.client.ensure(spec))[0] == 200
    found = usage.measure(spec.data_dir)
    assert found.dirs == 2 and found.files >= 1
    assert 300_000 <= found.apparent_bytes < 400_000 and found.bytes >= 300_000
