"""/metrics after real traffic through the real gateway (Daphne, supervisor, Deno), and who may
read it; the JSON access log line each request leaves (DS_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.browser import Browser
from tests.gateway.conftest import start_daphne, stop
from tests.sandbox.fixtures import free_port, poll

pytestmark = pytest.mark.sandbox


def scrape(stack, headers=None, browser=None) -> dict:
    response = (browser or stack.browser()).get(stack.panel_url("/metrics"), headers=headers)
    assert response.status == 200, response.status
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_and_timed_per_appspace_and_status(stack):
    appspace = stack.appspace()
    sub = appspace.subdomain
    before = scrape(stack)
    browser = stack.browser()
    for _ in range(3):
        assert browser.get(stack.url(appspace, "/")).status == 200
    assert browser.get(stack.url(appspace, "/no/such/page")).status == 404
    for name in ("nosuchname1", "nosuchname2"):
        assert browser.get(f"http://{name}.localhost:{stack.port}/").status == 404
    after = scrape(stack)

    requests = "dropserver_appspace_requests_total"
    assert value(after, requests, appspace=sub, status="200") == 3
    assert value(after, requests, appspace=sub, status="404") == 1
    assert (
        value(after, requests, appspace="-", status="404")
        - value(before, requests, appspace="-", status="404")
        == 2
    )
    # Names that are no appspace never become a label of their own.
    assert not [k for k in after if ("appspace", "nosuchname1") in k[1]]
    histogram = "dropserver_appspace_request_duration_seconds"
    assert value(after, f"{histogram}_count", appspace=sub) == 4
    assert value(after, f"{histogram}_bucket", appspace=sub, le="+Inf") == 4
    assert value(after, f"{histogram}_sum", appspace=sub) > 0

    # The state read at scrape time: this appspace, its quota, the sandbox it now runs.
    assert value(after, "dropserver_appspace_disk_quota_bytes", appspace=sub) == 100 * 2**20
    assert value(after, "dropserver_appspace_over_quota", appspace=sub) == 0
    assert value(after, "dropserver_appspaces", status="active") >= 2
    assert value(after, "dropserver_supervisor_up") == 1
    assert value(after, "dropserver_sandboxes", state="running") >= 1
    assert value(after, "dropserver_jobs", kind="backup", state="queued") == 0
    # Its sandbox started once (the first request), recorded by the supervisor's process.
    starts = "dropserver_sandbox_start_seconds"
    assert value(after, f"{starts}_count", appspace_id=str(appspace.public_id)) == 1
    assert value(after, f"{starts}_sum", appspace_id=str(appspace.public_id)) > 0
    assert not [k for k in after if "user" in dict(k[1])]  # no user ids, ever


@pytest.mark.parametrize(
    "header", [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}]
)
def test_a_forwarded_request_is_not_a_loopback_client(stack, header):
    # What the TLS edge proxies carries such a header: loopback proves nothing then, and the
    # header never grants anything either.
    response = stack.browser().get(stack.panel_url("/metrics"), headers=header)
    assert response.status == 404
    assert b"dropserver_" not in response.body


@pytest.fixture(scope="module")
def proxied(stack, gateway_dir, data_root):
    """A second Daphne for the same instance, told that a proxy on this host forwards every
    client (so loopback proves nothing), with a metrics token, logging JSON."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="metrics-", dir=data_root))
    log = folder / "daphne.log"
    process = start_daphne(
        port,
        gateway_dir,  # the same instance: its database, its supervisor, its metrics files
        log,
        DS_BEHIND_PROXY="1",
        DS_METRICS_TOKEN="s3cret-metrics-token",
        DS_LOG_FORMAT="json",
    )
    try:
        yield port, log
    finally:
        stop(process)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer s3cret-metrics-toke", "Basic s3cret-metrics-token", "Bearer "],
)
def test_without_the_token_a_proxied_client_gets_404(stack, proxied, authorization):
    port, _ = proxied
    headers = {"Authorization": authorization} if authorization else None
    url = stack.panel_url("/metrics").replace(str(stack.port), str(port))
    response = Browser(port).get(url, headers=headers)
    assert response.status == 404
    assert b"dropserver_" not in response.body


def test_with_the_token_a_proxied_client_reads_metrics(stack, proxied):
    port, _ = proxied
    url = stack.panel_url("/metrics").replace(str(stack.port), str(port))
    response = Browser(port).get(url, headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert response.status == 200
    assert b"dropserver_appspaces{" in response.body


def test_each_request_leaves_one_json_access_line(stack, proxied):
    port, log = proxied
    appspace = stack.appspace()
    mark = log.stat().st_size
    url = stack.url(appspace, "/").replace(str(stack.port), str(port))
    assert Browser(port).get(url).status == 200

    def access_lines() -> list[dict]:
        with open(log, "rb") as f:
            f.seek(mark)
            lines = [json.loads(ln) for ln in f.read().splitlines() if ln.startswith(b"{")]
        return [line for line in lines if line.get("logger") == "dropserver.access"]

    # The line is written once the response is sent: the client may read it first.
    poll(access_lines)
    access = access_lines()
    assert len(access) == 1, access
    entry = access[0]
    assert entry["appspace"] == appspace.subdomain
    assert entry["host"] == f"{stack.host(appspace)}:{port}"
    assert entry["status"] == 200
    assert entry["route"] == "/"
    assert entry["duration_ms"] > 0
    assert len(entry["request_id"]) == 32
    assert entry["level"] == "INFO"
    assert "user_id" not in entry  # an anonymous visitor
