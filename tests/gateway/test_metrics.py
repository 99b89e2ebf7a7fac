"""/metrics after real traffic through the real gateway (Daphne, supervisor, Deno), and who may
read it; the JSON access log line each request leaves (DS_LOG_FORMAT=json)."""

from __future__ import annotations

import bisect
import json
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from appspaces.gateway.observe import Answers, _add_latency
from appspaces.metrics import REQUEST_BUCKETS
from appspaces.models import AppspaceUsageDay
from appspaces.usage import charts
from appspaces.usage.counters import today
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
    requests = "dropserver_appspace_requests_total"
    histogram = "dropserver_appspace_request_duration_seconds"

    def unknown(samples) -> float:
        return value(samples, f"{histogram}_count", appspace="-")

    def all_written() -> dict | None:
        # Answers reach the metrics files within a second (gateway/observe.py).
        samples = scrape(stack)
        done = value(samples, f"{histogram}_count", appspace=sub) >= 4
        return samples if done and unknown(samples) - unknown(before) >= 2 else None

    after = poll(all_written)
    assert value(after, requests, appspace=sub, status="200") == 3
    assert value(after, requests, appspace=sub, status="404") == 1
    # (at least: the readiness probes of Daphnes started for other tests also count there)
    assert (
        value(after, requests, appspace="-", status="404")
        - value(before, requests, appspace="-", status="404")
        >= 2
    )
    # Names that are no appspace never become a label of their own.
    assert not [k for k in after if ("appspace", "nosuchname1") in k[1]]
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


def test_answers_added_up_in_memory_expose_as_observed_one_by_one():
    """gateway/observe.py writes a second's answers with one update per bucket, reaching into
    prometheus-client's histogram; the exposition must be what observe() would have given."""
    one_by_one = Histogram("a_seconds", "", buckets=REQUEST_BUCKETS, registry=None)
    added_up = Histogram("b_seconds", "", buckets=REQUEST_BUCKETS, registry=None)
    answers = Answers()
    seconds = [0.0, 0.001, 0.005, 0.0051, 0.3, 1.0, 29.9, 30.0, 31.0, 0.005, 2.5]
    for d in seconds:
        one_by_one.observe(d)
        answers.latency.setdefault("a", [0] * (len(REQUEST_BUCKETS) + 1) + [0.0])
    row = answers.latency["a"]
    for d in seconds:  # as Answers.add places them
        row[bisect.bisect_left((*REQUEST_BUCKETS, float("inf")), d)] += 1
        row[-1] += d
    _add_latency(added_up, row)

    def samples(histogram) -> list[tuple]:
        (family,) = histogram.collect()
        return [
            (s.name[2:], s.labels, s.value)
            for s in family.samples
            if not s.name.endswith("_created")  # when each was made
        ]

    assert samples(added_up) == samples(one_by_one)
    assert samples(added_up)[-2] == ("seconds_count", {}, len(seconds))


def test_answered_requests_reach_the_days_usage_row_and_its_chart(stack):
    """The web process counts what it answered and adds it to the day's row (flushed every
    0.2 s here); the appspace's requests chart then shows the day's figure."""
    appspace = stack.appspace()
    browser = stack.browser()
    for _ in range(4):
        assert browser.get(stack.url(appspace, "/")).status == 200
    assert browser.get(stack.url(appspace, "/no/such/page")).status == 404
    for name in ("nosuchname3",):  # names that are no appspace count for nobody
        assert browser.get(f"http://{name}.localhost:{stack.port}/").status == 404

    def counted() -> int:
        row = AppspaceUsageDay.objects.filter(appspace=appspace, day=today()).first()
        return row.requests if row else 0

    poll(lambda: counted() >= 5)
    assert counted() == 5
    days, values = charts.appspace_days(appspace)
    assert values["requests"][-1] == 5 and days[-1] == today()
    drawn = charts.charts(days, values, "t")
    assert "Requests per day over the last 30 days. Highest: 5 on" in drawn


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


def logged_after(log: Path, mark: int, host: str) -> tuple[list[dict], list[bytes]]:
    """The access lines for `host` written to `log` after `mark`, and every line that is not
    JSON. (Web processes write their log in blocks: a line may land after a later mark.)"""
    with open(log, "rb") as f:
        f.seek(mark)
        lines = f.read().splitlines()
    parsed = [json.loads(ln) for ln in lines if ln.startswith(b"{")]
    access = [e for e in parsed if e.get("logger") == "dropserver.access" and e["host"] == host]
    return access, [ln for ln in lines if not ln.startswith(b"{")]


def test_each_request_leaves_one_json_access_line(stack, proxied):
    port, log = proxied
    appspace = stack.appspace()
    mark = log.stat().st_size
    url = stack.url(appspace, "/").replace(str(stack.port), str(port))
    assert Browser(port).get(url).status == 200

    # The line is written once the response is sent, within a second: the client reads first.
    host = f"{stack.host(appspace)}:{port}"
    poll(lambda: logged_after(log, mark, host)[0])
    access, others = logged_after(log, mark, host)
    assert len(access) == 1, access
    assert others == []  # Daphne's own access line is off: each request is logged once
    entry = access[0]
    assert entry["appspace"] == appspace.subdomain
    assert entry["host"] == host
    assert entry["status"] == 200
    assert entry["route"] == "/"
    assert entry["duration_ms"] > 0
    assert len(entry["request_id"]) == 32
    assert entry["level"] == "INFO"
    assert "user_id" not in entry  # an anonymous visitor


def test_panel_requests_leave_an_access_line_too(stack, proxied):
    port, log = proxied
    mark = log.stat().st_size
    url = stack.panel_url("/accounts/login/").replace(str(stack.port), str(port))
    assert Browser(port).get(url).status == 200
    host = f"{settings.DS_PANEL_HOST}:{port}"
    poll(lambda: logged_after(log, mark, host)[0])
    access, others = logged_after(log, mark, host)
    assert [(e["status"], e.get("route")) for e in access] == [(200, None)]
    assert "appspace" not in access[0] and len(access[0]["request_id"]) == 32
    assert others == []
