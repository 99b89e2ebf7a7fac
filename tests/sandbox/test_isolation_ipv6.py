"""IPv6 from a sandbox with an allowlist: refused by the seccomp filter (socket(AF_INET6) ->
EAFNOSUPPORT), proven from listeners on "another host" in a private namespace pair
(tests/sandbox/netlab.py); dual-stack names still work, over IPv4."""

from __future__ import annotations

import json

import pytest

from tests.sandbox.netlab import B_GLOBAL, B_ULA, B_V4, free_port, start_in_lab

pytestmark = pytest.mark.sandbox

ATTEMPTS_APP = """
import { createApp } from "@dropserver/app";
const attempt = async (name, f) => {
  try { return { name, ok: true, value: String(await f()) }; }
  catch (e) { return { name, ok: false, error: `${e}${e.cause ? ` (${e.cause})` : ""}` }; }
};
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async () =>
  Response.json([
    await attempt("fetch", async () => (await fetch("http://URLHOST:PORT/")).text()),
    await attempt("connect", async () => {
      const conn = await Deno.connect({ hostname: "HOST", port: PORT });
      const addr = conn.remoteAddr.hostname;
      conn.close();
      return addr;
    }),
  ]) }] });
"""


def attempts_app(host: str, port: int) -> str:
    url_host = f"[{host}]" if ":" in host else host
    return (
        ATTEMPTS_APP.replace("URLHOST", url_host).replace("HOST", host).replace("PORT", str(port))
    )


def run(supervisor, make_app, http_request, host: str, port: int, allow: str) -> dict:
    spec = make_app({"app.ts": attempts_app(host, port)}).spec(allow_net=[allow])
    status, _, body = http_request(supervisor.reachable(supervisor.client.ensure(spec)))
    assert status == 200
    return {r["name"]: r for r in json.loads(body)}


def test_an_allowlisted_name_resolving_to_another_hosts_ula_reaches_nothing(
    start_supervisor, net_lab, make_app, http_request
):
    port = free_port()
    ula = net_lab.listen(B_ULA, port)
    assert net_lab.reachable_from_a(ula, B_ULA)  # the route is there: only the filter stops it
    sup = start_in_lab(start_supervisor, net_lab)
    results = run(sup, make_app, http_request, "ula.test", port, f"ula.test:{port}")
    assert not [r for r in results.values() if r["ok"]], results
    assert ula.accepted == []  # from the other host: nothing arrived
    assert ("ula.test", 28) in net_lab.dns.queries  # the name did resolve to the ULA


def test_an_ipv6_literal_is_refused_by_the_kernel(
    start_supervisor, net_lab, make_app, http_request
):
    port = free_port()
    v6 = net_lab.listen(B_GLOBAL, port)
    assert net_lab.reachable_from_a(v6, B_GLOBAL)
    sup = start_in_lab(start_supervisor, net_lab)
    results = run(sup, make_app, http_request, B_GLOBAL, port, f"[{B_GLOBAL}]:{port}")
    assert not [r for r in results.values() if r["ok"]], results
    # Deno let it through (allowlisted, not in --deny-net); the kernel said no.
    assert "Address family not supported" in results["connect"]["error"], results
    assert v6.accepted == []


def test_a_dual_stack_name_is_reached_over_ipv4(start_supervisor, net_lab, make_app, http_request):
    port = free_port()
    v4 = net_lab.listen(B_V4, port)
    v6 = net_lab.listen(B_GLOBAL, port)
    sup = start_in_lab(start_supervisor, net_lab)
    results = run(sup, make_app, http_request, "dual.test", port, f"dual.test:{port}")
    assert results["fetch"] == {"name": "fetch", "ok": True, "value": "LEAKED"}, results
    assert results["connect"]["ok"] and results["connect"]["value"] == B_V4, results
    assert len(v4.wait_for(2)) == 2 and v6.accepted == []  # both calls, both over IPv4
    assert {("dual.test", 1), ("dual.test", 28)} <= set(net_lab.dns.queries)
