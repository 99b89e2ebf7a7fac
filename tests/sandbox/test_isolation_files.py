"""Hostile apps against the file system: every check of the outcome is made from the host."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import pytest

from sandbox import layout
from sandbox.protocol import SandboxStartFailed
from tests.sandbox.fixtures import HELLO_APP

pytestmark = pytest.mark.sandbox

ATTEMPT = """
import { createApp } from "@dropserver/app";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
"""


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "d"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def victim(supervisor, make_app, ds_data_dir):
    """Another appspace with a secret in its data, and a secret host file next to DS_DATA_DIR."""
    app = make_app({"app.ts": HELLO_APP})
    spec = app.spec()
    supervisor.client.ensure(spec)
    token = "TOKEN-" + secrets.token_hex(12)
    data = Path(spec.data_dir)
    (data / "secret.txt").write_text(token)
    (data / "secret.js").write_text(f'export const s = "{token}";\n')
    host_file = ds_data_dir / "host-secret.txt"
    host_file.write_text(token)
    host_file.chmod(0o644)
    (ds_data_dir / "host-secret.js").write_text(f'export const s = "{token}";\n')
    return {"token": token, "data": data, "host_file": host_file, "spec": spec}


def assert_not_leaked(token: str, *places: bytes | str | Path) -> None:
    for place in places:
        if isinstance(place, Path):
            files = [p for p in place.rglob("*") if p.is_file()] if place.is_dir() else [place]
            blobs = [p.read_bytes() for p in files]
        else:
            blobs = [place.encode() if isinstance(place, str) else place]
        for blob in blobs:
            assert token.encode() not in blob


def test_it_cannot_read_host_files_or_another_appspaces_data(
    supervisor, make_app, victim, http_request
):
    targets = [
        str(victim["host_file"]),
        str(victim["data"] / "secret.txt"),
        "/etc/passwd",
        "/etc/shadow",
        "/proc/1/environ",
        "/data/../" + str(victim["data"]),
    ]
    app = make_app(
        {
            "app.ts": ATTEMPT
            + f"""
const targets = {json.dumps(targets)};
createApp({{ routes: [{{ method: "GET", path: "/", auth: "public", handler: async () => {{
  const out = [];
  for (const t of targets) {{
    out.push(await attempt("read " + t, () => Deno.readTextFile(t)));
    out.push(await attempt("open " + t, async () => {{
      const f = await Deno.open(t); const b = new Uint8Array(4096); await f.read(b);
      return new TextDecoder().decode(b);
    }}));
    out.push(await attempt("stat " + t, async () => JSON.stringify(await Deno.stat(t))));
  }}
  out.push(await attempt("readDir /", async () => {{
    const n = []; for await (const e of Deno.readDir("/")) n.push(e.name); return n.join(",");
  }}));
  return Response.json(out);
}} }}] }});
"""
        }
    )
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    results = json.loads(body)
    assert not [r for r in results if r["ok"]], results
    assert b"root:x:0:0" not in body
    assert_not_leaked(victim["token"], body, Path(spec.data_dir), layout.logs_dir())


def test_it_cannot_import_other_files_dynamically(supervisor, make_app, victim, http_request):
    targets = [
        "file://" + str(victim["data"] / "secret.js"),
        "file://" + str(victim["host_file"].with_suffix(".js")),
        "file:///etc/passwd",
    ]
    app = make_app(
        {
            "app.ts": ATTEMPT
            + f"""
