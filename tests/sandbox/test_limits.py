"""cgroup limits against hostile apps: memory, CPU, tasks; measured from the host's cgroupfs."""

from __future__ import annotations

import http.client
import time

import pytest

from sandbox.protocol import SandboxError
from tests.sandbox.fixtures import HELLO_APP, poll

pytestmark = pytest.mark.sandbox


def route_app(handler: str) -> str:
    return f"""
import {{ createApp }} from "@dropserver/app";
createApp({{ routes: [
  {{ method: "GET", path: "/", auth: "public", handler: () => new Response("alive") }},
  {{ method: "GET", path: "/attack", auth: "public", handler: {handler} }},
] }});
"""


def attack(http_request, sock: str, timeout: float = 15.0):
    try:
        return http_request(
            sock, "GET", "/attack", headers={"X-Dropserver-Route": "1"}, timeout=timeout
        )
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return exc  # the sandbox died mid-request: expected for the killers


def state_of(client, sandbox_id: str) -> str:
    return client.usage(sandbox_id)["state"]


def test_an_arraybuffer_bomb_is_killed_by_the_memory_cgroup(supervisor, make_app, http_request):
    bystander = make_app({"app.ts": HELLO_APP}).spec()
    supervisor.client.ensure(bystander)
    bomb = make_app(
        {
            "app.ts": route_app("""() => {
      const keep = [];
      for (;;) { const b = new Uint8Array(16 * 1024 * 1024); b.fill(7); keep.push(b); }
    }""")
        }
    )
    spec = bomb.spec(memory_mb=96, heap_mb=64)
    sock = supervisor.client.ensure(spec)
    attack(http_request, sock)

    poll(lambda: state_of(supervisor.client, spec.id) in ("crashed", "problem"))
    info = supervisor.client.usage(spec.id)
    assert "memory limit" in info["last_exit"]
    assert supervisor.sandbox_pids(spec.id) == set()  # nothing of it left on the host
    # The host and the other sandbox did not notice.
    assert supervisor.client.ping()["pid"] == supervisor.pid
    status, _, body = http_request(supervisor.client.ensure(bystander))
    assert (status, body) == (200, b"hello")
    # And the bomb's appspace starts again cleanly on the next request.
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert (status, body) == (200, b"alive")


def test_a_cpu_burn_is_throttled_to_its_quota(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": route_app("""() => {
      const end = Date.now() + 1500; let x = 0;
      while (Date.now() < end) x++;
      return new Response(String(x));
    }""")
        }
    )
    spec = app.spec(cpu_percent=20)
    sock = supervisor.client.ensure(spec)
    before = supervisor.client.usage(spec.id)["cpu_usage_ns"]
    started = time.monotonic()
    status, _, _ = attack(http_request, sock)
    wall = time.monotonic() - started
    used = (supervisor.client.usage(spec.id)["cpu_usage_ns"] - before) / 1e9
    assert status == 200
    assert wall >= 1.4
    # 20% of one CPU, plus one CFS period of slack at each end.
    assert used <= 0.2 * wall + 0.1, (used, wall)
    assert used >= 0.05 * wall, (used, wall)  # it did run


def test_a_worker_bomb_hits_the_pids_limit(supervisor, make_app, http_request):
    worker = "self.onmessage = () => {}; setInterval(() => {}, 1000);"
    app = make_app(
        {
            "worker.js": worker,
            "app.ts": route_app("""() => {
      const workers = []; let error = "none";
      try {
        const url = new URL("./worker.js", import.meta.url);
        for (let i = 0; i < 500; i++) workers.push(new Worker(url, { type: "module" }));
      } catch (e) { error = String(e); }
      return new Response(workers.length + " " + error);
    }"""),
        }
    )
    spec = app.spec(pids=24)
    sock = supervisor.client.ensure(spec)
    attack(http_request, sock, timeout=20)
    usage = poll(
        lambda: (u := supervisor.client.usage(spec.id)).get("pids_limit_hits") and u, timeout=20
    )
    assert usage["pids_limit_hits"] > 0
    peak = _pids_peak(supervisor, spec.id)
    assert peak is None or peak <= 24
    assert len(supervisor.sandbox_pids(spec.id)) <= 3


def _pids_peak(supervisor, sandbox_id: str) -> int | None:
    for base in supervisor.cgroup_dirs():
        peak = base / f"sb-{sandbox_id}" / "pids.peak"
        if peak.exists():
            return int(peak.read_text())
    return None


def test_a_worker_asking_for_permissions_takes_the_process_down_and_it_restarts(
    supervisor, make_app, http_request
):
    app = make_app(
        {
            "worker.js": 'postMessage(Deno.env.get("DS_TEST_CANARY") ?? "no env");',
            "app.ts": route_app("""() => new Promise((ok) => {
      const w = new Worker(new URL("./worker.js", import.meta.url), {
        type: "module", deno: { permissions: { env: true, read: true, net: true, run: true } } });
      w.onmessage = (e) => ok(new Response(String(e.data)));
      w.onerror = (e) => ok(new Response("worker error " + e.message, { status: 500 }));
    })"""),
        }
    )
    spec = app.spec()
    sock = supervisor.client.ensure(spec)
    pid = supervisor.deno_pid(spec.id)
    outcome = attack(http_request, sock)
    if not isinstance(outcome, Exception):
        status, _, body = outcome
        assert supervisor.canary.encode() not in body
        assert status != 200 or body == b"no env"
    poll(lambda: state_of(supervisor.client, spec.id) != "running")
    info = supervisor.client.usage(spec.id)
    assert info["state"] == "crashed" and "70" in info["last_exit"], info
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert (status, body) == (200, b"alive")
    assert supervisor.deno_pid(spec.id) != pid


def test_limits_out_of_range_are_refused(supervisor, make_app):
    spec = make_app({"app.ts": HELLO_APP}).spec()
    raw = spec.to_json()
    raw["limits"]["pids"] = 1
    with pytest.raises(SandboxError, match="limits.pids"):
        supervisor.client.ensure(raw)
