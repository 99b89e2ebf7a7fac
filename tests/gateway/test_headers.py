"""Unit tests of the header policy (appspaces/gateway/headers.py) and the CSP (csp.py)."""

import json
from urllib.parse import unquote

import pytest

from appspaces.gateway import csp
from appspaces.gateway.headers import (
    Identity,
    appspace_cookie_name,
    filter_response_headers,
    forward_request_headers,
    narrow_app_csp,
    platform_response_headers,
    set_cookie_allowed,
    strip_platform_cookies,
)

POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'self'; report-uri /.dropserver/csp-report"
)
NAMES = frozenset({"ds_appspace", "__Host-ds_appspace", "ds_panel", "ds_csrf"})


def forward(headers, identity=None, **kwargs):
    return forward_request_headers(
        headers,
        identity=identity,
        host=kwargs.pop("host", "notes.localhost:8000"),
        scheme=kwargs.pop("scheme", "http"),
        route_index=kwargs.pop("route_index", 3),
        params=kwargs.pop("params", {}),
    )


def test_client_identity_headers_are_replaced_by_the_hosts():
    identity = Identity("user-1", "Zoë", ("edit",))
    out = forward(
        [
            (b"x-dropserver-user-id", b"forged"),
            (b"X-Dropserver-Route", b"9"),
            (b"x-dropserver-anything", b"x"),
            (b"accept", b"*/*"),
        ],
        identity,
        params={"id": "café/x"},
    )
    assert out == [
        (b"accept", b"*/*"),
        (b"host", b"notes.localhost:8000"),
        (b"x-dropserver-host", b"notes.localhost:8000"),
        (b"x-dropserver-scheme", b"http"),
        (b"x-dropserver-route", b"3"),
        (b"x-dropserver-params", b'{"id":"caf\\u00e9/x"}'),
        (b"x-dropserver-user-id", b"user-1"),
        (b"x-dropserver-user-name", b"Zo%C3%AB"),
        (b"x-dropserver-user-permissions", b'["edit"]'),
    ]
    assert json.loads(dict(out)[b"x-dropserver-params"]) == {"id": "café/x"}


def test_anonymous_requests_carry_no_identity():
    names = [name for name, _ in forward([(b"x-dropserver-user-id", b"forged")])]
    assert not [n for n in names if n.startswith(b"x-dropserver-user")]


def test_hop_by_hop_proxy_and_nominated_headers_are_dropped():
    out = dict(
        forward(
            [
                (b"connection", b"close, x-secret"),
                (b"x-secret", b"1"),
                (b"keep-alive", b"5"),
                (b"transfer-encoding", b"chunked"),
                (b"content-length", b"3"),
                (b"host", b"evil"),
                (b"x-forwarded-for", b"1.2.3.4"),
                (b"forwarded", b"for=1.2.3.4"),
                (b"te", b"trailers"),
                (b"upgrade", b"h2c"),
                (b"expect", b"100-continue"),
                (b"x-kept", b"1"),
            ]
        )
    )
    assert out[b"x-kept"] == b"1"
    assert out[b"host"] == b"notes.localhost:8000"
    for gone in (
        b"connection",
        b"x-secret",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"x-forwarded-for",
        b"forwarded",
        b"te",
        b"upgrade",
        b"expect",
    ):
        assert gone not in out


def test_the_scheme_header_is_only_ever_http_or_https():
    assert dict(forward([], scheme="https"))[b"x-dropserver-scheme"] == b"https"
    assert dict(forward([], scheme="javascript"))[b"x-dropserver-scheme"] == b"http"


def test_platform_cookies_are_stripped_from_requests():
    value = b"a=1; ds_appspace=k; ds_panel=s; __Host-ds_x=1; DS_Other=2; b=2; ds_csrf=t"
    assert strip_platform_cookies(value, NAMES) == b"a=1; b=2"
    assert strip_platform_cookies(b"ds_appspace=k", NAMES) == b""
    out = forward([(b"cookie", b"ds_appspace=k; ds_panel=s")])
    assert b"cookie" not in dict(out)


@pytest.mark.parametrize(
    ("cookie", "allowed"),
    [
        (b"pref=dark; Path=/; HttpOnly; SameSite=Lax", True),
        (b"__Host-app=1; Path=/; Secure", True),
        (b"pref=dark; Domain=localhost", False),
        (b"pref=dark; domain=notes.localhost; Path=/", False),
        (b"pref=dark; Domain=", False),
        (b"ds_appspace=forged", False),
        (b"__Host-ds_appspace=forged; Secure; Path=/", False),
        (b"ds_panel=x", False),
        (b"Ds_Anything=x", False),
        (b"__Secure-ds_x=1; Secure", False),
        (b"=nameless", False),
        (b"novalue", False),
    ],
)
def test_app_cookies(cookie, allowed):
    assert set_cookie_allowed(cookie, NAMES) is allowed


