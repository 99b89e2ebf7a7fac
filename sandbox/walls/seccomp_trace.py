"""`python -m sandbox.walls.seccomp_trace`: the syscalls sandboxed Deno really makes, from strace.

Derives and re-checks the allowlist of `sandbox/walls/seccomp_allowlist.py`. It runs a real
supervisor (`python -m sandbox`) on a throw-away DS_DATA_DIR, in a private empty network
namespace (`unshare --net`: nothing leaves the machine, outbound calls fail after their
syscalls are made), with `DS_SANDBOX_BWRAP` pointing at a wrapper that starts bubblewrap under
`strace -f`. Every syscall a process makes after it loaded the seccomp filter
(`prctl(PR_SET_SECCOMP)`, which bubblewrap calls right before it execs Deno, also in its pid-1
reaper), and every syscall of the processes and threads those start, is counted.

What runs: install-time warming, app-init, every GET route and a POST of each app, WebSockets,
migrations up and down, for a feature tour (`TOUR_FILES`: files in the data dir, node:fs,
node:sqlite, Workers, WebAssembly, timers, Web Crypto and node:crypto, compression, streams,
big allocations, fetch / Deno.connect / DNS to an allowlisted host, `Deno.watchFs`, refused
permissions), the example apps (`examples/`) and the gateway test app
(`tests/gateway/app_files.py`).

The supervisor runs with the allowlist's default action turned into "allow" (`--permissive`,
the default; patched in the supervisor process only, never a setting), so a missing syscall
does not change the path Deno takes. `--enforcing` runs the production filter instead: a
syscall the list lacks then shows with ENOSYS and the app features report what broke.

Output: the syscalls seen and how often, those missing from the allowlist (exit status 1 when
any), and those on the list that no trace used (kept for a reason or to be reviewed).
Needs root, strace (`apt-get install -y strace`), bubblewrap, libseccomp.

Longer than most modules on purpose: the feature tour it drives (the Deno app, as text) is
the list of what the allowlist must keep working, kept beside the tracer that uses it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TOUR_APP = r"""
import { createApp } from "@dropserver/app";
import { DatabaseSync } from "node:sqlite";
import * as nodeFs from "node:fs";
import * as nodeCrypto from "node:crypto";
import * as zlib from "node:zlib";

const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
const worker = () => new Promise((ok, fail) => {
  const w = new Worker(new URL("./worker.js", import.meta.url).href, { type: "module" });
  w.onmessage = (e) => { w.terminate(); ok(e.data); };
  w.onerror = (e) => { e.preventDefault(); fail(new Error(e.message)); };
  w.postMessage(20);
});
const WASM = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3,
  2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);

async function files(dir) {
  const d = `${dir}/tour`;
  await Deno.mkdir(`${d}/sub`, { recursive: true });
  await Deno.writeTextFile(`${d}/a.txt`, "hello");
  await Deno.writeTextFile(`${d}/a.txt`, " world", { append: true });
  Deno.writeFileSync(`${d}/b.bin`, new Uint8Array(200000));
  await Deno.copyFile(`${d}/a.txt`, `${d}/sub/c.txt`);
  await Deno.rename(`${d}/sub/c.txt`, `${d}/sub/d.txt`);
  const f = await Deno.open(`${d}/b.bin`, { read: true, write: true });
  await f.seek(100, Deno.SeekMode.Start);
  await f.write(new Uint8Array([1, 2, 3]));
  await f.truncate(1000);
  await f.syncData(); await f.sync();
  const st = await f.stat();
  f.close();
  await Deno.chmod(`${d}/a.txt`, 0o600);
  await Deno.utime(`${d}/a.txt`, 1, 2);
  const names = [];
  for await (const e of Deno.readDir(d)) names.push(e.name);
  await Deno.lstat(`${d}/sub/d.txt`);
  await Deno.realPath(`${d}/sub`);
  const tmp = await Deno.makeTempFile({ dir: d });
  const tmpDir = await Deno.makeTempDir({ dir: d });
  nodeFs.writeFileSync(`${d}/node.txt`, "n");
  nodeFs.appendFileSync(`${d}/node.txt`, "m");
  await nodeFs.promises.readFile(`${d}/node.txt`, "utf8");
  const text = await Deno.readTextFile(`${d}/a.txt`);
  const appFile = await Deno.readTextFile(new URL("./worker.js", import.meta.url));
  await Deno.remove(tmp); await Deno.remove(tmpDir);
  await Deno.remove(d, { recursive: true });
  return [text, st.size, names.length, appFile.length].join(",");
}

