"""Header hygiene at the appspace boundary: what the app may see and what the browser gets.

Requests: client-sent `X-Dropserver-*` headers, hop-by-hop headers and the platform's own
cookies never reach the app; the host adds identity and origin headers itself.
Responses: the platform's security headers always win. An app may add restrictions (a
CSP of its own is sent alongside ours, and browsers enforce both) but never loosen them:
CORS headers, Domain cookies and cookies named like the platform's are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import quote

from django.conf import settings

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection",
        b"host", b"content-length",
    }
)
# Response headers the platform owns outright: whatever the app sends is discarded.
PLATFORM_OWNED = frozenset(
    {
        b"x-content-type-options", b"referrer-policy", b"cross-origin-opener-policy",
        b"cross-origin-resource-policy", b"cross-origin-embedder-policy", b"permissions-policy",
        b"strict-transport-security", b"server", b"x-powered-by", b"x-frame-options",
        b"content-security-policy-report-only", b"access-control-allow-origin",
        b"access-control-allow-credentials", b"access-control-allow-methods",
        b"access-control-allow-headers", b"access-control-expose-headers",
        b"access-control-max-age", b"access-control-allow-private-network", b"set-cookie",
        b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"alt-svc",
        b"clear-site-data", b"content-length",
    }
)
IDENTITY_PREFIX = b"x-dropserver-"

PERMISSIONS_POLICY = (
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
    "geolocation=(), gyroscope=(), hid=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), publickey-credentials-get=(), serial=(), usb=(), xr-spatial-tracking=()"
)


def appspace_cookie_name() -> str:
    return "__Host-ds_appspace" if settings.DS_HTTPS else "ds_appspace"


def platform_cookie_names() -> frozenset[str]:
    return frozenset(
        {
            appspace_cookie_name(),
            "ds_appspace",
            "__Host-ds_appspace",
            settings.SESSION_COOKIE_NAME,
            settings.CSRF_COOKIE_NAME,
        }
    )


def _strip_cookies(value: bytes, drop: frozenset[str]) -> bytes:
    kept = []
    for part in value.split(b";"):
        name = part.split(b"=", 1)[0].strip().decode("latin-1")
        if name and name not in drop:
            kept.append(part.strip())
    return b"; ".join(kept)


@dataclass(frozen=True)
class Identity:
    """Who the host says is making the request; None for anonymous visitors."""

    user_id: str
    display_name: str
    permissions: tuple[str, ...]


def forward_request_headers(
    headers: Iterable[Header],
    *,
    identity: Identity | None,
    host: str,
    scheme: str,
    route_index: int,
    params_json: str,
) -> list[Header]:
    """The headers the sandbox receives: scrubbed client headers plus the host's own."""
    drop_cookies = platform_cookie_names()
    out: list[Header] = []
    for name, value in headers:
        if name in HOP_BY_HOP or name.startswith(IDENTITY_PREFIX):
            continue
        if name == b"cookie":
            value = _strip_cookies(value, drop_cookies)
            if not value:
                continue
        out.append((name, value))
    out.append((b"x-dropserver-host", host.encode("latin-1")))
    out.append((b"x-dropserver-scheme", scheme.encode("latin-1")))
    out.append((b"x-dropserver-route", str(route_index).encode()))
    out.append((b"x-dropserver-params", quote(params_json, safe="").encode()))
    if identity is not None:
        out.append((b"x-dropserver-user-id", identity.user_id.encode()))
        out.append((b"x-dropserver-user-name", quote(identity.display_name, safe="").encode()))
        out.append((b"x-dropserver-user-permissions", ",".join(identity.permissions).encode()))
    return out


def _cookie_allowed(value: bytes, drop: frozenset[str]) -> bool:
    """An app cookie is kept only if host-only and not named like one of ours."""
    try:
        cookie = SimpleCookie()
        cookie.load(value.decode("latin-1"))
    except Exception:
        return False
    if len(cookie) != 1:
        return False
    morsel = next(iter(cookie.values()))
    if morsel.key in drop or morsel.key.lower().startswith(("ds_", "__host-ds_", "__secure-ds_")):
        return False
    # A Domain attribute would let an appspace plant cookies on the panel or its siblings.
    return not morsel["domain"]


def platform_response_headers(*, csp: str) -> list[Header]:
    headers = [
        (b"content-security-policy", csp.encode("latin-1")),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"permissions-policy", PERMISSIONS_POLICY.encode()),
    ]
    if settings.DS_HTTPS:
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return headers


def filter_response_headers(headers: Iterable[Header], *, csp: str) -> list[Header]:
    """App response headers made safe, with the platform's headers appended."""
    drop_cookies = platform_cookie_names()
    out: list[Header] = []
    for name, value in headers:
        name = name.lower()
        if name == b"set-cookie":
            if _cookie_allowed(value, drop_cookies):
                out.append((name, value))
            continue
        if name in PLATFORM_OWNED or name.startswith(IDENTITY_PREFIX):
            continue
        # content-security-policy from the app is kept: browsers enforce every CSP header,
        # so an app's policy can only narrow ours.
        out.append((name, value))
    out.extend(platform_response_headers(csp=csp))
    return out
