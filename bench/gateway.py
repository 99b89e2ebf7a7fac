"""Gateway benchmark: a function route through the whole stack (Daphne + gateway + sandbox) vs
the same request straight to the sandbox's unix socket vs a hello-world ASGI app on the same
Daphne; and a static route. p50/p99 latency and requests/s at a few concurrencies, as ratios;
and the function route served by one Daphne process per core on one port (DS_WEB_PROCESSES)
against one process.

Load generators: `wrk` (Debian's; C, one thread) for the TCP targets, and a small asyncio
keep-alive generator (`load`) for all targets including the unix socket, which wrk cannot
reach. The added latency is measured with the same generator on both sides (one connection).
Run as root: `make bench BENCH_ARGS=gateway` or `python -m bench gateway`.
"""

from __future__ import annotations

import asyncio
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
from django.db import connection

from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError
from sandbox.spec import SandboxSpec

REPO = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("BENCH_GATEWAY_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "3"))
CONCURRENCY = (1, 8, 32)
WEB_PROCESSES = max(2, os.cpu_count() or 1)  # serve's default DS_WEB_PROCESSES: the cores
APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
  { method: "GET", path: "/static/*", auth: "public", static: "@app/public" },
] });
"""


async def hello_app(scope, receive, send):
    """The baseline: the smallest ASGI app, on the same Daphne."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


# --- an asyncio keep-alive load generator -------------------------------------------------------


async def _client(open_conn, request: bytes, deadline: float, samples: list[float]) -> None:
    reader, writer = await open_conn()
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            samples.append(time.perf_counter() - t0)
    finally:
        writer.close()


def load(target: tuple, request: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """Requests/s and latency percentiles from `concurrency` kept-open connections."""

    async def main() -> list[float]:
        if target[0] == "unix":

            def open_conn():
                return asyncio.open_unix_connection(target[1])
        else:

            def open_conn():
                return asyncio.open_connection("127.0.0.1", target[1])

        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(open_conn, request, deadline, samples) for _ in range(concurrency))
        )
        return samples

    t0 = time.perf_counter()
    samples = asyncio.run(main())
    return _summary(samples, time.perf_counter() - t0)


def _summary(samples: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "rps": len(samples) / elapsed,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, host: str, path: str, concurrency: int, seconds: float, server_pid: int | list[int]
) -> dict[str, float]:
    pids = server_pid if isinstance(server_pid, list) else [server_pid]
    cpu0 = sum(_cpu_seconds(pid) for pid in pids)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Host: {host}:{port}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * _UNITS[unit]

    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_us = (sum(_cpu_seconds(pid) for pid in pids) - cpu0) / max(requests, 1) * 1e6
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "cpu_us": cpu_us}


# --- the stack ------------------------------------------------------------------------------


class Stack:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="ds-bench-gw-"))
        self.root.chmod(0o711)
        self.uid_base = 900_000_000 + secrets.randbelow(10**5) * 1000
        settings.DS_DATA_DIR = self.root
        settings.DS_SANDBOX_UID_BASE = self.uid_base
        self.processes: list[subprocess.Popen] = []
        self.db_old_name: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return dict(
            os.environ,
            DS_DATA_DIR=str(self.root),
            DS_SANDBOX_UID_BASE=str(self.uid_base),
            PYTHONPATH=str(REPO),
            SECRET_KEY=settings.SECRET_KEY,
            **extra,
        )

    def spawn(
        self, argv: list[str], name: str, pass_fds: tuple[int, ...] = (), **env: str
    ) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
        self.processes.append(process)
        return process

    def start_supervisor(self) -> SandboxClient:
        self.spawn([sys.executable, "-m", "sandbox"], "supervisor", DS_SANDBOX_IDLE_TIMEOUT="3600")
        client = SandboxClient(layout.control_socket_path())
        _wait(lambda: _try(client.ping), "the supervisor")
        return client

    def database(self) -> str:
        """A database of its own (created and migrated here, dropped at the end)."""
        test = connection.settings_dict.setdefault("TEST", {})
        if connection.vendor == "sqlite":
            test["NAME"] = str(self.root / "bench.sqlite3")
        else:
            test["NAME"] = f"ds_bench_gateway_{secrets.token_hex(4)}"
        self.db_old_name = connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        db = connection.settings_dict
        if connection.vendor == "sqlite":
            return f"sqlite:///{db['NAME']}"
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"

    def daphnes(
        self, app: str, name: str, count: int = 1, *, as_serve: bool = True, **env: str
    ) -> tuple[int, list[int]]:
        """`count` Daphne processes on one port, each on a socket of its own as `serve` runs
        DS_WEB_PROCESSES (serve.listen_sockets).

        `as_serve`: Daphne's command line exactly as serve builds it (serve.web_argv: its own
        access log off, the application writes one line per request); otherwise Daphne as it
        ships (its access log on), for the hello-world baselines."""
        from dropserver_site.management.commands.serve import listen_sockets, web_argv

        port = _free_port()
        pids = []
        for n, listener in enumerate(listen_sockets("127.0.0.1", port, count)):
            fd = listener.fileno()
            if as_serve:
                argv = web_argv(listener)
                assert argv[-1] == "dropserver_site.asgi:application"
                argv[-1] = app
            else:
                argv = [sys.executable, "-m", "daphne", "--fd", str(fd), "--no-server-name", app]
            pids.append(
                self.spawn(argv, f"{name}-{n}", pass_fds=(fd,), DS_PORT=str(port), **env).pid
            )
            listener.close()  # the child holds it
        _wait(
            lambda: _try(lambda: socket.create_connection(("127.0.0.1", port)).close()),
            f"daphne ({name})",
        )
        return port, pids

    def daphne(self, app: str, name: str, **kwargs) -> tuple[int, int]:
        port, pids = self.daphnes(app, name, 1, **kwargs)
        return port, pids[0]

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.db_old_name is not None:
            connection.close()
            connection.creation.destroy_test_db(self.db_old_name, verbosity=0)
        shutil.rmtree(self.root, ignore_errors=True)


