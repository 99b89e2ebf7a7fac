"""Supervisor lifecycle: idle stop, crash restart and the problem state, the running cap with LRU
eviction, freezing, graceful stop, and no orphan left when the supervisor dies."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import layout
from sandbox.client import AsyncSandboxClient
from sandbox.protocol import (
    SandboxBadRequest,
    SandboxProblem,
    SandboxStartFailed,
    SandboxUnavailable,
)
from tests.sandbox.fixtures import HELLO_APP, REPO, poll

pytestmark = pytest.mark.sandbox

CRASHY_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("up") },
  { method: "GET", path: "/exit", auth: "public", handler: () => Deno.exit(3) },
  { method: "GET", path: "/spam", auth: "public", handler: () => {
      for (let i = 0; i < 2000; i++) console.log("line " + i + " " + "x".repeat(100));
      return new Response("spammed");
  } },
] });
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def state(client, sandbox_id: str) -> str:
    return client.usage(sandbox_id)["state"]


def test_an_idle_sandbox_is_stopped(start_supervisor, make_app, http_request):
    sup = start_supervisor(DS_SANDBOX_IDLE_TIMEOUT=0.5)
    spec = make_app({"app.ts": HELLO_APP}).spec()
    http_request(sup.client.ensure(spec))
    pids = sup.sandbox_pids(spec.id)
    assert pids
    poll(lambda: state(sup.client, spec.id) == "stopped", timeout=10)
    assert not [p for p in pids if alive(p)]
    assert sup.sandbox_pids(spec.id) == set()
    assert not layout.sandbox_run_dir(spec.id).exists()
    # Requests wake it up again.
    status, _, _ = http_request(sup.client.ensure(spec))
    assert status == 200


def test_touch_keeps_a_sandbox_with_an_open_websocket_alive(start_supervisor, make_app):
    sup = start_supervisor(DS_SANDBOX_IDLE_TIMEOUT=0.6)
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sup.client.ensure(spec)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        sup.client.touch(spec.id)
        assert state(sup.client, spec.id) == "running"
        time.sleep(0.1)


def test_crashes_restart_with_backoff_until_the_problem_state(
    start_supervisor, make_app, http_request
):
    sup = start_supervisor(
        DS_SANDBOX_CRASH_LIMIT=3, DS_SANDBOX_RESTART_BACKOFF=0.05, DS_SANDBOX_CRASH_WINDOW=60
    )
    spec = make_app({"app.ts": CRASHY_APP}).spec()
    pids = []
    for _ in range(3):
        sock = sup.client.ensure(spec)
        pids.append(sup.deno_pid(spec.id))
        with pytest.raises((ConnectionError, OSError, Exception)):
            http_request(sock, "GET", "/exit", headers={"X-Dropserver-Route": "1"})
        poll(lambda: state(sup.client, spec.id) in ("crashed", "problem"))
        assert not alive(pids[-1])
    assert len(set(pids)) == 3  # each crash was followed by a fresh process
    info = sup.client.usage(spec.id)
    assert info["state"] == "problem"
    assert "crashed 3 times" in info["problem"] and "status 3" in info["problem"]
    with pytest.raises(SandboxProblem) as problem:
        sup.client.ensure(spec)
    assert "status 3" in problem.value.reason
    # The owner (or an admin) asks for a restart: history forgotten, it serves again.
    status, _, body = http_request(sup.client.restart(spec))
    assert (status, body) == (200, b"up")


def test_an_app_that_fails_to_start_reports_why(supervisor, make_app):
    app = make_app({"app.ts": 'throw new Error("no config for you");'})
    with pytest.raises(SandboxStartFailed) as failure:
        supervisor.client.ensure(app.spec())
    assert "exited with status 1" in failure.value.reason
    assert "no config for you" in failure.value.stderr_tail


def test_an_app_that_never_gets_ready_times_out(start_supervisor, make_app):
    sup = start_supervisor(DS_SANDBOX_START_TIMEOUT=1)
    app = make_app({"app.ts": "setInterval(() => {}, 1000); await new Promise(() => {});"})
    spec = app.spec()
    started = time.monotonic()
    with pytest.raises(SandboxStartFailed, match="not ready within 1s"):
        sup.client.ensure(spec)
    assert time.monotonic() - started < 5
    assert sup.sandbox_pids(spec.id) == set()


def test_the_running_cap_evicts_the_least_recently_used(start_supervisor, make_app):
    sup = start_supervisor(DS_SANDBOX_MAX_RUNNING=2)
    app = make_app({"app.ts": HELLO_APP})
    a, b, c = app.spec(), app.spec(), app.spec()
    sup.client.ensure(a)
    sup.client.ensure(b)
    sup.client.ensure(a)  # a is now more recently used than b
    sup.client.ensure(c)
    states = {s["id"]: s["state"] for s in sup.client.list()}
    assert states == {a.id: "running", b.id: "stopped", c.id: "running"}
    assert sup.sandbox_pids(b.id) == set()


def test_a_spec_change_restarts_the_sandbox(supervisor, make_app):
    app = make_app({"app.ts": HELLO_APP})
    spec = app.spec()
    supervisor.client.ensure(spec)
    first = supervisor.deno_pid(spec.id)
    changed = app.spec(appspace_id=spec.id, uid=spec.uid, allow_net=["api.example.com:443"])
    supervisor.client.ensure(changed)
    assert supervisor.deno_pid(spec.id) != first
    assert not alive(first)


def test_freeze_holds_a_sandbox_still_for_backups(supervisor, make_app, http_request):
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sock = supervisor.client.ensure(spec)
    supervisor.client.freeze(spec.id)
    pid = supervisor.deno_pid(spec.id)
    assert Path(f"/proc/{pid}/stat").read_text().split()[2] in ("D", "S")  # not running
    with pytest.raises(SandboxUnavailable, match="frozen"):
        supervisor.client.ensure(spec)
    with pytest.raises(OSError):
        http_request(sock, timeout=0.5)  # nothing answers while frozen
    supervisor.client.thaw(spec.id)
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert (status, body) == (200, b"hello")


def test_graceful_stop_sends_sigterm_first(supervisor, make_app):
    app = make_app(
        {
            "app.ts": """
