"""Header hygiene through the real stack: what the app sees of a request, and what the browser
sees of the app's response."""

import pytest

from tests.gateway.test_dispatch import assert_platform_headers

pytestmark = pytest.mark.sandbox

OURS = (
    "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'self'; report-uri /.dropserver/csp-report"
)


def test_spoofed_identity_headers_never_reach_the_app(stack):
    forged = {
        "X-Dropserver-User-Id": "forged-id",
        "X-Dropserver-User-Name": "Mallory",
        "X-Dropserver-User-Permissions": '["edit","admin"]',
        "X-Dropserver-Route": "4",  # /edit
        "X-Dropserver-Host": "evil.example",
        "X-Dropserver-Scheme": "https",
    }
    anonymous = stack.browser().get(stack.url(stack.main, "/echo"), headers=forged).json()
    assert anonymous["user"] is None
    assert anonymous["url"] == stack.url(stack.main, "/echo")  # route 1 ran, on our host
    assert not [h for h in anonymous["headers"] if h.startswith("x-dropserver")]
    member = stack.enter(stack.main, stack.carol)
    seen = member.get(stack.url(stack.main, "/echo"), headers=forged).json()
    assert seen["user"] == {
        "id": str(stack.carol.public_id),
        "displayName": "Carol",
        "permissions": [],
    }


def test_the_platforms_cookies_never_reach_the_app(stack):
    browser = stack.enter(stack.main, stack.bob)
    host = stack.host(stack.main)
    browser.cookies[host].update(
        {"app_pref": "1", "ds_panel": "stolen", "ds_csrf": "x", "ds_other": "y", "z": "2"}
    )
    seen = browser.get(stack.url(stack.main, "/echo")).json()
    assert seen["user"]["id"] == str(stack.bob.public_id)  # our cookie worked...
    assert seen["headers"]["cookie"] == "app_pref=1; z=2"  # ...and went no further


def test_the_app_learns_the_original_host_and_scheme(stack):
    seen = stack.browser().get(stack.url(stack.main, "/echo?a=1")).json()
    assert seen["url"] == stack.url(stack.main, "/echo?a=1")
    assert seen["headers"]["host"] == f"{stack.host(stack.main)}:{stack.port}"


def test_params_are_decoded_once_and_encoded_slashes_are_refused(stack):
    browser = stack.browser()
    assert browser.get(stack.url(stack.main, "/items/caf%C3%A9")).json()["params"] == {"id": "café"}
    assert browser.get(stack.url(stack.main, "/items/100%25")).json()["params"] == {"id": "100%"}
    # An escaped separator would be one segment here and two in an app that decodes first.
    assert browser.get(stack.url(stack.main, "/items/a%2Fb")).status == 400
    assert browser.get(stack.url(stack.main, "/items/a%5cb")).status == 400
    assert browser.get(stack.url(stack.main, "/items/a/b")).status == 404


def test_loose_app_headers_are_replaced_by_the_platforms(stack):
    response = stack.browser().get(stack.url(stack.main, "/loose"))
    assert response.status == 200
    assert_platform_headers(response)
    names = {name.lower() for name, _ in response.headers}
    assert not {n for n in names if n.startswith("access-control-")}
    assert "x-dropserver-user-id" not in names
    assert "reporting-endpoints" not in names  # the app's is dropped; ours only over https
    assert response.all("x-frame-options") == ["SAMEORIGIN"]
    assert response.header("x-app-header") == "kept"
    # Ours is always there; the app's own CSP is kept (browsers enforce both, so it can only
    # narrow ours) without its report-uri, which could carry data anywhere.
    assert response.all("content-security-policy") == ["default-src *", OURS]
    # Only the host-only cookie with a name of its own survives.
    assert response.all("set-cookie") == ["app_pref=dark; Path=/; HttpOnly"]


def test_browser_allowlist_origins_join_the_policy(stack):
    appspace = stack.appspace(
        browser_origins=("https://tiles.example.com", "https://*.cdn.example")
    )
    response = stack.browser().get(stack.url(appspace, "/"))
    assert response.header("content-security-policy") == (
        "default-src 'self' https://*.cdn.example https://tiles.example.com; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'self'; "
        "report-uri /.dropserver/csp-report"
    )


def test_cross_origin_preflights_are_refused(stack):
    response = stack.browser().request(
        "OPTIONS",
        stack.url(stack.main, "/echo"),
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status == 403
    assert not [h for h, _ in response.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),  # a sandboxed frame
        # The browser's form POST from the appspace's own page, under our no-referrer policy.
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),  # a sibling appspace is another origin
        ("sibling", 403),
        ("own", 200),
        ({}, 200),  # no browser: no ambient cookies to abuse
    ],
)
def test_state_changing_requests_from_other_origins_are_refused(stack, headers, status):
    browser = stack.enter(stack.main, stack.bob)
    if headers == "own":
        headers = {"Origin": stack.url(stack.main, ""), "Sec-Fetch-Site": "same-origin"}
    elif headers == "sibling":
        headers = {"Origin": f"http://other.localhost:{stack.port}"}
    response = browser.post(stack.url(stack.main, "/submit"), b"x=1", headers=headers)
    assert response.status == status, response.text[:200]
    if status == 200:
        assert response.body == b"submitted"


def test_header_caps(stack):
    browser = stack.browser()
    many = {f"X-Extra-{i}": "1" for i in range(70)}
    assert browser.get(stack.url(stack.main, "/echo"), headers=many).status == 431
    big = {"X-Big": "a" * (13 * 1024)}
    response = browser.get(stack.url(stack.main, "/echo"), headers=big)
    assert response.status == 431
    assert_platform_headers(response)
    assert browser.get(stack.url(stack.main, "/echo")).status == 200


def test_head_and_streamed_responses(stack):
    browser = stack.browser()
    head = browser.request("HEAD", stack.url(stack.main, "/"))
    assert head.status == 200
    assert head.body == b""
    assert head.header("content-length") == "4"
    streamed = browser.get(stack.url(stack.main, "/stream?n=5"))
    assert streamed.status == 200
    assert streamed.body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
    assert streamed.header("transfer-encoding") == "chunked"
    assert_platform_headers(streamed)