const targets = {json.dumps(targets)};
createApp({{ routes: [{{ method: "GET", path: "/", auth: "public", handler: async () => {{
  const out = [];
  for (const t of targets) {{
    out.push(await attempt("import " + t, async () => JSON.stringify(await import(t))));
    out.push(await attempt("text " + t, async () =>
      JSON.stringify(await import(t, {{ with: {{ type: "text" }} }}))));
  }}
  return Response.json(out);
}} }}] }});
"""
        }
    )
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    assert not [r for r in json.loads(body) if r["ok"]], body
    assert_not_leaked(victim["token"], body, Path(spec.data_dir), layout.logs_dir())


@pytest.mark.parametrize(
    "import_line",
    [
        'import {{ s }} from "file://{data}/secret.js"; console.log(s);',
        'import t from "file://{host_file}" with {{ type: "text" }}; console.log(t);',
        'import t from "/etc/passwd" with {{ type: "text" }}; console.log(t);',
        # Passes Deno's check (the path as written is in /app); only the mount namespace stops it.
        'import t from "./leak.txt" with {{ type: "text" }}; console.log(t);',
        'import {{ s }} from "./leak.js"; console.log(s);',
    ],
    ids=[
        "other-appspace-module",
        "host-file-as-text",
        "etc-passwd-as-text",
        "symlink-in-app-package-text",
        "symlink-in-app-package-module",
    ],
)
def test_it_cannot_import_other_files_statically(supervisor, make_app, victim, import_line):
    line = import_line.format(data=victim["data"], host_file=victim["host_file"])
    app = make_app({"app.ts": line + "\n" + HELLO_APP})
    os.symlink(victim["host_file"], app.files_dir / "leak.txt")
    os.symlink(victim["data"] / "secret.js", app.files_dir / "leak.js")
    spec = app.spec()
    with pytest.raises(SandboxStartFailed) as failure:
        supervisor.client.ensure(spec)
    assert "failed to load" in failure.value.stderr_tail
    init = supervisor.client.run_once(app.job_spec(), "app-init")
    assert not init.ok
    assert b"root:x:0:0" not in (failure.value.stderr_tail + init.stderr_tail).encode()
    assert_not_leaked(
        victim["token"],
        failure.value.stderr_tail,
        init.stderr_tail,
        Path(spec.data_dir),
        layout.logs_dir(),
    )


def test_symlinks_planted_in_the_data_dir_lead_nowhere(supervisor, make_app, victim, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () => {
  const out = [];
  for await (const e of Deno.readDir("/data")) {
    out.push(await attempt("read " + e.name, () => Deno.readTextFile("/data/" + e.name)));
  }
  out.push(await attempt("make symlink", () => Deno.symlink("/etc", "/data/made")));
  return Response.json(out);
} }] });
"""
        }
    )
    spec = app.spec()
    data = Path(spec.data_dir)
    data.mkdir(parents=True)
    os.symlink(victim["data"] / "secret.txt", data / "other-appspace")
    os.symlink(victim["host_file"], data / "host-file")
    os.symlink("/etc/passwd", data / "passwd")
    os.symlink(f"../../{victim['spec'].id}/data/secret.txt", data / "relative")
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    results = json.loads(body)
    assert len(results) == 5
    assert not [r for r in results if r["ok"]], results
    assert not (data / "made").exists()
    assert b"root:x:0:0" not in body
    assert_not_leaked(victim["token"], body, layout.logs_dir())


def test_it_cannot_write_app_files_cache_or_harness(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () => {
  const out = [];
  for (const p of ["/app/app.ts", "/app/new.ts", "/cache/gen/x.js", "/dropserver/main.ts",
                   "/tmp/x", "/x", "/run/ds/x"]) {
    out.push(await attempt("write " + p, () => Deno.writeTextFile(p, "pwned")));
  }
  out.push(await attempt("remove app.ts", () => Deno.remove("/app/app.ts")));
  out.push(await attempt("mkdir", () => Deno.mkdir("/app/dir")));
  out.push(await attempt("rename", () => Deno.rename("/app/app.ts", "/data/app.ts")));
  out.push(await attempt("chmod", () => Deno.chmod("/app/app.ts", 0o777)));
  return Response.json(out);
} }] });
"""
        }
    )
    app.warm(supervisor.client)
    harness = tree_digest(layout.HARNESS_DIR)
    files, cache = tree_digest(app.files_dir), tree_digest(app.cache_dir)
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    assert not [r for r in json.loads(body) if r["ok"]], body
    supervisor.client.stop(spec.id)
    assert tree_digest(app.files_dir) == files
    assert tree_digest(app.cache_dir) == cache
    assert tree_digest(layout.HARNESS_DIR) == harness
    assert list(Path(spec.data_dir).iterdir()) == []