async function sqlite(dir) {
  const out = [];
  for (const wal of [false, true]) {
    const db = new DatabaseSync(`${dir}/tour-${wal}.db`);
    if (wal) db.exec("PRAGMA journal_mode=WAL");
    db.exec("CREATE TABLE IF NOT EXISTS t (v TEXT)");
    const insert = db.prepare("INSERT INTO t VALUES (?)");
    db.exec("BEGIN"); for (let i = 0; i < 200; i++) insert.run("x" + i); db.exec("COMMIT");
    out.push(db.prepare("SELECT count(*) AS n FROM t").get().n);
    db.close();
  }
  return out.join(",");
}

async function watch(dir) {
  const watcher = Deno.watchFs(dir);
  const seen = (async () => { for await (const e of watcher) return e.kind; })();
  await new Promise((r) => setTimeout(r, 50));
  await Deno.writeTextFile(`${dir}/watched.txt`, "w");
  const kind = await Promise.race([seen, new Promise((r) => setTimeout(() => r("none"), 500))]);
  watcher.close();
  return kind;
}

const outbound = {
  fetch: () => fetch("https://example.com/", { signal: AbortSignal.timeout(2000) }),
  fetchIp: () => fetch("http://93.184.215.14/", { signal: AbortSignal.timeout(2000) }),
  connect: () => Deno.connect({ hostname: "example.com", port: 443 }),
  tls: () => Deno.connectTls({ hostname: "example.com", port: 443 }),
  websocket: () => new Promise((ok, fail) => {
    const ws = new WebSocket("wss://example.com/");
    ws.onopen = () => ok("open"); ws.onerror = () => fail(new Error("ws error"));
  }),
  denied: () => fetch("https://not-allowed.example.org/"),
  dns: () => import("node:dns").then((d) => d.promises.lookup("example.com")),
};

const refused = {
  env: () => Deno.env.get("HOME"),
  run: () => new Deno.Command("/bin/true").output(),
  hostname: () => Deno.hostname(),
  readEtc: () => Deno.readTextFile("/etc/passwd"),
  writeApp: () => Deno.writeTextFile("/app/x", "x"),
  ffi: () => Deno.dlopen("/lib/x86_64-linux-gnu/libc.so.6", {}),
  listen: () => Deno.listen({ port: 8080 }),
};

