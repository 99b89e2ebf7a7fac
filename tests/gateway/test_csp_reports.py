"""/.dropserver/csp-report on the live gateway: responses name it, browsers' reports become
pending browser requests, and hostile bodies get a 4xx and cost nothing."""

import http.client
import json
import time

import pytest

from appspaces.models import NetworkRequest

pytestmark = pytest.mark.sandbox

PATH = "/.dropserver/csp-report"


def csp_report(blocked: str, directive: str = "img-src") -> bytes:
    return json.dumps(
        {
            "csp-report": {
                "document-uri": "http://x.localhost/",
                "blocked-uri": blocked,
                "effective-directive": directive,
                "violated-directive": directive,
                "disposition": "enforce",
            }
        }
    ).encode()


def reports_json(*items: tuple[str, str]) -> bytes:
    return json.dumps(
        [
            {
                "type": "csp-violation",
                "age": 1,
                "url": "http://x.localhost/",
                "body": {"blockedURL": url, "effectiveDirective": d, "disposition": "enforce"},
            }
            for url, d in items
        ]
    ).encode()


def post(stack, appspace, body: bytes, content_type="application/csp-report", **kw):
    headers = {"Content-Type": content_type, **kw.pop("headers", {})}
    return stack.browser().request(
        "POST", stack.url(appspace, PATH), headers=headers, body=body, **kw
    )


def pending(appspace):
    return {
        r.value: (r.kind, r.source, r.directives, r.count)
        for r in NetworkRequest.objects.filter(appspace=appspace)
    }


def test_every_appspace_response_names_the_report_endpoint(stack):
    appspace = stack.appspace()
    response = stack.browser().get(stack.url(appspace, "/assets/index.html"))
    assert response.status == 200
    csp = response.header("content-security-policy")
    assert csp.endswith("; report-uri /.dropserver/csp-report")
    # Over plain http no report-to: Chromium would then ignore report-uri and send nothing.
    assert response.header("reporting-endpoints") is None
    # The app cannot name a reporting endpoint of its own (its headers are dropped).
    loose = stack.browser().get(stack.url(appspace, "/loose"))
    assert loose.all("reporting-endpoints") == []
    assert "collector.example" not in " ".join(loose.all("content-security-policy"))


def test_reports_become_pending_browser_requests_once_per_origin(stack):
    appspace = stack.appspace()
    first = post(stack, appspace, csp_report("https://cdn.example.com/a.png?x=1", "img-src"))
    assert first.status == 204, first.text
    again = post(stack, appspace, csp_report("https://cdn.example.com/b.png", "img-src"))
    assert again.status == 204
    batch = post(
        stack,
        appspace,
        reports_json(
            ("https://fonts.example.org:8443/f.woff2", "font-src"),
            ("inline", "script-src-elem"),  # not an origin: skipped, the rest is kept
        ),
        content_type="application/reports+json",
    )
    assert batch.status == 204, batch.text
    assert pending(appspace) == {
        "https://cdn.example.com": ("browser", "report", "img-src", 1),  # the repeat: in memory
        "https://fonts.example.org:8443": ("browser", "report", "font-src", 1),
    }


