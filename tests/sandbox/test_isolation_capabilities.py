"""Hostile apps asking for what no app gets: processes, FFI, the environment, listening sockets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.sandbox.fixtures import free_port, tcp_listeners

pytestmark = pytest.mark.sandbox

ATTEMPT = """
import { createApp } from "@dropserver/app";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
const serve = (fn) => createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: async () => Response.json(await fn()) },
] });
"""


def failed_attempts(body: bytes) -> list[dict]:
    results = json.loads(body)
    assert results and not [r for r in results if r["ok"]], results
    return results


def test_it_cannot_spawn_a_process(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
serve(async () => [
  await attempt("command", () =>
    new Deno.Command("/bin/sh", { args: ["-c", "touch /data/pwned"] }).output()),
  await attempt("deno", () => new Deno.Command("/usr/bin/deno", { args: ["eval", "1"] }).output()),
  await attempt("spawn", () => new Deno.Command("deno").spawn().pid),
]);
"""
        }
    )
    spec = app.spec()
    sock = supervisor.client.ensure(spec)
    before = supervisor.sandbox_pids(spec.id)
    status, _, body = http_request(sock)
    assert status == 200
    failed_attempts(body)
    assert supervisor.sandbox_pids(spec.id) == before  # bubblewrap x2 + deno, nothing new
    assert not (Path(spec.data_dir) / "pwned").exists()


def test_it_cannot_use_ffi(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
serve(async () => [
  await attempt("dlopen libc", () => {
    const libc = Deno.dlopen("/lib/x86_64-linux-gnu/libc.so.6",
      { system: { parameters: ["buffer"], result: "i32" } });
    return libc.symbols.system(new TextEncoder().encode("touch /data/pwned\\0"));
  }),
  await attempt("dlopen missing", () => Deno.dlopen("/data/evil.so", {})),
]);
"""
        }
    )
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    failed_attempts(body)
    assert not (Path(spec.data_dir) / "pwned").exists()


def test_it_cannot_read_the_environment(supervisor, make_app, http_request):
    app = make_app(
        {
            "app.ts": ATTEMPT
            + """
serve(async () => [
  await attempt("toObject", () => JSON.stringify(Deno.env.toObject())),
  await attempt("get", () => Deno.env.get("DS_TEST_CANARY")),
  await attempt("environ", () => Deno.readTextFile("/proc/self/environ")),
]);
"""
        }
    )
    spec = app.spec()
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    failed_attempts(body)
    # From the host: bubblewrap cleared the environment, so the supervisor's secrets are not
    # even in Deno's memory to find.
    environ = Path(f"/proc/{supervisor.deno_pid(spec.id)}/environ").read_bytes()
    names = {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item}
    assert names <= {b"DENO_DIR", b"NO_COLOR", b"DENO_NO_UPDATE_CHECK", b"DENO_NO_PROMPT", b"PWD"}
    assert supervisor.canary.encode() not in environ + body


LISTEN_APP = (
    ATTEMPT
    + """

serve(async () => [
  await attempt("listen any", () => Deno.listen({ port: PORT })),
  await attempt("listen 0.0.0.0", () => Deno.listen({ hostname: "0.0.0.0", port: PORT })),
  await attempt("listen localhost", () => Deno.listen({ hostname: "localhost", port: PORT })),
  await attempt("listen [::]", () => Deno.listen({ hostname: "::", port: PORT })),
  await attempt("serve", () => Deno.serve({ port: PORT, onListen() {} }, () => new Response("x"))),
  await attempt("udp", () => Deno.listenDatagram({ port: PORT, transport: "udp" })),
  await attempt("unix elsewhere", () =>
    Deno.listen({ transport: "unix", path: "/data/evil.sock" })),
]);
"""
)


@pytest.mark.parametrize(
    "allow_net", [(), ("localhost:{port}",)], ids=["no-network", "allowlisted"]
)
def test_it_cannot_listen_on_a_port(supervisor, make_app, http_request, allow_net):
    port = free_port()
    app = make_app({"app.ts": LISTEN_APP.replace("PORT", str(port))})
    spec = app.spec(allow_net=[a.format(port=port) for a in allow_net])
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert status == 200
    failed_attempts(body)
    deno = supervisor.deno_pid(spec.id)
    assert port not in tcp_listeners("/proc/net")  # the host's namespace
    assert port not in tcp_listeners(f"/proc/{deno}/net")  # the sandbox's own namespace
    assert not (Path(spec.data_dir) / "evil.sock").exists()
    shares_host_net = os.readlink(f"/proc/{deno}/ns/net") == os.readlink("/proc/self/ns/net")
    assert shares_host_net == bool(allow_net)  # an empty allowlist means no network at all