async function everything(ctx) {
  const results = [
    await attempt("files", () => files(ctx.dataPath)),
    await attempt("sqlite", () => sqlite(ctx.dataPath)),
    await attempt("watchFs", () => watch(ctx.dataPath)),
    await attempt("worker", worker),
    await attempt("wasm", async () =>
      (await WebAssembly.instantiate(WASM)).instance.exports.add(2, 3)),
    await attempt("timers", () => new Promise((ok) => {
      let n = 0; const id = setInterval(() => { if (++n === 3) { clearInterval(id); ok(n); } }, 2);
    })),
    await attempt("crypto", async () => {
      const key = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true,
        ["sign", "verify"]);
      const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey,
        new Uint8Array(10));
      const aes = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true,
        ["encrypt"]);
      await crypto.subtle.encrypt({ name: "AES-GCM", iv: new Uint8Array(12) }, aes,
        new Uint8Array(100));
      crypto.getRandomValues(new Uint8Array(64));
      return [sig.byteLength, crypto.randomUUID().length].join(",");
    }),
    await attempt("node:crypto", () => new Promise((ok, fail) => {
      nodeCrypto.randomBytes(16);
      nodeCrypto.createHash("sha256").update("x").digest("hex");
      nodeCrypto.scrypt("pw", "salt", 32, (e, k) => e ? fail(e) : ok(k.length));
    })),
    await attempt("pbkdf2", async () => {
      const base = await crypto.subtle.importKey("raw", new Uint8Array(8), "PBKDF2", false,
        ["deriveBits"]);
      return (await crypto.subtle.deriveBits({ name: "PBKDF2", salt: new Uint8Array(8),
        iterations: 1000, hash: "SHA-256" }, base, 256)).byteLength;
    }),
    await attempt("compression", async () => {
      const gz = new Blob(["x".repeat(10000)]).stream().pipeThrough(new CompressionStream("gzip"));
      const raw = await new Response(gz).arrayBuffer();
      return zlib.gunzipSync(new Uint8Array(raw)).length;
    }),
    await attempt("memory", () => {
      const big = new ArrayBuffer(64 * 1024 * 1024); new Uint8Array(big).fill(1);
      const arrays = []; for (let i = 0; i < 2000; i++) arrays.push(new Array(1000).fill(i));
      return big.byteLength + arrays.length + Deno.memoryUsage().rss;
    }),
    await attempt("users", async () => (await ctx.appspace.users()).length),
    await attempt("intl", () => new Intl.DateTimeFormat("de-DE", { timeZone: "Europe/Berlin",
      dateStyle: "full" }).format(new Date(0)) + new Date().toString() + performance.now()),
    await attempt("structuredClone", () => structuredClone(new Map([[1, 2]])).size),
  ];
  for (const [name, f] of Object.entries(outbound)) results.push(await attempt(name, f));
  for (const [name, f] of Object.entries(refused)) results.push(await attempt(name, f));
  return results;
}