import { createApp } from "@dropserver/app";
Deno.addSignalListener("SIGTERM", () => { Deno.writeTextFileSync("/data/got-sigterm", "yes"); });
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("x") },
] });
"""
        }
    )
    spec = app.spec()
    supervisor.client.ensure(spec)
    started = time.monotonic()
    assert supervisor.client.stop(spec.id) == {"stopped": True, "state": "stopped"}
    assert time.monotonic() - started < 1.5  # the harness shut down, no SIGKILL grace needed
    assert (Path(spec.data_dir) / "got-sigterm").read_text() == "yes"
    assert supervisor.sandbox_pids(spec.id) == set()


def test_killing_the_supervisor_leaves_no_orphans(start_supervisor, make_app):
    sup = start_supervisor()
    app = make_app({"app.ts": HELLO_APP})
    specs = [app.spec(), app.spec()]
    for spec in specs:
        sup.client.ensure(spec)
    pids = sup.cgroup_pids()
    uids = {spec.uid for spec in specs}
    assert len(pids) == 6  # bubblewrap, its init and Deno, twice

    sup.kill()  # SIGKILL: no chance to clean up

    poll(lambda: not [p for p in pids if alive(p)], timeout=5)
    assert sup.cgroup_pids() == set()
    # No live process of those uids anywhere on the host (zombies are init's to reap).
    assert not [p for p in _all_pids() if _uid_of(p) in uids and alive(p)]

    # The next supervisor clears the stale cgroups and sockets, then serves again.
    again = start_supervisor()
    assert not [
        d for base in again.cgroup_dirs() if base.exists() for d in base.iterdir() if d.is_dir()
    ]
    assert not layout.sandbox_run_dir(specs[0].id).exists()
    assert again.client.ensure(specs[0])


def test_stopping_the_supervisor_stops_every_sandbox(start_supervisor, make_app):
    sup = start_supervisor()
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sup.client.ensure(spec)
    pids = sup.cgroup_pids()
    assert sup.stop() == 0
    assert not [p for p in pids if alive(p)]
    assert not [d for d in sup.cgroup_dirs() if d.exists()]
    assert not layout.control_socket_path().exists()


def test_a_second_supervisor_on_the_same_data_dir_refuses(supervisor, ds_data_dir):
    env = dict(os.environ, DS_DATA_DIR=str(ds_data_dir), PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "sandbox"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "another sandboxd" in out.stderr
    assert supervisor.client.ping()


def test_manage_py_sandboxd_runs_the_supervisor(ds_data_dir):
    env = dict(os.environ, DS_DATA_DIR=str(ds_data_dir))
    proc = subprocess.Popen([sys.executable, "manage.py", "sandboxd"], cwd=REPO, env=env)
    try:
        from sandbox.client import SandboxClient

        client = SandboxClient(layout.control_socket_path())
        poll(lambda: _pings(client), timeout=20)
        assert layout.control_socket_path().stat().st_mode & 0o777 == 0o600
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except SandboxUnavailable:
        return False


def test_sandbox_logs_are_capped_and_rotated(start_supervisor, make_app, http_request):
    sup = start_supervisor(DS_SANDBOX_LOG_MAX_BYTES=20000, DS_SANDBOX_LOG_KEEP=2)
    spec = make_app({"app.ts": CRASHY_APP}).spec()
    sock = sup.client.ensure(spec)
    for _ in range(3):
        http_request(sock, "GET", "/spam", headers={"X-Dropserver-Route": "2"})
    logs = layout.sandbox_log_dir(spec.id)
    poll(lambda: (logs / "sandbox.log.2").exists())
    sup.client.stop(spec.id)
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["sandbox.log", "sandbox.log.1", "sandbox.log.2"]
    assert all(p.stat().st_size <= 20000 for p in logs.iterdir())
    assert logs.stat().st_mode & 0o777 == 0o700


def test_the_async_client_pipelines_requests_on_one_connection(supervisor, make_app):
    app = make_app({"app.ts": HELLO_APP})
    specs = [app.spec() for _ in range(3)]

    async def run() -> list[str]:
        client = AsyncSandboxClient(layout.control_socket_path())
        try:
            sockets = await asyncio.gather(*(client.ensure(s) for s in specs))
            # The hot path: already running, one round trip each.
            started = time.monotonic()
            for _ in range(200):
                await client.ensure(specs[0])
            per_call = (time.monotonic() - started) / 200
            assert per_call < 0.005, per_call
            return sockets
        finally:
            await client.close()

    sockets = asyncio.run(run())
    assert sockets == [str(layout.sandbox_socket_path(s.id)) for s in specs]


def test_a_uid_below_the_base_is_refused(supervisor, make_app):
    app = make_app({"app.ts": HELLO_APP})
    for uid in (0, 1000, 199_999):
        raw = app.spec().to_json()
        raw["uid"] = uid
        with pytest.raises(SandboxBadRequest, match="uid"):
            supervisor.client.ensure(raw)


def test_paths_outside_the_data_dir_are_refused(supervisor, make_app):
    app = make_app({"app.ts": HELLO_APP})
    for field, value in (
        ("app_dir", "/"),
        ("data_dir", "/etc"),
        ("cache_dir", "/tmp"),
        ("meta_dir", "/root"),
    ):
        raw = app.spec().to_json()
        raw[field] = value
        with pytest.raises(SandboxBadRequest, match=field):
            supervisor.client.ensure(raw)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


WRITE_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [{ method: "POST", path: "/", auth: "public", handler: async (ctx) => {
  try { await Deno.writeTextFile(`${ctx.dataPath}/w.txt`, "x"); return new Response("wrote"); }
  catch (e) { return new Response(String(e), { status: 500 }); }
} }] });
"""


def test_a_stale_spec_never_undoes_a_newer_one(supervisor, make_app, http_request):
    """Callers build specs from caches; an older generation must not restart the sandbox
    writable (or with a wider allowlist) after a newer one made it read-only."""
    app = make_app({"app.ts": WRITE_APP})
    app.warm(supervisor.client)
    old = app.spec()
    new = dataclasses.replace(old, data_readonly=True, generation=old.generation + 1)
    supervisor.client.ensure(new)
    pid = supervisor.deno_pid(new.id)

    socket = supervisor.client.ensure(old)  # a stale caller: nothing restarts
    assert supervisor.deno_pid(new.id) == pid
    supervisor.client.stop(new.id)
    socket = supervisor.client.ensure(old)  # nor does it come back with the old spec
    status, _, body = http_request(socket, "POST", "/")
    assert status == 500, body
    assert not (Path(new.data_dir) / "w.txt").exists()  # checked from the host

    same = dataclasses.replace(new, generation=new.generation + 1)
    pid = supervisor.deno_pid(new.id)
    supervisor.client.ensure(same)  # a newer generation changing nothing: no restart
    assert supervisor.deno_pid(new.id) == pid
