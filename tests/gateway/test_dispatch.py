"""Dispatch: which appspace a host is, and what a visitor gets when it cannot be served."""

import pytest

from appspaces.models import Appspace

pytestmark = pytest.mark.sandbox

PLATFORM = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def assert_platform_headers(response):
    for name, value in PLATFORM.items():
        assert response.all(name) == [value], (name, response.headers)
    csp = response.all("content-security-policy")
    assert csp and "frame-ancestors 'self'" in csp[-1] or "frame-ancestors 'none'" in csp[-1]
    assert "camera=()" in response.header("permissions-policy")
    assert not [h for h, _ in response.headers if h.lower().startswith("access-control-")]


def test_it_serves_a_public_route(stack):
    response = stack.browser().get(stack.url(stack.main, "/"))
    assert response.status == 200
    assert response.body == b"home"
    assert_platform_headers(response)
    assert response.header("content-security-policy") == (
        "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'self'; report-uri /.dropserver/csp-report"
    )
    assert response.header("strict-transport-security") is None  # http here


def test_an_unknown_appspace_is_a_bare_404(stack):
    response = stack.browser().get(f"http://nosuchthing.localhost:{stack.port}/anything")
    assert response.status == 404
    assert response.body == b"Not Found"
    assert_platform_headers(response)


def test_an_unknown_route_is_a_404_page(stack):
    response = stack.browser().get(stack.url(stack.main, "/no/such/page"))
    assert response.status == 404
    assert b"Page not found" in response.body
    assert_platform_headers(response)


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (Appspace.Status.CREATING, b"being created"),
        (Appspace.Status.PAUSED, b"paused"),
        (Appspace.Status.MIGRATING, b"moved to another version"),
        (Appspace.Status.PROBLEM, b"has a problem"),
    ],
)
def test_an_appspace_that_is_not_active_says_why(stack, status, says):
    appspace = stack.appspace(status=status)
    if status == Appspace.Status.PROBLEM:
        Appspace.objects.filter(pk=appspace.pk).update(status_reason="<b>data</b> migration failed")
    response = stack.browser().get(stack.url(appspace, "/"))
    assert response.status == 503
    assert says in response.body
    assert_platform_headers(response)
    if status == Appspace.Status.MIGRATING:
        assert response.header("retry-after") == "30"
    if status == Appspace.Status.PROBLEM:
        assert b"&lt;b&gt;data&lt;/b&gt; migration failed" in response.body
    # No sandbox was started for it.
    assert str(appspace.public_id) not in {s["id"] for s in stack.supervisor.client.list()}


def test_gateway_pages_have_their_stylesheet(stack):
    response = stack.browser().get(stack.url(stack.main, "/.dropserver/style.css"))
    assert response.status == 200
    assert response.header("content-type") == "text/css; charset=utf-8"
    assert_platform_headers(response)