createApp({
  routes: [
    { method: "GET", path: "/", auth: "public", handler: async (ctx) =>
      Response.json(await everything(ctx)) },
    { method: "POST", path: "/upload", auth: "user", handler: async (ctx) => {
      const body = new Uint8Array(await ctx.request.arrayBuffer());
      const digest = await crypto.subtle.digest("SHA-256", body);
      await Deno.writeFile(`${ctx.dataPath}/upload.bin`, body);
      return Response.json({ length: body.length, digest: digest.byteLength });
    } },
    { method: "GET", path: "/stream", auth: "public", handler: () => {
      let i = 0;
      return new Response(new ReadableStream({ async pull(c) {
        if (i++ >= 20) { c.close(); return; }
        await new Promise((r) => setTimeout(r, 1)); c.enqueue(new Uint8Array(65536));
      } }));
    } },
    { method: "GET", path: "/ws", auth: "public", handler: (ctx) => {
      const { socket, response } = Deno.upgradeWebSocket(ctx.request);
      socket.onmessage = (e) => socket.send(typeof e.data === "string" ? "echo:" + e.data : e.data);
      return response;
    } },
    { method: "GET", path: "/throw", auth: "public", handler: () => { throw new Error("boom"); } },
    { method: "GET", path: "/static/*", auth: "public", static: "@app/public" },
  ],
  migrations: [
    { schema: 1,
      up: async (ctx) => { await Deno.writeTextFile(`${ctx.dataPath}/schema.txt`, "1"); },
      down: async (ctx) => { await Deno.remove(`${ctx.dataPath}/schema.txt`); } },
    { schema: 2,
      up: (ctx) => { const db = new DatabaseSync(`${ctx.dataPath}/m.db`);
        db.exec("CREATE TABLE IF NOT EXISTS m (v)"); db.close(); },
      down: async (ctx) => { await Deno.remove(`${ctx.dataPath}/m.db`); } },
  ],
});
"""
TOUR_WORKER = """
self.onmessage = (e) => {
  let a = 0, b = 1;
  for (let i = 0; i < e.data; i++) [a, b] = [b, a + b];
  self.postMessage(a);
};
"""
TOUR_FILES = {
    "app.ts": TOUR_APP,
    "worker.js": TOUR_WORKER,
    "public/index.html": "<!doctype html><title>tour</title>\n",
}
# The tour's outbound calls need an allowlist; the namespace has no route anywhere.
TOUR_ALLOW_NET = ("example.com", "93.184.215.14")

_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
_RESULT = re.compile(r"=\s+(-?\d+)(?:\s+/\*\s+(\d+) in strace's PID NS\s+\*/)?")
_SPAWNS = {"clone", "clone3", "fork", "vfork"}


def filtered_syscalls(trace: str) -> collections.Counter[str]:
    """Syscalls made under the seccomp filter in one `strace -f --pidns-translation` log: by
    a process after its `prctl(PR_SET_SECCOMP)` / `seccomp(SET_MODE_FILTER)` returned 0, and by
    every process or thread such a process started afterwards (filters are inherited)."""
    filtered: set[int] = set()
    loading: set[int] = set()  # a prctl(PR_SET_SECCOMP) not finished yet
    counts: collections.Counter[str] = collections.Counter()
    for line in trace.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        pid, name = int(match.group(1)), match.group(2) or match.group(3)
        resumed = match.group(2) is not None
        if pid in filtered and not resumed:
            counts[name] += 1
        loads = (name == "prctl" and "PR_SET_SECCOMP" in line) or (
            name == "seccomp" and "SECCOMP_SET_MODE_FILTER" in line
        )
        if "<unfinished ...>" in line:
            if loads:
                loading.add(pid)
            continue
        tail = line.rsplit(")", 1)[-1] if ")" in line else ""
        result = _RESULT.search(tail)
        ok = result is not None and int(result.group(1)) >= 0
        if name in _SPAWNS and pid in filtered and ok and int(result.group(1)) > 0:
            filtered.add(int(result.group(2) or result.group(1)))
        elif (loads or (resumed and pid in loading)) and ok:
            filtered.add(pid)
        if resumed:
            loading.discard(pid)
    return counts


def _wrapper(trace_dir: Path, bwrap: str) -> Path:
    script = trace_dir / "bwrap-strace"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {shutil.which('strace') or 'strace'} -f -qq --pidns-translation "
        f'-o "{trace_dir}/trace-$$.log" {bwrap} "$@"\n'
    )
    script.chmod(0o755)
    return script


def _supervisor_main(permissive: bool) -> None:
    """The supervisor, with the filter's default action set to allow when permissive."""
    if permissive:
        from sandbox.walls import seccomp

        seccomp.TRACE_PERMISSIVE = True
    from sandbox.__main__ import main

    sys.exit(main())


def _request(sock_path, route, method="GET", path="/", body=None, user=True, timeout=10.0):
    from tests.sandbox.fixtures import send_request

    headers = {"X-Dropserver-Route": str(route)}
    if user:
        headers.update(
            {
                "X-Dropserver-User-Id": "u1",
                "X-Dropserver-User-Name": "Tracer",
                "X-Dropserver-User-Permissions": '["edit","admin"]',
            }
        )
    try:
        status, _, data = send_request(sock_path, method, path, headers, body, timeout)
        return status, data
    except (OSError, TimeoutError) as exc:
        return 0, str(exc).encode()


def _websocket(sock_path: str, route: int) -> str:
    from websockets.sync.client import unix_connect

    headers = {"X-Dropserver-Route": str(route), "X-Dropserver-Host": "app.example.com"}
    try:
        with unix_connect(
            sock_path, "ws://app.example.com/ws", additional_headers=headers, open_timeout=10
        ) as ws:
            ws.send("hi")
            ws.send(b"\x00" * 70000)
            got = []
            with contextlib.suppress(TimeoutError):
                for _ in range(2):
                    got.append(ws.recv(timeout=3))
            return f"open, {len(got)} messages back"
    except Exception as exc:
        return f"websocket failed: {exc}"