def test_an_allowed_origin_is_not_pending(stack):
    appspace = stack.appspace(browser_origins=("https://cdn.example.com",))
    assert post(stack, appspace, csp_report("https://cdn.example.com/a.png")).status == 204
    assert pending(appspace) == {}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (csp_report("https://a.example.com/x"), "application/json", 415),
        (csp_report("https://a.example.com/x"), "text/plain", 415),
        (b"{" * 5000, "application/csp-report", 400),
        (b"x" * 9000, "application/csp-report", 413),
        (b"not json", "application/csp-report", 400),
        (b"[]", "application/csp-report", 400),
        (b'{"csp-report": "x"}', "application/csp-report", 400),
        (csp_report("inline", "script-src"), "application/csp-report", 400),
        (csp_report("data:image/png;base64,AA", "img-src"), "application/csp-report", 400),
        (csp_report("http://10.0.0.5/x"), "application/csp-report", 400),
        (csp_report("http://192.168.1.1:8080/x"), "application/csp-report", 400),
        (csp_report("http://cdn.example.com/x"), "application/csp-report", 400),  # not https
        (csp_report("https://a.example.com/x", "object-src"), "application/csp-report", 400),
        (csp_report("https://a.example.com/x", "frame-ancestors"), "application/csp-report", 400),
        (csp_report("https://a.example.com/x", 7), "application/csp-report", 400),
        (csp_report("https://user@a.example.com:99999/x"), "application/csp-report", 400),
        (csp_report("https://[::1]/x"), "application/csp-report", 400),
        (b'{"csp-report": {"blocked-uri": ["https://a.example.com"]}}', None, 400),
        (reports_json(*[("https://a.example.com", "img-src")] * 11), "reports", 400),
        (reports_json(("inline", "img-src")), "reports", 400),
        (b'[{"type": "csp-violation", "body": 5}]', "reports", 400),
        (b'{"type": "csp-violation"}', "reports", 400),
    ],
)
def test_hostile_reports_get_a_4xx_and_write_nothing(stack, body, content_type, status):
    appspace = stack.appspace()
    content_type = {None: "application/csp-report", "reports": "application/reports+json"}.get(
        content_type, content_type
    )
    response = post(stack, appspace, body, content_type=content_type)
    assert response.status == status, response.text
    assert pending(appspace) == {}


def test_only_post_and_no_cross_tenant_effect(stack):
    appspace = stack.appspace()
    assert stack.browser().get(stack.url(appspace, PATH)).status == 405
    other = stack.appspace()
    assert post(stack, appspace, csp_report("https://cdn.example.com/a.png")).status == 204
    assert pending(other) == {}


def test_a_declared_oversized_body_is_refused_unread(stack):
    appspace = stack.appspace()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.putrequest("POST", PATH, skip_host=True)
    conn.putheader("Host", f"{stack.host(appspace)}:{stack.port}")
    conn.putheader("Content-Type", "application/csp-report")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"{" * 1024)
    assert conn.getresponse().status == 413
    conn.close()


def test_a_flood_is_rate_limited_in_memory(stack):
    """10 000 forged reports of distinct valid origins from the app's own page (or anyone):
    the first DS_CSP_REPORTS_PER_MINUTE in a minute are taken, the rest are 429 before the
    body is even parsed, and the pending list stays bounded. Prints what it cost."""
    appspace = stack.appspace()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    statuses: dict[int, int] = {}
    start = time.monotonic()
    for i in range(10_000):
        body = csp_report(f"https://o{i}.example.com/x.png")
        conn.request(
            "POST",
            PATH,
            body=body,
            headers={
                "Host": f"{stack.host(appspace)}:{stack.port}",
                "Content-Type": "application/csp-report",
            },
        )
        response = conn.getresponse()
        response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
    took = time.monotonic() - start
    conn.close()
    rows = NetworkRequest.objects.filter(appspace=appspace).count()
    minutes = int(took // 60) + 1
    print(
        f"\nflood: 10000 reports in {took:.1f}s ({took / 10_000 * 1000:.2f} ms each), "
        f"statuses {statuses}, rows written {rows}"
    )
    assert set(statuses) <= {204, 429}
    assert statuses.get(204, 0) <= 60 * minutes
    assert rows <= 60 * minutes


def test_over_https_the_policy_also_names_the_reporting_api_endpoint():
    from appspaces.gateway.csp import REPORTING_ENDPOINTS, appspace_csp
    from appspaces.gateway.headers import platform_response_headers

    policy = appspace_csp([], report_to=True)
    assert policy.endswith("; report-uri /.dropserver/csp-report; report-to dropserver-csp")
    headers = dict(platform_response_headers(csp=policy, https=True, reporting=REPORTING_ENDPOINTS))
    assert headers[b"reporting-endpoints"] == b'dropserver-csp="/.dropserver/csp-report"'
