"""Fair-shares benchmark: a neighbour's small-file reads next to a noisy appspace (IO limits),
and the platform and a quiet appspace next to CPU burners at their caps (instance ceiling).

Each figure is a ratio against the same measurement with no noisy app, in the same run.
IO: the neighbour reads 200 files of 4 KB from disk (the host drops them from the page cache
first) while the noisy app writes 4 MB chunks with fdatasync as fast as it may, once with
the default IO limits (DS_APPSPACE_DEFAULT_IO_*) and once unlimited. Ceiling: 4 appspaces
burn CPU at 100 % of a core each under the instance ceiling (default: CPUs minus half a core);
the "platform" is a host process doing a fixed 20 ms of CPU work, and the quiet appspace
answers a hello. Run as root: `python -m bench fairness`.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.sandbox import Bench, pct
from sandbox.spec import Limits

NEIGHBOUR_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
  { method: "GET", path: "/small", auth: "public", handler: async (ctx) => {
      let n = 0;
      for (let i = 0; i < 200; i++) n += (await Deno.readFile(`${ctx.dataPath}/f${i}`)).length;
      return new Response(String(n));
  } },
] });
"""
NOISY_APP = """
import { createApp } from "@dropserver/app";
let running = false;
async function noise(path) {
  const buf = new Uint8Array(4 * 1024 * 1024).fill(7);
  for (;;) {
    const f = await Deno.open(path, { write: true, create: true, truncate: true });
    await f.write(buf); await f.syncData(); f.close();
  }
}
function burn() { for (;;) { Math.sqrt(Math.random()); } }
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
  { method: "GET", path: "/noise", auth: "public", handler: (ctx) => {
      if (!running) { running = true; noise(`${ctx.dataPath}/noise.bin`); }
      return new Response("started");
  } },
  { method: "GET", path: "/burn", auth: "public",
    handler: () => { burn(); return new Response("never"); } },
] });
"""


def request(sock: str, path: str, timeout: float = 60.0) -> bytes:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(sock)
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Dropserver-Route: 1\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def fire(sock: str, path: str) -> None:
    """Send a request to route 2 (/burn) and do not wait for its answer (it never comes)."""
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Dropserver-Route: 2\r\n\r\n".encode())
    _kept.append(s)


_kept: list = []


def app_with(bench: Bench, source: str) -> tuple[str, str]:
    from sandbox import layout

    app = bench.app("1.0.0")
    (layout.app_files_dir(*app) / "app.ts").write_text(source)
    return app


def seed_small_files(spec) -> list[Path]:
    data = Path(spec.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, spec.uid, spec.uid)
    files = []
    for i in range(200):
        path = data / f"f{i}"
        path.write_bytes(os.urandom(4096))
        os.chown(path, spec.uid, spec.uid)
        files.append(path)
    return files