def _route_path(path: str) -> str:
    return re.sub(r":\w+", "1", path).replace("*", "index.html")


def _exercise(client, app, *, allow_net=(), log=print):
    """Warm, app-init, migrate up and down, serve: every function route with GET (POST for
    non-GET), the WebSocket routes, then stop."""
    from sandbox import layout

    warm = client.run_once(app.job_spec(), "warm", timeout=120)
    log(f"  warm: ok={warm.ok}")
    routes = (warm.result or {}).get("routes", [])
    schemas = (warm.result or {}).get("migrations", [])
    spec = app.spec(allow_net=allow_net)
    layout.write_users(
        Path(spec.meta_dir), [{"id": "u1", "displayName": "Tracer", "permissions": ["edit"]}]
    )
    if schemas:
        top = max(schemas)
        for frm, to in ((0, top), (top, 0), (0, top)):
            ran = client.run_once(spec, "migrate", {"from": frm, "to": to}, timeout=60)
            log(f"  migrate {frm}->{to}: ok={ran.ok}")
    sock = client.ensure(spec)
    for route in routes:
        if route["kind"] != "function" or "hang" in route["path"]:
            continue
        path = _route_path(route["path"])
        if "ws" in route["path"] or "live" in route["path"]:
            log(f"  ws {path}: {_websocket(sock, route['index'])[:80]}")
            continue
        method = "GET" if route["method"] in ("GET", "HEAD") else route["method"]
        body = b'{"text": "traced", "name": "t", "message": "m"}' if method != "GET" else None
        status, data = _request(sock, route["index"], method, path, body)
        log(f"  {method} {path}: {status} {data[:160]!r}")
    client.stop(spec.id)
    return spec


APP_NAMES = ["tour", "gateway", "guestbook", "notes/1.0.0", "notes/2.0.0"]


