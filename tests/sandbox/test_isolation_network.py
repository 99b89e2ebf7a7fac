"""Hostile apps against the network: a loopback listener on the host proves nothing arrived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.protocol import SandboxStartFailed
from sandbox.walls import launcher
from tests.sandbox.fixtures import HELLO_APP, poll

pytestmark = pytest.mark.sandbox

ATTEMPT = """
import { createApp } from "@dropserver/app";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
"""


def connect_app(host: str, port: int) -> str:
    return (
        ATTEMPT
        + f"""
const target = {{ hostname: "{host}", port: {port} }};
createApp({{ routes: [{{ method: "GET", path: "/", auth: "public", handler: async () =>
  Response.json([
    await attempt("fetch", async () => (await fetch("http://{host}:{port}/")).text()),
    await attempt("connect", async () => (await Deno.connect(target)).close()),
    await attempt("connectTls", async () => (await Deno.connectTls(target)).close()),
    await attempt("websocket", () => new Promise((ok, fail) => {{
      const ws = new WebSocket("ws://{host}:{port}/");
      ws.onopen = ok;
      ws.onerror = () => fail(new Error("ws error"));
    }})),
  ]) }}] }});
"""
    )


def assert_all_failed(body: bytes) -> None:
    results = json.loads(body)
    assert len(results) == 4 and not [r for r in results if r["ok"]], results


def test_it_cannot_connect_outside_its_allowlist(supervisor, make_app, http_request, host_listener):
    app = make_app({"app.ts": connect_app("127.0.0.1", host_listener.port)})
    spec = app.spec(allow_net=["api.example.com:443"])
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    assert host_listener.accepted == []  # from the host: nothing arrived
    assert_all_failed(body)
    blocked = supervisor.client.blocked(spec.id)
    assert [(b["host"], b["port"]) for b in blocked] == [("127.0.0.1", host_listener.port)]
    assert blocked[0]["count"] >= 1


def test_an_allowlisted_name_that_resolves_to_loopback_is_refused(
    supervisor, make_app, http_request, host_listener
):
    app = make_app({"app.ts": connect_app("localhost", host_listener.port)})
    spec = app.spec(allow_net=[f"localhost:{host_listener.port}"])
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    assert host_listener.accepted == []  # from the host: nothing arrived
    assert_all_failed(body)


def test_without_an_allowlist_there_is_no_network_at_all(
    supervisor, make_app, http_request, host_listener
):
    app = make_app({"app.ts": connect_app("127.0.0.1", host_listener.port)})
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    assert host_listener.accepted == []  # from the host: nothing arrived
    assert_all_failed(body)
    # The sandbox's namespace holds only a loopback interface of its own.
    deno = supervisor.deno_pid(spec.id)
    devices = Path(f"/proc/{deno}/net/dev").read_text().splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]


@pytest.mark.parametrize(
    "specifier",
    [
        "http://127.0.0.1:{port}/mod.ts",
        "https://127.0.0.1:{port}/mod.ts",
        "npm:left-pad@1.3.0",
        "jsr:@std/assert@1",
    ],
)
def test_remote_and_npm_imports_are_refused(supervisor, make_app, host_listener, specifier):
    specifier = specifier.format(port=host_listener.port)
    app = make_app({"app.ts": f'import "{specifier}";\n' + HELLO_APP})
    spec = app.spec(allow_net=[f"localhost:{host_listener.port}"])
    with pytest.raises(SandboxStartFailed):
        supervisor.client.ensure(spec)
    warm = supervisor.client.run_once(app.job_spec(), "warm")
    assert not warm.ok
    assert host_listener.accepted == []
    downloaded = [p for p in app.cache_dir.rglob("*") if p.is_file() and "npm" in p.parts]
    assert downloaded == [] and not (app.cache_dir / "remote").exists()


def test_remote_imports_at_run_time_are_refused(supervisor, make_app, http_request, host_listener):
    port = host_listener.port
    app = make_app(
        {
            "app.ts": ATTEMPT
            + f"""
createApp({{ routes: [{{ method: "GET", path: "/", auth: "public", handler: async () =>
  Response.json([
  await attempt("http", () => import("http://127.0.0.1:{port}/a.ts")),
  await attempt("localhost", () => import("http://localhost:{port}/a.ts")),
  await attempt("npm", () => import("npm:left-pad@1.3.0")),
  await attempt("jsr", () => import("jsr:@std/assert@1")),
]) }}] }});
"""
        }
    )
    spec = app.spec(allow_net=[f"localhost:{port}"])
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    results = json.loads(body)
    assert len(results) == 4 and not [r for r in results if r["ok"]], results
    assert host_listener.accepted == []
    assert not [p for p in app.cache_dir.rglob("*") if p.is_file() and "npm" in p.parts]


def test_the_deny_list_covers_this_hosts_own_addresses():
    """So an allowlisted name that resolves to this host cannot reach or bind it either."""
    entries = launcher.deny_net_entries()
    addresses = launcher.host_addresses()
    assert addresses  # at least loopback
    assert set(addresses) <= set(entries)
    assert "127.0.0.0/8" in entries and "[::1]" in entries and "169.254.169.254" in entries


def test_blocked_reports_are_rate_limited(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () => {
  for (let i = 0; i < 200; i++) {
    await attempt("x", () => Deno.connect({ hostname: "10.0.0." + (i % 250), port: 80 }));
  }
  return new Response("done");
} }] });
"""
        }
    )
    spec = app.spec(allow_net=["api.example.com"])
    status, _, _ = http_request(supervisor.client.ensure(spec))
    assert status == 200
    blocked = poll(lambda: supervisor.client.blocked(spec.id))
    assert 1 <= len(blocked) <= 30  # the harness reports at most 30 a minute
