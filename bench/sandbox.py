"""Sandbox benchmark: cold start, idle memory and sandboxes per host, against bare Deno.

Cold start = a request to a stopped appspace until its first response byte, through the
supervisor's `ensure` and a raw HTTP request on the unix socket (what the gateway does). The
baseline is the same Deno server started bare (no bubblewrap, no supervisor, warm DENO_DIR).
Run as root: `make bench` or `python -m bench sandbox`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.conf import settings

from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError
from sandbox.spec import Limits, SandboxSpec
from sandbox.walls import cgroups, launcher

REPO = Path(__file__).resolve().parent.parent
SERVER_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
] });
"""
BARE_SERVER = """
const path = Deno.args[0];
Deno.serve({ path, onListen() { console.log("ready"); } }, () => new Response("hello"));
"""
BARE_HELLO = 'console.log("hello");\n'
REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\nX-Dropserver-Route: 0\r\nConnection: close\r\n\r\n"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_byte(sock_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(REQUEST)
        if not s.recv(1):
            raise RuntimeError("no response")


class Bench:
    def __init__(self, options):
        self.n = options.iterations
        self.max_sandboxes = options.max_sandboxes
        self.root = Path(tempfile.mkdtemp(prefix="ds-bench-"))
        self.root.chmod(0o711)
        settings.DS_DATA_DIR = self.root
        self.uids = iter(range(400_000_000 + secrets.randbelow(10**6) * 1000, 2**31 - 2))
        self.supervisor: subprocess.Popen | None = None

    # --- setup ------------------------------------------------------------------------------

    def start_supervisor(self) -> SandboxClient:
        env = dict(
            os.environ,
            DS_DATA_DIR=str(self.root),
            PYTHONPATH=str(REPO),
            DS_SANDBOX_MAX_RUNNING=str(self.max_sandboxes + 10),
            DS_SANDBOX_IDLE_TIMEOUT="3600",
        )
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "sandbox"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "supervisor.log", "wb"),  # noqa: SIM115
        )
        client = SandboxClient(layout.control_socket_path())
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return client
            except SandboxError:
                if time.monotonic() > deadline or self.supervisor.poll() is not None:
                    raise
                time.sleep(0.05)

    def app(self, version: str) -> tuple[str, str]:
        app_id = str(uuid.uuid4())
        files = layout.app_files_dir(app_id, version)
        files.mkdir(parents=True)
        for d in (layout.apps_dir(), files.parent.parent, files.parent):
            d.chmod(0o711)
        files.chmod(0o755)
        (files / "app.ts").write_text(SERVER_APP)
        (files / "app.ts").chmod(0o644)
        return app_id, version

    def spec(self, app: tuple[str, str], limits: Limits | None = None) -> SandboxSpec:
        return SandboxSpec.for_appspace(
            appspace_id=str(uuid.uuid4()),
            app_id=app[0],
            version=app[1],
            uid=next(self.uids),
            limits=limits or Limits.defaults(),
        )

    # --- measurements -----------------------------------------------------------------------

    def bare_deno(self) -> dict[str, float]:
        """Deno alone: a hello file to its first output byte, and the same server as the
        sandboxes to its first response byte; both with a warm emit cache."""
        work = self.root / "bare"
        work.mkdir()
        (work / "hello.ts").write_text(BARE_HELLO)
        (work / "server.ts").write_text(BARE_SERVER)
        deno = launcher.deno_path()
        env = {"DENO_DIR": str(work / "cache"), "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
        sock = str(work / "http.sock")
        server_argv = [
            deno,
            "run",
            "--no-prompt",
            "--no-config",
            "--no-lock",
            f"--allow-read={sock}",
            f"--allow-write={sock}",
            f"--allow-net=unix:{sock}",
            str(work / "server.ts"),
            sock,
        ]
        hello_argv = [deno, "run", "--no-config", "--no-lock", str(work / "hello.ts")]
        subprocess.run(hello_argv, env=env, capture_output=True, check=True)  # warm the cache
        hello, server = [], []
        for _ in range(self.n):
            t0 = time.perf_counter()
            p = subprocess.Popen(hello_argv, env=env, stdout=subprocess.PIPE)
            assert p.stdout is not None
            p.stdout.read(1)
            hello.append(time.perf_counter() - t0)
            p.wait()
        for i in range(self.n + 1):
            Path(sock).unlink(missing_ok=True)
            t0 = time.perf_counter()
            p = subprocess.Popen(server_argv, env=env, stdout=subprocess.PIPE)
            assert p.stdout is not None
            p.stdout.readline()
            first_byte(sock)
            if i:  # the first run emits the server's cache
                server.append(time.perf_counter() - t0)
            if i == self.n:
                idle = self.bare_idle_memory(p.pid)
            p.send_signal(signal.SIGKILL)
            p.wait()
        return {
            "hello_p50": statistics.median(hello),
            "server_p50": statistics.median(server),
            "server_p95": pct(server, 0.95),
            "idle_bytes": idle,
        }

    def bare_idle_memory(self, pid: int) -> float:
        time.sleep(1.0)
        return float(_rss(pid))

    def cold_start(self, client: SandboxClient, spec: SandboxSpec, n: int) -> list[float]:
        client.ensure(spec)  # the first start also creates the dirs; not counted
        samples = []
        for _ in range(n):
            client.stop(spec.id)
            t0 = time.perf_counter()
            first_byte(client.ensure(spec))
            samples.append(time.perf_counter() - t0)
        client.stop(spec.id)
        self.phases = start_phases(layout.sandbox_log_dir(spec.id) / "sandbox.log")
        return samples

    def hot_ensure(self, client: SandboxClient, spec: SandboxSpec) -> float:
        client.ensure(spec)
        t0 = time.perf_counter()
        for _ in range(1000):
            client.ensure(spec)
        per_call = (time.perf_counter() - t0) / 1000
        client.stop(spec.id)
        return per_call

    def idle_memory(self, client: SandboxClient, spec: SandboxSpec) -> dict[str, float]:
        first_byte(client.ensure(spec))
        time.sleep(1.0)
        usage = client.usage(spec.id)
        procs = (self.cgroup_dir("memory", spec.id) / "cgroup.procs").read_text().split()
        pid = max(int(p) for p in procs)  # Deno: the last of bubblewrap, its init and Deno
        rss = _rss(pid)
        client.stop(spec.id)
        return {"cgroup": usage["memory_bytes"], "rss": rss}

    def cgroup_dir(self, controller: str, sandbox_id: str) -> Path:
        parent = f"{settings.DS_SANDBOX_CGROUP_PARENT}/{layout.instance_name()}"
        return Path("/sys/fs/cgroup") / controller / parent / f"sb-{sandbox_id}"

    def capacity(self, client: SandboxClient, app: tuple[str, str]) -> dict[str, object]:
        limits = Limits.defaults()
        started: list[SandboxSpec] = []
        reason = f"stopped at --max-sandboxes={self.max_sandboxes}"
        t0 = time.perf_counter()
        for _ in range(self.max_sandboxes):
            spec = self.spec(app, limits)
            try:
                first_byte(client.ensure(spec))
            except SandboxError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                break
            started.append(spec)
        elapsed = time.perf_counter() - t0
        running = [s for s in client.list() if s["state"] == "running"]
        total = sum(client.usage(s.id).get("memory_bytes", 0) for s in started)
        for spec in started:
            client.stop(spec.id)
        return {
            "count": len(running),
            "reason": reason,
            "total_bytes": total,
            "per_sandbox": total / max(len(started), 1),
            "seconds": elapsed,
        }

    def cleanup(self) -> None:
        if self.supervisor and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            self.supervisor.wait(60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_phases(log: Path) -> dict[str, float]:
    """Median prepare/spawn/ready times from the supervisor's "started ... in" log lines."""
    found = re.findall(r"prepare ([\d.]+), spawn ([\d.]+), ready ([\d.]+)", log.read_text())
    columns = list(zip(*[[float(x) for x in row] for row in found], strict=True))
    names = ("prepare", "spawn", "ready")
    return {k: statistics.median(v) for k, v in zip(names, columns, strict=True)}


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run(options) -> None:
    if os.geteuid() != 0:
        raise SystemExit("the sandbox benchmark needs root (it starts real sandboxes)")
    bench = Bench(options)
    mb = 1024 * 1024
    try:
        client = bench.start_supervisor()
        bare = bench.bare_deno()
        warm_app, cold_app = bench.app("1.0.0"), bench.app("2.0.0")
        warm = client.run_once(
            SandboxSpec.for_app_version(
                job_id="bench-warm", app_id=warm_app[0], version=warm_app[1], uid=next(bench.uids)
            ),
            "warm",
        )
        assert warm.ok, warm
        warm_samples = bench.cold_start(client, bench.spec(warm_app), bench.n)
        phases = bench.phases
        cold_samples = bench.cold_start(client, bench.spec(cold_app), max(bench.n // 3, 5))
        hot = bench.hot_ensure(client, bench.spec(warm_app))
        idle = bench.idle_memory(client, bench.spec(warm_app))
        available = mem_available()
        cap = bench.capacity(client, warm_app)
    finally:
        bench.cleanup()

    p50, p95 = statistics.median(warm_samples), pct(warm_samples, 0.95)
    by_memory = (available - settings.DS_SANDBOX_MIN_FREE_MB * mb) / max(idle["cgroup"], 1)
    print(
        f"host: {os.cpu_count()} CPUs, {available / mb / 1024:.1f} GiB available, "
        f"cgroups {cgroups.probe('x').version}, {options.iterations} samples"
    )
    print("baseline (bare Deno 2.9.8, warm DENO_DIR, no sandbox):")
    print(f"  hello file, spawn to first stdout byte   p50 {bare['hello_p50'] * 1000:6.1f} ms")
    print(
        f"  Deno.serve on a unix socket, first byte  p50 {bare['server_p50'] * 1000:6.1f} ms"
        f"   p95 {bare['server_p95'] * 1000:6.1f} ms"
    )
    print(f"  idle server RSS                              {bare['idle_bytes'] / mb:6.1f} MB")
    print("sandbox (supervisor ensure + bubblewrap + cgroups + harness, raw HTTP on the socket):")
    print(
        f"  cold start, warmed emit cache   p50 {p50 * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms"
        f"   = {p50 / bare['server_p50']:.2f}x bare server  (target p50 <= 100 ms)"
    )
    print(
        f"    in the supervisor (p50): prepare {phases['prepare']:.1f} ms, spawn (fork, cgroup "
        f"join, exec) {phases['spawn']:.1f} ms, bubblewrap + Deno to ready {phases['ready']:.1f} ms"
    )
    print(
        f"  cold start, no emit cache       p50 {statistics.median(cold_samples) * 1000:6.1f} ms"
        f"  p95 {pct(cold_samples, 0.95) * 1000:6.1f} ms"
    )
    print(f"  ensure of a running sandbox     {hot * 1e6:6.0f} us per call (sync client)")
    print(
        f"  idle memory (memory cgroup)     {idle['cgroup'] / mb:6.1f} MB"
        f"  (target <= 40 MB); Deno RSS {idle['rss'] / mb:.1f} MB"
        f" = {idle['rss'] / bare['idle_bytes']:.2f}x bare RSS"
    )
    print(
        f"  sandboxes running at once       {cap['count']} ({cap['reason']}); "
        f"{cap['per_sandbox'] / mb:.1f} MB each, started in {cap['seconds']:.1f}s"
    )
    print(
        f"  memory bound (available - floor) / idle:  ~{by_memory:.0f} sandboxes;"
        f" running cap DS_SANDBOX_MAX_RUNNING default {settings.DS_SANDBOX_MAX_RUNNING}"
    )
