"""Reusable fixtures for tests that run real sandboxes (Deno in bubblewrap and cgroups, as root).

Use them from any test package with, in that package's conftest.py:

    from tests.sandbox.fixtures import *  # noqa: F403

Fixtures (all bound to the per-test DS_DATA_DIR of tests/conftest.py):
- `supervisor` -> Supervisor: a real supervisor process (`python -m sandbox`) for this test;
  `.client` is a `SandboxClient`, `.kill()` SIGKILLs it, `.stop()` SIGTERMs it, `.log()` its
  output, `.cgroup_dirs()` the per-controller cgroup directories of this instance.
- `start_supervisor(**settings)` -> Supervisor: the same with settings overrides, e.g.
  `start_supervisor(DS_SANDBOX_IDLE_TIMEOUT=0.5)`; call again after `.kill()` to restart.
  `command_prefix=[...]` runs it under another command (`tests/sandbox/netlab.py` puts it in
  a private network namespace that way).
- `make_app(files, entrypoint="app.ts", version="1.0.0")` -> AppVersion: lays out
  DS_DATA_DIR/apps/<uuid>/<version>/files from a {relative path: text} dict with the modes a
  real install has; `.spec(...)` builds an appspace SandboxSpec with a fresh appspace id and a
  unique uid; `.job_spec()` an install-time one; `.warm(client)` warms its emit cache.
- `http_request(socket, method, path, headers=None, body=None)` -> (status, headers, body):
  raw HTTP/1.1 over the sandbox's unix socket, as the gateway sends it (default route 0).
  A supervisor in a net_lab has its own mount namespace: pass `sup.reachable(socket)`.
- `host_listener` -> Listener: a TCP listener on 127.0.0.1 that counts accepted connections,
  to prove from the host that a sandbox did not reach it (`Listener(host, port)` for others).
- `net_lab` (tests/sandbox/netlab.py; this package's conftest imports it): two private network
  namespaces, a fake DNS server and a supervisor inside them, for IPv6 and DNS checks.
- `unit_cgroup()` (a context manager) -> (name, dirs): cgroups standing in for a systemd unit's
  delegated ones; start a process inside them with `JOIN_CGROUPS` as its command prefix and
  `DS_TEST_JOIN=" ".join(dirs)` in its environment.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxUnavailable
from sandbox.spec import Limits, SandboxSpec

REPO = Path(__file__).resolve().parents[2]
_uids = itertools.count(secrets.randbelow(10**8) * 10 + 300000)

HELLO_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
] });
"""