def drop_cache(files: list[Path]) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def small_reads(sock: str, files: list[Path], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        drop_cache(files)
        t0 = time.perf_counter()
        body = request(sock, "/small")
        samples.append(time.perf_counter() - t0)
        assert body.endswith(str(200 * 4096).encode()), body[-200:]
    return samples


def host_work() -> float:
    """A fixed amount of CPU work in this (host, uncapped) process: the platform's stand-in."""
    t0 = time.perf_counter()
    x = 0
    for i in range(400_000):
        x += i * i
    return time.perf_counter() - t0


def sandboxes_cpu_percent(seconds: float = 2.0) -> float:
    """CPU used by all sandboxes together (the instance group's cpuacct), in % of one core."""
    from django.conf import settings

    from sandbox import layout

    group = f"{settings.DS_SANDBOX_CGROUP_PARENT}/{layout.instance_name()}"
    v1 = Path("/sys/fs/cgroup/cpuacct") / group / "cpuacct.usage"
    if not v1.exists():
        return float("nan")
    first = int(v1.read_text())
    time.sleep(seconds)
    return (int(v1.read_text()) - first) / (seconds * 1e9) * 100


def fmt(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:.1f} ms, p95 {pct(samples, 0.95) * 1000:.1f} ms"


def io_round(bench: Bench, client, limits: Limits | None, rounds: int) -> dict[str, list[float]]:
    neighbour = bench.spec(app_with(bench, NEIGHBOUR_APP))
    files = seed_small_files(neighbour)
    sock = client.ensure(neighbour)
    request(sock, "/")
    quiet = small_reads(sock, files, rounds)
    noisy_spec = bench.spec(app_with(bench, NOISY_APP), limits)
    Path(noisy_spec.data_dir).mkdir(parents=True, exist_ok=True)
    os.chown(noisy_spec.data_dir, noisy_spec.uid, noisy_spec.uid)
    noisy_sock = client.ensure(noisy_spec)
    request(noisy_sock, "/noise")
    time.sleep(1.0)
    loud = small_reads(sock, files, rounds)
    client.stop(noisy_spec.id)
    client.stop(neighbour.id)
    return {"quiet": quiet, "noisy": loud}


def run(options) -> None:
    io(options)
    ceiling_round(options, "off (sandboxes may use 400 %)", "400")
    ceiling_round(options, "at the default (CPUs minus half a core)", "0")


def io(options) -> None:
    bench = Bench(options)
    rounds = max(5, min(options.iterations, 15))
    try:
        client = bench.start_supervisor()
        defaults = Limits.defaults()
        from django.conf import settings

        limited = Limits(
            **{
                **vars(defaults),
                "io_read_mbps": settings.DS_APPSPACE_DEFAULT_IO_READ_MBPS,
                "io_write_mbps": settings.DS_APPSPACE_DEFAULT_IO_WRITE_MBPS,
                "io_read_iops": settings.DS_APPSPACE_DEFAULT_IO_READ_IOPS,
                "io_write_iops": settings.DS_APPSPACE_DEFAULT_IO_WRITE_IOPS,
            }
        )
        print(
            f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"neighbour: 200 x 4 KB cold reads, {rounds} rounds"
        )
        for label, limits in (
            ("unlimited noisy app", defaults),
            ("noisy app at the defaults", limited),
        ):
            r = io_round(bench, client, limits, rounds)
            ratio = statistics.median(r["noisy"]) / statistics.median(r["quiet"])
            print(
                f"IO, {label}: alone {fmt(r['quiet'])}; next to it {fmt(r['noisy'])}; "
                f"ratio p50 {ratio:.2f}"
            )

    finally:
        for s in _kept:
            s.close()
        bench.cleanup()


def ceiling_round(options, label: str, cpu_percent: str) -> None:
    """4 CPU burners at 100 % each under a supervisor whose instance ceiling is `cpu_percent`."""
    os.environ["DS_SANDBOXES_CPU_PERCENT"] = cpu_percent
    bench = Bench(options)
    rounds = max(5, min(options.iterations, 15))
    defaults = Limits.defaults()
    try:
        client = bench.start_supervisor()
        quiet = bench.spec(app_with(bench, NOISY_APP))
        qsock = client.ensure(quiet)
        base_host = [host_work() for _ in range(rounds * 2)]
        base_quiet = []
        for _ in range(rounds * 2):
            t0 = time.perf_counter()
            request(qsock, "/")
            base_quiet.append(time.perf_counter() - t0)
        burners = []
        for _ in range(4):
            spec = bench.spec(
                app_with(bench, NOISY_APP), Limits(**{**vars(defaults), "cpu_percent": 100})
            )
            fire(client.ensure(spec), "/burn")
            burners.append(spec)
        time.sleep(2.0)
        used = sandboxes_cpu_percent()
        loud_host = [host_work() for _ in range(rounds * 2)]
        loud_quiet = []
        for _ in range(rounds * 2):
            t0 = time.perf_counter()
            request(qsock, "/")
            loud_quiet.append(time.perf_counter() - t0)
        print(f"ceiling {label}: all sandboxes used {used:.0f} % of one core")
        print(
            f"ceiling {label}: 4 burners at 100 % each; platform work alone {fmt(base_host)}, "
            f"with burners {fmt(loud_host)}, ratio p50 "
            f"{statistics.median(loud_host) / statistics.median(base_host):.2f}"
        )
        print(
            f"ceiling {label}: quiet appspace hello alone {fmt(base_quiet)}, with burners "
            f"{fmt(loud_quiet)}, p95 with burners {pct(loud_quiet, 0.95) * 1000:.0f} ms"
        )
        for spec in burners:
            client.stop(spec.id)
        client.stop(quiet.id)
    finally:
        for s in _kept:
            s.close()
        _kept.clear()
        bench.cleanup()
        os.environ.pop("DS_SANDBOXES_CPU_PERCENT", None)