def test_the_platform_headers_win_over_the_apps(settings):
    settings.DS_HTTPS = False
    app = [
        (b"Content-Type", b"text/html"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"access-control-allow-credentials", b"true"),
        (b"Access-Control-Expose-Headers", b"x"),
        (b"Content-Security-Policy", b"default-src *; report-uri https://c.example/r"),
        (b"Content-Security-Policy-Report-Only", b"default-src 'none'; report-to x"),
        (b"X-Frame-Options", b"ALLOWALL"),
        (b"X-Content-Type-Options", b"sniff"),
        (b"Referrer-Policy", b"unsafe-url"),
        (b"Cross-Origin-Resource-Policy", b"cross-origin"),
        (b"Strict-Transport-Security", b"max-age=0"),
        (b"Permissions-Policy", b"camera=*"),
        (b"X-DNS-Prefetch-Control", b"on"),
        (b"Timing-Allow-Origin", b"*"),
        (b"Report-To", b"{}"),
        (b"NEL", b"{}"),
        (b"Reporting-Endpoints", b'a="https://c.example"'),
        (b"X-Dropserver-User-Id", b"x"),
        (b"Set-Cookie", b"ok=1; Path=/"),
        (b"Set-Cookie", b"wide=1; Domain=localhost"),
        (b"Server", b"deno"),
        (b"X-Custom", b"kept"),
        (b"X-Evil", b"a\nInjected: 1"),
        (b"Bad Name", b"x"),
        (b"content-length", b"999"),
        (b"transfer-encoding", b"chunked"),
    ]
    out = filter_response_headers(app, csp=POLICY)
    assert out[:4] == [
        (b"content-type", b"text/html"),
        (b"content-security-policy", b"default-src *"),
        (b"set-cookie", b"ok=1; Path=/"),
        (b"x-custom", b"kept"),
    ]
    assert out[4:] == platform_response_headers(csp=POLICY)
    names = [n for n, _ in out]
    assert names.count(b"x-frame-options") == names.count(b"referrer-policy") == 1
    assert (
        dict(out)[b"x-dns-prefetch-control"] == b"off"
        and names.count(b"x-dns-prefetch-control") == 1
    )
    assert b"strict-transport-security" not in names  # http: none, not the app's max-age=0


def test_hsts_over_https(settings):
    settings.DS_HTTPS = True
    headers = dict(platform_response_headers(csp=POLICY))
    assert headers[b"strict-transport-security"] == b"max-age=31536000; includeSubDomains"
    assert appspace_cookie_name() == "__Host-ds_appspace"
    settings.DS_HTTPS = False
    assert appspace_cookie_name() == "ds_appspace"


def test_every_platform_header_is_there():
    headers = dict(platform_response_headers(csp=POLICY, https=False))
    assert headers == {
        b"content-security-policy": POLICY.encode(),
        b"x-content-type-options": b"nosniff",
        b"referrer-policy": b"no-referrer",
        b"cross-origin-opener-policy": b"same-origin",
        b"cross-origin-resource-policy": b"same-origin",
        b"x-frame-options": b"SAMEORIGIN",
        b"permissions-policy": headers[b"permissions-policy"],
        b"x-dns-prefetch-control": b"off",
    }
    for feature in (b"camera=()", b"microphone=()", b"geolocation=()", b"usb=()"):
        assert feature in headers[b"permissions-policy"]


@pytest.mark.parametrize(
    ("app", "kept"),
    [
        (b"default-src 'none'; img-src 'self'", b"default-src 'none'; img-src 'self'"),
        (b"default-src *; report-uri https://c.example", b"default-src *"),
        (b"report-to grp; REPORT-URI /x", None),
        (b"script-src 'self', img-src 'none'; report-to g", b"script-src 'self', img-src 'none'"),
        ("default-src 'self' https://é.example".encode(), None),
    ],
)
def test_an_apps_csp_loses_its_reporting(app, kept):
    assert narrow_app_csp(app) == kept


def test_the_csp_has_the_allowlisted_origins_only():
    assert csp.appspace_csp([]) == POLICY
    policy = csp.appspace_csp(
        ["https://tiles.example.com", "https://*.cdn.example:8443", "https://tiles.example.com"]
    )
    assert policy.startswith(
        "default-src 'self' https://*.cdn.example:8443 https://tiles.example.com; "
    )
    assert policy.endswith("frame-ancestors 'self'; report-uri /.dropserver/csp-report")


@pytest.mark.parametrize(
    "bad",
    [
        "https://x.example; script-src *",
        "https://x.example 'unsafe-inline'",
        "*",
        "https://x.example/path",
        "javascript:alert(1)",
        "https://x.example, https://y.example",
        "data:",
        "http://tiles.example.com",  # http only for localhost
    ],
)
def test_bad_allowlist_values_never_reach_the_policy(bad):
    assert csp.appspace_csp([bad, "https://ok.example"]) == (
        "default-src 'self' https://ok.example; " + POLICY.split("; ", 1)[1]
    )


def test_identity_header_values_are_what_the_harness_parses():
    identity = Identity("u1", 'Zoë "Z" <z>', ("edit", "a,b"))
    headers = dict(identity.headers())
    assert json.loads(headers[b"x-dropserver-user-permissions"]) == ["edit", "a,b"]
    assert unquote(headers[b"x-dropserver-user-name"].decode()) == 'Zoë "Z" <z>'