def host_lacks(why: str) -> None:
    """This host cannot run the test (no loop devices, no block device under DS_DATA_DIR, no
    cgroup v1 blkio...): skip it on a developer's machine, but fail it in CI (`CI=true`, as
    `.ci/run` sets), whose machine has all of it, so a missing install step is never hidden
    behind a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"the CI host lacks what this test needs: {why}")
    pytest.skip(why)


def poll(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> object:
    """The first truthy value of `check()`, or AssertionError at the deadline (never a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {check}")
        time.sleep(interval)


def unique_uid() -> int:
    return next(_uids)


CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEMD_V1 = ("memory", "cpu", "cpuacct", "pids", "blkio")  # what Delegate=yes hands over on v1
# Runs a command after moving this shell into the cgroups named in DS_TEST_JOIN (what systemd
# does for a unit before it execs ExecStart=).
JOIN_CGROUPS = [
    "sh",
    "-c",
    'for d in $DS_TEST_JOIN; do echo $$ > "$d/cgroup.procs"; done; exec "$@"',
    "join-cgroups",
]


@contextlib.contextmanager
def unit_cgroup() -> Iterator[tuple[str, list[Path]]]:
    """Cgroups standing in for a unit's delegated ones, in the hierarchies systemd delegates on
    v1 (not freezer); removed afterwards, once empty. The name is random per run (not a test id)."""
    name = f"ds-test-unit-{uuid.uuid4().hex[:10]}"
    # Co-mounted controllers (cpu,cpuacct on many hosts) share one directory.
    dirs = sorted({(CGROUP_ROOT / c).resolve() / name for c in SYSTEMD_V1})
    for d in dirs:
        d.mkdir()
    try:
        yield name, dirs
    finally:
        for d in dirs:
            for sub in sorted(d.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError, AssertionError):
                    poll(lambda s=sub: _try_rmdir(s), timeout=5)


@dataclass
class Supervisor:
    process: subprocess.Popen
    data_dir: Path
    log_path: Path
    canary: str  # an environment value of the supervisor that must never reach a sandbox
    client: SandboxClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = SandboxClient(self.data_dir / "run" / "sandboxd.sock", timeout=30)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reachable(self, path: str) -> str:
        """`path` as this process reaches it: socket dirs are tmpfs mounts of the supervisor's
        mount namespace, which is not ours when it runs in a net_lab."""
        if os.readlink(f"/proc/{self.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            return path
        return f"/proc/{self.pid}/root{path}"

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"supervisor exited {self.process.returncode}:\n{self.log()}")
            try:
                self.client.ping()
                return True
            except SandboxUnavailable:
                return False

        poll(ready, timeout)

    def stop(self, timeout: float = 15.0) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait(10)

    def cgroup_dirs(self) -> list[Path]:
        """This instance's cgroup directory in each v1 hierarchy (or the v2 one)."""
        parent = f"{settings.DS_SANDBOX_CGROUP_PARENT}/{layout.instance_name()}"
        root = Path("/sys/fs/cgroup")
        return [d / parent for d in root.iterdir() if (d / "cgroup.procs").exists()] + (
            [root / parent] if (root / "cgroup.controllers").exists() else []
        )

    def sandbox_pids(self, sandbox_id: str, prefix: str = "sb-") -> set[int]:
        """Tasks in one sandbox's cgroups, read from the host."""
        pids: set[int] = set()
        for base in self.cgroup_dirs():
            procs = base / f"{prefix}{sandbox_id}" / "cgroup.procs"
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        return pids

    def deno_pid(self, sandbox_id: str) -> int:
        pids = [p for p in self.sandbox_pids(sandbox_id) if _comm(p) == "deno"]
        assert len(pids) == 1, pids
        return pids[0]

    def cgroup_pids(self) -> set[int]:
        """Every task in every sandbox cgroup of this instance, read from the host."""
        pids: set[int] = set()
        for base in self.cgroup_dirs():
            if base.exists():
                for procs in base.glob("*/cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in procs.read_text().split())
        return pids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tcp_listeners(proc_net: str = "/proc/net") -> set[int]:
    """Ports in LISTEN state in the network namespace of `proc_net` (/proc/<pid>/net for one
    process's namespace)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(proc_net, name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_supervisor(ds_data_dir: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def start(*, command_prefix: list[str] | None = None, **overrides: object) -> Supervisor:
        env = dict(os.environ)
        env.update(
            DS_DATA_DIR=str(ds_data_dir),
            DJANGO_SETTINGS_MODULE="dropserver_site.settings",
            PYTHONPATH=str(REPO),
            DS_SANDBOX_STOP_GRACE="2",
            DS_TEST_CANARY="canary-" + secrets.token_hex(8),  # must never reach a sandbox
        )
        env.update({k: str(v) for k, v in overrides.items()})
        log_path = ds_data_dir / f"supervisor-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [*(command_prefix or []), sys.executable, "-m", "sandbox"],
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        sup = Supervisor(process, ds_data_dir, log_path, env["DS_TEST_CANARY"])
        started.append(sup)
        sup.wait_ready()
        return sup

    yield start

    for sup in started:
        if sup.process.poll() is None:
            sup.stop()
    # Whatever happened in the test, nothing of this instance may be left running.
    if started:
        leftover = started[-1].cgroup_pids()
        for base in started[-1].cgroup_dirs():
            _remove_cgroup_tree(base)
        assert not leftover, f"processes left in sandbox cgroups: {leftover}"


def _remove_cgroup_tree(base: Path) -> None:
    if not base.exists():
        return
    for child in sorted(base.glob("*/"), reverse=True):
        with contextlib.suppress(OSError):
            for pid in (child / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            poll(lambda c=child: _try_rmdir(c), timeout=5)
    with contextlib.suppress(OSError, AssertionError):
        poll(lambda: _try_rmdir(base), timeout=5)


def _try_rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


@pytest.fixture
def supervisor(start_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return start_supervisor()


@dataclass
class AppVersion:
    app_id: str
    version: str
    entrypoint: str

    @property
    def files_dir(self) -> Path:
        return layout.app_files_dir(self.app_id, self.version)

    @property
    def cache_dir(self) -> Path:
        return layout.app_cache_dir(self.app_id, self.version)

    def spec(
        self,
        *,
        appspace_id: str | None = None,
        uid: int | None = None,
        allow_net: tuple[str, ...] | list[str] = (),
        **limits: int,
    ) -> SandboxSpec:
        return SandboxSpec.for_appspace(
            appspace_id=appspace_id or str(uuid.uuid4()),
            app_id=self.app_id,
            version=self.version,
            uid=uid or unique_uid(),
            entrypoint=self.entrypoint,
            allow_net=tuple(allow_net),
            limits=Limits(**{**vars(Limits.defaults()), **limits}),
        )

    def job_spec(self, *, uid: int | None = None) -> SandboxSpec:
        return SandboxSpec.for_app_version(
            job_id=f"job-{uuid.uuid4().hex[:12]}",
            app_id=self.app_id,
            version=self.version,
            uid=uid or unique_uid(),
            entrypoint=self.entrypoint,
        )

    def warm(self, client: SandboxClient) -> None:
        result = client.run_once(self.job_spec(), "warm")
        assert result.ok, result


def lay_out_app(
    files: dict[str, str], entrypoint: str = "app.ts", version: str = "1.0.0"
) -> AppVersion:
    app = AppVersion(str(uuid.uuid4()), version, entrypoint)
    root = app.files_dir
    root.mkdir(parents=True)
    for directory in (layout.apps_dir(), root.parent.parent, root.parent):
        os.chmod(directory, 0o711)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.chmod(directory, 0o755)
    return app


@pytest.fixture
def make_app(ds_data_dir: Path) -> Callable[..., AppVersion]:
    return lay_out_app


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        # Through an O_PATH descriptor: paths under /proc/<pid>/root exceed sun_path's 108 bytes.
        fd = os.open(self.unix_path, os.O_PATH | os.O_CLOEXEC)
        try:
            self.sock.connect(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)


def send_request(
    sock_path: str,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request as the gateway sends it: route 0 unless X-Dropserver-Route is given."""
    conn = _UnixHTTPConnection(sock_path, timeout)
    try:
        all_headers = {
            "Host": "app.example.com",
            "X-Dropserver-Route": "0",
            "X-Dropserver-Host": "app.example.com",
            "X-Dropserver-Scheme": "https",
            **(headers or {}),
        }
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def http_request() -> Callable[..., tuple[int, dict[str, str], bytes]]:
    return send_request


class Listener:
    """A TCP listener (loopback unless told otherwise; IPv6 when `host` has a colon) that
    records every connection it accepts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._arrived = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            with self._arrived:
                self.accepted.append(addr)
                self._arrived.notify_all()
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, int]]:
        """The connections accepted once there are `count` of them (or the timeout passed).
        A client that only connects and closes is done before this listener's thread has
        called accept(): counting at once would race it."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.accepted) >= count, timeout)
            return list(self.accepted)

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        # Read the request head first: closing with unread data sends a reset, which can
        # reach an HTTP client before the response does.
        with contextlib.suppress(OSError), conn:
            conn.settimeout(2)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nLEAKED")
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def host_listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


__all__ = [
    "HELLO_APP",
    "AppVersion",
    "Listener",
    "Supervisor",
    "host_listener",
    "http_request",
    "lay_out_app",
    "make_app",
    "poll",
    "send_request",
    "start_supervisor",
    "free_port",
    "supervisor",
    "tcp_listeners",
    "unique_uid",
]