def run_trace(
    permissive: bool = True, log=print, keep: bool = False, only: list[str] = APP_NAMES
) -> collections.Counter[str]:
    """Runs everything under strace and returns the filtered syscalls' counts."""
    from tests.gateway import app_files
    from tests.sandbox.fixtures import Supervisor, lay_out_app

    data_dir = Path(tempfile.mkdtemp(prefix="ds-trace-"))
    data_dir.chmod(0o711)
    trace_dir = data_dir / "traces"
    trace_dir.mkdir()
    trace_dir.chmod(0o1777)
    os.environ["DS_DATA_DIR"] = str(data_dir)
    from django.conf import settings

    settings.DS_DATA_DIR = data_dir
    env = dict(
        os.environ,
        DS_DATA_DIR=str(data_dir),
        DS_SANDBOX_BWRAP=str(_wrapper(trace_dir, settings.DS_SANDBOX_BWRAP)),
        DS_SANDBOX_START_TIMEOUT="60",
        DS_SANDBOX_PIDS="128",
        PYTHONPATH=str(REPO),
    )
    log_path = data_dir / "supervisor.log"
    cmd = [sys.executable, "-m", "sandbox.walls.seccomp_trace", "--supervisor"]
    if not permissive:
        cmd.append("--enforcing")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    sup = Supervisor(proc, data_dir, log_path, "")
    try:
        sup.wait_ready(30)
        apps = []
        for name in only:
            if name == "tour":
                apps.append((name, lay_out_app(TOUR_FILES), TOUR_ALLOW_NET))
            elif name == "gateway":
                apps.append(("gateway test app", _gateway_app(app_files, lay_out_app), ()))
            else:
                example = _example_app(REPO / "examples" / name, lay_out_app)
                apps.append((f"example {name}", example, ()))
        for name, app, allow_net in apps:
            log(f"{name}:")
            spec = _exercise(sup.client, app, allow_net=allow_net, log=log)
            if name == "tour":
                _tour_report(sup.client, spec, log)
    finally:
        with contextlib.suppress(Exception):
            sup.stop(30)
        if proc.poll() is None:
            proc.kill()
    counts: collections.Counter[str] = collections.Counter()
    for trace in sorted(trace_dir.glob("trace-*.log")):
        counts.update(filtered_syscalls(trace.read_text(errors="replace")))
    if keep:
        log(f"traces kept in {trace_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    return counts


def _tour_report(client, spec, log) -> None:
    """The tour's `/` route: what each feature returned (run again to print it in full)."""
    sock = client.ensure(spec)
    status, data = _request(sock, 0, timeout=60)
    log(f"  tour / -> {status}")
    with contextlib.suppress(ValueError):
        for item in json.loads(data):
            log(f"    {item['name']}: {item.get('value', item.get('error'))[:100]}")
    # A large upload, a streamed answer, keep-alive, a handler that throws.
    log(f"  upload: {_request(sock, 1, 'POST', '/upload', os.urandom(3_000_000))[0]}")
    log(f"  stream: {len(_request(sock, 2, path='/stream')[1])} bytes")
    log(f"  throw: {_request(sock, 4, path='/throw')[0]}")
    client.stop(spec.id)


def _gateway_app(app_files, lay_out_app):
    app = lay_out_app(app_files.FILES)
    for rel, data in app_files.BINARY_FILES.items():
        (app.files_dir / rel).write_bytes(data)
        (app.files_dir / rel).chmod(0o644)
    return app


def _example_app(folder: Path, lay_out_app):
    files = {}
    for path in folder.rglob("*"):
        if path.is_file():
            with contextlib.suppress(UnicodeDecodeError):
                files[str(path.relative_to(folder))] = path.read_text()
    entry = json.loads((folder / "dropapp.json").read_text()).get("entrypoint", "app.ts")
    return lay_out_app(files, entrypoint=entry)


def _in_private_netns() -> bool:
    return os.environ.get("DS_TRACE_NETNS") == str(os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enforcing", action="store_true", help="trace under the real filter")
    parser.add_argument("--supervisor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and traces")
    parser.add_argument(
        "--only", choices=APP_NAMES, action="append", help="trace only this app (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.supervisor:
        _supervisor_main(permissive=not args.enforcing)
    if os.geteuid() != 0 or not shutil.which("strace"):
        print("needs root and strace (apt-get install -y strace)", file=sys.stderr)
        return 2
    if not _in_private_netns():
        # Re-run in an empty network namespace: whatever an app tries to reach, nothing leaves.
        inner = [sys.executable, "-m", "sandbox.walls.seccomp_trace", *(argv or sys.argv[1:])]
        script = 'DS_TRACE_NETNS=$$ exec "$@"'
        return subprocess.call(["unshare", "--net", "--", "sh", "-c", script, "sh", *inner])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")
    sys.path.insert(0, str(REPO))
    from sandbox.walls import seccomp_allowlist

    log = (lambda *_: None) if args.json else print
    started = time.monotonic()
    counts = run_trace(
        permissive=not args.enforcing, log=log, keep=args.keep, only=args.only or APP_NAMES
    )
    allowed = set(seccomp_allowlist.allowed_syscalls())
    refused = set(seccomp_allowlist.refused_syscalls())
    missing = sorted(set(counts) - allowed - refused)
    unused = sorted(allowed - set(counts))
    if args.json:
        print(json.dumps({"counts": counts, "missing": missing, "unused": unused}, indent=1))
    else:
        print(f"\n{len(counts)} syscalls under the filter ({time.monotonic() - started:.0f} s):")
        for name, n in sorted(counts.items()):
            note = "" if name in allowed else "   refused by design" if name in refused else ""
            note = note or ("" if name in allowed else "   NOT IN THE ALLOWLIST")
            print(f"  {name:24} {n:8}{note}")
        print(f"\nmissing from the allowlist: {' '.join(missing) or 'none'}")
        print(f"on the list, unused by these traces: {' '.join(unused) or 'none'}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
