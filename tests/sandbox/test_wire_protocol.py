"""The host <-> harness wire protocol: routes by index, identity headers, URL rebuilt, scrubbing."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from sandbox import layout
from tests.sandbox.fixtures import poll

pytestmark = pytest.mark.sandbox

ECHO_APP = """
import { createApp } from "@dropserver/app";
const write = (text) => Deno.writeTextFile("schema.txt", text);
createApp({
  routes: [
    { method: "GET", path: "/echo/:id", auth: "public", handler: async (ctx) => Response.json({
        url: ctx.request.url,
        method: ctx.request.method,
        headers: [...ctx.request.headers],
        params: ctx.params,
        user: ctx.user,
        dataPath: ctx.dataPath,
        cwd: Deno.cwd(),
        users: await ctx.appspace.users(),
    }) },
    { method: "POST", path: "/upload", handler: async (ctx) => {
        const body = await ctx.request.text();
        await Deno.writeTextFile("upload.txt", body);
        return new Response("stored " + body.length);
    } },
    { method: "GET", path: "/assets/*", auth: "public", static: "@app/public" },
    { method: "GET", path: "/throws", auth: "public", handler: () => { throw new Error("boom"); } },
    { method: "GET", path: "/ws", auth: "public", handler: (ctx) => {
        const { socket, response } = Deno.upgradeWebSocket(ctx.request);
        socket.onmessage = (e) => socket.send("echo:" + e.data);
        return response;
    } },
  ],
  migrations: [
    { schema: 1, up: () => write("1"), down: () => Deno.remove("schema.txt") },
    { schema: 2, up: () => write("2"), down: () => write("1") },
    { schema: 3, up: () => { throw new Error("schema 3 is broken"); } },
  ],
});
"""


@pytest.fixture
def echo_app(make_app):
    return make_app({"app.ts": ECHO_APP, "public/a.txt": "static"})


def test_it_gives_the_app_the_original_request_and_identity(supervisor, echo_app, http_request):
    spec = echo_app.spec()
    layout.write_users(
        layout.appspace_meta_dir(spec.id),
        [{"id": "u1", "displayName": "Alïce", "permissions": ["edit"]}],
    )
    sock = supervisor.client.ensure(spec)
    status, _, body = http_request(
        sock,
        "GET",
        "/echo/42?q=%C3%A9",
        headers={
            "X-Dropserver-Route": "0",
            "X-Dropserver-Params": json.dumps({"id": "42"}),
            "X-Dropserver-User-Id": "u1",
            "X-Dropserver-User-Name": "Al%C3%AFce",
            "X-Dropserver-User-Permissions": '["edit"]',
            "X-Dropserver-Host": "notes.example.com",
            "X-Dropserver-Scheme": "https",
            "X-Dropserver-Forged": "from a client",
            "Cookie": "a=b",
        },
    )
    assert status == 200, body
    seen = json.loads(body)
    assert seen["url"] == "https://notes.example.com/echo/42?q=%C3%A9"
    assert seen["params"] == {"id": "42"}
    assert seen["user"] == {"id": "u1", "displayName": "Alïce", "permissions": ["edit"]}
    assert seen["cwd"] == seen["dataPath"] == "/data"
    assert seen["users"] == [{"id": "u1", "displayName": "Alïce", "permissions": ["edit"]}]
    headers = dict(seen["headers"])
    assert not [h for h in headers if h.startswith("x-dropserver")]
    assert headers["host"] == "notes.example.com"
    assert headers["cookie"] == "a=b"


def test_an_anonymous_request_has_no_user(supervisor, echo_app, http_request):
    sock = supervisor.client.ensure(echo_app.spec())
    status, _, body = http_request(sock, "GET", "/echo/1")
    assert status == 200
    assert json.loads(body)["user"] is None


def test_a_request_body_reaches_the_app_and_data_lands_in_the_data_dir(
    supervisor, echo_app, http_request
):
    spec = echo_app.spec()
    sock = supervisor.client.ensure(spec)
    status, _, body = http_request(
        sock, "POST", "/upload", headers={"X-Dropserver-Route": "1"}, body=b"x" * 100_000
    )
    assert (status, body) == (200, b"stored 100000")
    stored = layout.appspace_data_dir(spec.id) / "upload.txt"
    assert stored.read_bytes() == b"x" * 100_000
    assert stored.stat().st_uid == spec.uid


def test_harness_errors_are_marked_and_the_sandbox_keeps_serving(
    supervisor, echo_app, http_request
):
    spec = echo_app.spec()
    sock = supervisor.client.ensure(spec)
    cases = {"": 400, "abc": 400, "99": 404, "2": 404, "3": 500}
    for route, expected in cases.items():
        status, headers, _ = http_request(sock, headers={"X-Dropserver-Route": route})
        assert status == expected, route
        assert "x-dropserver-harness-error" in headers
    status, _, _ = http_request(
        sock, headers={"X-Dropserver-Route": "0", "X-Dropserver-Params": "[1]"}
    )
    assert status == 400
    status, _, _ = http_request(sock, "GET", "/echo/1")
    assert status == 200
    log = layout.sandbox_log_dir(spec.id) / "sandbox.log"
    poll(lambda: "boom" in log.read_text())
    assert "threw" in log.read_text()


def test_websockets_are_relayed_over_the_unix_socket(supervisor, echo_app):
    sock = supervisor.client.ensure(echo_app.spec())

    async def talk() -> str:
        async with websockets.unix_connect(
            sock, "ws://app.example.com/ws", additional_headers={"X-Dropserver-Route": "4"}
        ) as ws:
            await ws.send("hi")
            return await ws.recv()

    assert asyncio.run(talk()) == "echo:hi"


def test_app_init_reports_routes_and_migrations_without_data(supervisor, echo_app):
    result = supervisor.client.run_once(echo_app.job_spec(), "app-init")
    assert result.ok, result
    assert result.result["migrations"] == [1, 2, 3]
    assert result.result["schema"] == 3
    routes = result.result["routes"]
    assert routes[0] == {
        "index": 0,
        "method": "GET",
        "path": "/echo/:id",
        "auth": "public",
        "kind": "function",
        "static": None,
    }
    assert routes[1]["auth"] == "user"
    assert routes[2]["kind"] == "static" and routes[2]["static"] == "@app/public"


def test_app_init_refuses_a_bad_definition(supervisor, make_app):
    app = make_app(
        {
            "app.ts": 'import { createApp } from "@dropserver/app";\n'
            'createApp({ routes: [{ method: "BREW", path: "/", handler: () => null }] });'
        }
    )
    result = supervisor.client.run_once(app.job_spec(), "app-init")
    assert not result.ok
    assert "method must be one of" in result.result["error"]


def test_migrations_run_up_and_down_and_report_failure(supervisor, echo_app):
    spec = echo_app.spec()
    data = layout.appspace_data_dir(spec.id)
    client = supervisor.client

    up = client.run_once(spec, "migrate", {"from": 0, "to": 2})
    assert up.ok and up.result["ran"] == [1, 2] and up.result["reached"] == 2
    assert (data / "schema.txt").read_text() == "2"

    down = client.run_once(spec, "migrate", {"from": 2, "to": 0})
    assert down.ok and down.result["ran"] == [2, 1] and down.result["reached"] == 0
    assert not (data / "schema.txt").exists()

    broken = client.run_once(spec, "migrate", {"from": 0, "to": 3})
    assert not broken.ok and broken.exit_code != 0
    assert broken.result["reached"] == 2
    assert "schema 3 is broken" in broken.result["error"]
    assert (data / "schema.txt").read_text() == "2"


def test_migrate_refuses_while_the_appspace_runs_and_works_once_stopped(supervisor, echo_app):
    from sandbox.protocol import SandboxBusy

    spec = echo_app.spec()
    supervisor.client.ensure(spec)
    with pytest.raises(SandboxBusy):
        supervisor.client.run_once(spec, "migrate", {"from": 0, "to": 1})
    supervisor.client.stop(spec.id)
    result = supervisor.client.run_once(spec, "migrate", {"from": 0, "to": 1})
    assert result.ok, result
    assert (layout.appspace_data_dir(spec.id) / "schema.txt").read_text() == "1"
    supervisor.client.ensure(spec)  # and the appspace starts again afterwards


def test_an_appspace_does_not_start_while_a_migration_runs_on_its_data(supervisor, make_app):
    import threading

    from sandbox.client import SandboxClient
    from sandbox.protocol import SandboxUnavailable

    app = make_app(
        {
            "app.ts": """
import { createApp } from "@dropserver/app";
createApp({
  routes: [{ method: "GET", path: "/", auth: "public", handler: () => new Response("x") }],
  migrations: [{ schema: 1, up: async () => {
    await Deno.writeTextFile("migrating", "yes");
    await new Promise((ok) => setTimeout(ok, 1500));
  } }],
});
"""
        }
    )
    spec = app.spec()
    results = []
    job = threading.Thread(
        target=lambda: results.append(
            SandboxClient(supervisor.client.path).run_once(spec, "migrate", {"from": 0, "to": 1})
        )
    )
    job.start()
    poll(lambda: (layout.appspace_data_dir(spec.id) / "migrating").exists())
    with pytest.raises(SandboxUnavailable, match="job"):
        supervisor.client.ensure(spec)
    job.join(30)
    assert results and results[0].ok
    assert supervisor.client.ensure(spec)
