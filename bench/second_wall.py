"""`python -m bench second_wall`: what a gVisor layer would cost next to bubblewrap + seccomp.

Measures the pinned Deno three ways on this host: bare, in bubblewrap with the production
seccomp filter (`--unshare-all`, read-only root, the filter in a memfd), and in gVisor
(`runsc`, the Debian package; ptrace platform, and KVM when it works): start-up of a
hello-world script, a file-heavy script (create, write, read, stat, remove 500 files), and
the latency of sequential keep-alive requests to a `Deno.serve` hello world on 127.0.0.1
(gVisor with `--network=host`: loopback only), plus the memory of an idle server's whole
process tree. Skipped, with a message, when runsc is not installed: it is never a
requirement of `make test` or `make bench`. Needs root (runsc and the bundle).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HELLO = 'console.log("hi");\n'
FILES = """
const dir = Deno.args[0];
const t0 = performance.now();
for (let i = 0; i < 500; i++) await Deno.writeTextFile(`${dir}/f${i}`, "x".repeat(1000));
for (let i = 0; i < 500; i++) {
  await Deno.readTextFile(`${dir}/f${i}`);
  await Deno.stat(`${dir}/f${i}`);
}
for (let i = 0; i < 500; i++) await Deno.remove(`${dir}/f${i}`);
console.log(JSON.stringify({ ms: performance.now() - t0 }));
"""
SERVE = """
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen() {} },
  () => new Response("hello"));
"""


def _deno() -> str:
    from sandbox.walls import launcher

    return launcher.deno_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Layers:
    def __init__(self, work: Path, runsc: str | None):
        from sandbox.walls import seccomp

        self.work, self.runsc, self.deno = work, runsc, _deno()
        self.filter = seccomp.build()
        self.kvm_ok = False

    def argv(self, layer: str, args: list[str], fds: list[int]) -> list[str]:
        deno = [self.deno, "run", "--no-config", "-A", *args]
        if layer == "bare":
            return deno
        if layer.startswith("bwrap"):
            extra = []
            if layer == "bwrap+seccomp":
                fd = self.filter.open_fd()
                fds.append(fd)
                extra = ["--seccomp", str(fd)]
            return [
                "bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--ro-bind", "/",
                "/", "--dev", "/dev", "--proc", "/proc", "--bind", str(self.work),
                str(self.work), *extra, *deno,
            ]  # fmt: skip
        platform = layer.split(":")[1]
        return [self.runsc, f"--platform={platform}", "--network=none", "do", *deno]

    def timed_run(self, layer: str, args: list[str], timeout: float = 30) -> tuple[float, str]:
        fds: list[int] = []
        argv = self.argv(layer, args, fds)
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, pass_fds=fds
            )
        finally:
            for fd in fds:
                os.close(fd)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{layer}: exit {proc.returncode}: {proc.stderr[-300:]}")
        return elapsed, proc.stdout


def _tree_rss(root: int) -> int:
    """RSS (bytes) of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _latency(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    for _ in range(n + 5):
        started = time.perf_counter()
        conn.request("GET", "/")
        conn.getresponse().read()
        samples.append((time.perf_counter() - started) * 1000)
    conn.close()
    return samples[5:]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError("server not listening")


def _serve(layers: Layers, layer: str, script: Path, n: int) -> tuple[list[float], int]:
    port = _free_port()
    fds: list[int] = []
    if layer.startswith("runsc"):
        bundle = layers.work / f"bundle-{port}"
        bundle.mkdir()
        spec = {
            "ociVersion": "1.0.0",
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": [layers.deno, "run", "--no-config", "-A", str(script), str(port)],
                "env": [
                    "PATH=/usr/bin:/bin",
                    "NO_COLOR=1",
                    "DENO_NO_UPDATE_CHECK=1",
                    "DENO_DIR=/scratch",
                ],
                "cwd": "/",
            },
            "root": {"path": "/", "readonly": True},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"},
            ],
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]},
        }
        (bundle / "config.json").write_text(json.dumps(spec))
        platform = layer.split(":")[1]
        argv = [layers.runsc, f"--platform={platform}", "--network=host", "run",
                "--bundle", str(bundle), f"ds-bench-{port}"]  # fmt: skip
    else:
        argv = layers.argv(layer, [str(script), str(port)], fds)
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=fds,
        start_new_session=True,
    )  # fmt: skip
    for fd in fds:
        os.close(fd)
    try:
        _wait_port(port, proc)
        samples = _latency(port, n)
        time.sleep(0.5)
        rss = _tree_rss(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if layer.startswith("runsc"):
            subprocess.run([layers.runsc, "delete", "-force", f"ds-bench-{port}"],
                           capture_output=True, timeout=30)  # fmt: skip
    return samples, rss


def run(options) -> None:
    runsc = shutil.which("runsc")
    if not runsc:
        print("runsc (gVisor) is not installed: skipped (apt-get install -y runsc)")
        return
    if os.geteuid() != 0:
        print("needs root: skipped")
        return
    n = options.iterations
    with tempfile.TemporaryDirectory(prefix="ds-wall-") as tmp:
        work = Path(tmp)
        for name, text in (("hello.js", HELLO), ("files.js", FILES), ("serve.js", SERVE)):
            (work / name).write_text(text)
        layers = Layers(work, runsc)
        names = ["bare", "bwrap", "bwrap+seccomp", "runsc:ptrace", "runsc:kvm"]
        try:
            layers.timed_run("runsc:kvm", [str(work / "hello.js")], timeout=15)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"runsc --platform=kvm unusable here ({str(exc)[:80]}): left out")
            names.remove("runsc:kvm")
        print(f"Deno {_deno()}, {n} samples; times in ms")
        print(f"{'layer':16} {'start p50':>10} {'p90':>8} {'files p50':>10} "
              f"{'req p50':>8} {'req p99':>8} {'idle RSS MB':>12}")  # fmt: skip
        for layer in names:
            hello = [str(work / "hello.js")]
            starts = [layers.timed_run(layer, hello)[0] * 1000 for _ in range(n)]
            file_ms = []
            for _ in range(max(5, n // 3)):
                data = work / f"data-{layer.replace(':', '-')}"
                data.mkdir(exist_ok=True)
                out = layers.timed_run(layer, [str(work / "files.js"), str(data)])[1]
                file_ms.append(json.loads(out.strip().splitlines()[-1])["ms"])
            latency, rss = _serve(layers, layer, work / "serve.js", max(200, n * 10))
            print(
                f"{layer:16} {statistics.median(starts):10.1f} {_pct(starts, 0.9):8.1f} "
                f"{statistics.median(file_ms):10.1f} {statistics.median(latency):8.3f} "
                f"{_pct(latency, 0.99):8.3f} {rss / 2**20:12.1f}",
                flush=True,
            )