def _try(check) -> bool:
    try:
        check()
        return True
    except (OSError, SandboxError):
        return False


def _wait(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, host: str, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _make_appspace(stack: Stack, client: SandboxClient):
    from accounts.models import User
    from appspaces.models import App, Appspace, AppVersion

    app_id, version = str(uuid.uuid4()), "1.0.0"
    files = layout.app_files_dir(app_id, version)
    (files / "public").mkdir(parents=True)
    for d in (layout.apps_dir(), files.parent.parent, files.parent):
        d.chmod(0o711)
    (files / "app.ts").write_text(APP)
    (files / "public" / "hello.txt").write_text("hello")
    for path in (files, files / "public"):
        path.chmod(0o755)
    for path in (files / "app.ts", files / "public" / "hello.txt"):
        path.chmod(0o644)
    warm = client.run_once(
        SandboxSpec.for_app_version(
            job_id="bench-gw-warm", app_id=app_id, version=version, uid=stack.uid_base + 999
        ),
        "warm",
    )
    assert warm.ok, warm
    owner = User.objects.create_user("bench@example.com", secrets.token_urlsafe(16))
    app = App.objects.create(public_id=uuid.UUID(app_id), owner=owner, name="bench")
    app_version = AppVersion.objects.create(
        app=app,
        version=version,
        version_key="1.0.0",
        manifest={"name": "bench"},
        routes=warm.result["routes"],
        entrypoint="app.ts",
    )
    return Appspace.objects.create(
        owner=owner,
        app=app,
        app_version=app_version,
        subdomain="bench",
        status=Appspace.Status.ACTIVE,
        memory_mb=256,
        cpu_percent=100,
        disk_mb=100,
    )


def run(options) -> None:
    if os.geteuid() != 0:
        raise SystemExit("the gateway benchmark needs root (it starts real sandboxes)")
    if shutil.which("wrk") is None:
        raise SystemExit("install wrk: apt-get install -y wrk (scripts/system-deps.sh test)")
    stack = Stack()
    results: dict[str, dict] = {}
    try:
        client = stack.start_supervisor()
        db_url = stack.database()
        appspace = _make_appspace(stack, client)
        gw_port, gw_pid = stack.daphne(
            "dropserver_site.asgi:application", "gateway", DATABASE_URL=db_url
        )
        host = f"bench.{settings.DS_DOMAIN}"
        assert _get(gw_port, f"{host}:{gw_port}", "/").endswith(b"hello")  # starts the sandbox
        assert _get(gw_port, f"{host}:{gw_port}", "/static/hello.txt").endswith(b"hello")
        sock = client.ensure(_spec(appspace))
        # Both sides log one access line per request: the gateway its own (serve turns
        # Daphne's off), hello-world Daphne's, as Daphne ships. `hello tuned` logs nothing and
        # runs in a process tuned as the gateway's (dropserver_site/tuning.py): the strictest.
        hello_port, hello_pid = stack.daphne(
            "bench.gateway:hello_app", "hello", as_serve=False, DATABASE_URL=db_url
        )
        quiet_port, quiet_pid = stack.daphne(
            "bench._hello_tuned:app", "hello-tuned", DATABASE_URL=db_url
        )
        # What DS_WEB_PROCESSES buys: the same gateway, one process per core on one port.
        multi_port, multi_pids = stack.daphnes(
            "dropserver_site.asgi:application", "gateway-multi", WEB_PROCESSES, DATABASE_URL=db_url
        )
        assert _get(multi_port, f"{host}:{multi_port}", "/").endswith(b"hello")

        gw_request = f"GET / HTTP/1.1\r\nHost: {host}:{gw_port}\r\n\r\n".encode()
        direct_request = (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Dropserver-Route: 0\r\n"
            f"X-Dropserver-Host: {host}\r\nX-Dropserver-Scheme: http\r\n"
            "X-Dropserver-Params: {}\r\n\r\n"
        ).encode()
        hello_request = f"GET / HTTP/1.1\r\nHost: x:{hello_port}\r\n\r\n".encode()
        targets = (
            ("function", ("tcp", gw_port), gw_request),
            ("direct", ("unix", sock), direct_request),
            ("hello", ("tcp", hello_port), hello_request),
        )
        for _name, target, request in targets:
            load(target, request, 4, 1.0)  # warm up: pools, caches, Deno's JIT
        # Rounds interleave the targets, so a noisy minute on a shared host hits all of them.
        rounds: list[dict[str, dict]] = []
        for _ in range(ROUNDS):
            r: dict[str, dict] = {}
            for name, target, request in targets:
                r[f"{name} asyncio c1"] = load(target, request, 1, SECONDS)
                r[f"{name} asyncio c8"] = load(target, request, 8, SECONDS)
            for c in CONCURRENCY:
                r[f"hello wrk c{c}"] = wrk(hello_port, "x", "/", c, SECONDS, hello_pid)
                r[f"function wrk c{c}"] = wrk(gw_port, host, "/", c, SECONDS, gw_pid)
                r[f"static wrk c{c}"] = wrk(gw_port, host, "/static/hello.txt", c, SECONDS, gw_pid)
            r["hello tuned wrk c32"] = wrk(quiet_port, "x", "/", 32, SECONDS, quiet_pid)
            r[f"function x{WEB_PROCESSES} wrk c32"] = wrk(
                multi_port, host, "/", 32, SECONDS, multi_pids
            )
            r[f"static x{WEB_PROCESSES} wrk c32"] = wrk(
                multi_port, host, "/static/hello.txt", 32, SECONDS, multi_pids
            )
            rounds.append(r)
        results = {
            name: {k: statistics.median(r[name][k] for r in rounds) for k in rounds[0][name]}
            for name in rounds[0]
        }
    finally:
        stack.cleanup()
    _report(results)


def _spec(appspace) -> SandboxSpec:
    from appspaces.sandboxes import appspace_spec

    return appspace_spec(appspace)


def _report(r: dict[str, dict]) -> None:
    print(
        f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; median of "
        f"{ROUNDS} rounds of {SECONDS:g} s per run; wrk -t1; asyncio = this module's keep-alive"
        " generator (the only one that reaches a unix socket)"
    )
    print(f"{'run':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'Daphne CPU us/req':>18}")
    for name, v in r.items():
        cpu = f"{v['cpu_us']:18.0f}" if "cpu_us" in v else ""
        print(f"{name:28} {v['rps']:9.0f} {v['p50']:8.3f} {v['p99']:8.3f} {cpu}")
    added = r["function asyncio c1"]["p50"] - r["direct asyncio c1"]["p50"]
    print("ratios (target):")
    print(f"  added p50, gateway vs direct socket, 1 connection: {added:.3f} ms  (<= 1 ms)")
    for c in CONCURRENCY:
        hello = r[f"hello wrk c{c}"]["rps"]
        # The targets are for a saturated server (32 connections); with fewer, the round trip
        # to the sandbox bounds the function route, not the gateway's CPU.
        targets = ("(>= 0.60)", "(>= 0.80)") if c == 32 else ("", "")
        function = r[f"function wrk c{c}"]["rps"] / hello
        static = r[f"static wrk c{c}"]["rps"] / hello
        print(
            f"  c={c:<3} function/hello {function:5.2f} {targets[0]:9}"
            f"   static/hello {static:5.2f} {targets[1]}"
        )
    quiet = r["hello tuned wrk c32"]["rps"]
    print(
        f"  c=32  against hello-world tuned as the gateway, logging nothing: function/hello "
        f"{r['function wrk c32']['rps'] / quiet:5.2f}   static/hello "
        f"{r['static wrk c32']['rps'] / quiet:5.2f}"
    )
    # What more processes can add is bounded by the cores the rest does not use: wrk takes a
    # share of them, and for function routes the sandbox another.
    for route in ("function", "static"):
        multi = r[f"{route} x{WEB_PROCESSES} wrk c32"]["rps"] / r[f"{route} wrk c32"]["rps"]
        print(
            f"  c=32  {WEB_PROCESSES} web processes / 1 ({route} route): {multi:5.2f}"
            f"  (wrk{' and the sandbox' if route == 'function' else ''} on the same"
            f" {os.cpu_count()} cores)"
        )
    direct = r["direct asyncio c8"]["rps"]
    print(
        f"  asyncio c=8: function/direct {r['function asyncio c8']['rps'] / direct:5.2f}"
        f"   hello/direct {r['hello asyncio c8']['rps'] / direct:5.2f}"
    )
