"""Header hygiene at the appspace boundary: what the app may see and what the browser gets.

Requests: client-sent `X-Dropserver-*` headers, hop-by-hop and proxy headers and the platform's
own cookies never reach the app; the host adds identity, route and origin headers itself, in
the format the harness reads (docs/sandbox.md, "Host <-> harness wire protocol").
Responses: the platform's security headers always win. An app may add restrictions (a CSP of
its own is sent alongside ours, and browsers enforce both) but never loosen them: CORS and
reporting headers, Domain cookies and cookies named like the platform's are dropped, and a
header carrying control characters is dropped rather than passed on to the browser.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings

Header = tuple[bytes, bytes]

# Request headers that describe this hop, or that a client could use to lie about the
# client's address or the original request: never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"host",
        b"content-length",
        b"expect",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-real-ip",
        b"http2-settings",
    }
)
# Response headers the platform owns outright: whatever the app sends is discarded.
PLATFORM_OWNED = frozenset(
    {
        b"x-content-type-options",
        b"referrer-policy",
        b"cross-origin-opener-policy",
        b"cross-origin-resource-policy",
        b"cross-origin-embedder-policy",
        b"permissions-policy",
        b"x-dns-prefetch-control",
        b"strict-transport-security",
        b"server",
        b"x-powered-by",
        b"x-frame-options",
        # Reports go wherever the app says, outside the CSP's reach: a way out for data.
        b"content-security-policy-report-only",
        b"report-to",
        b"reporting-endpoints",
        b"nel",
        b"timing-allow-origin",
        b"set-cookie",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"alt-svc",
        b"clear-site-data",
        b"content-length",
        b"proxy-connection",
        b"trailer",
    }
)
IDENTITY_PREFIX = b"x-dropserver-"
CORS_PREFIX = b"access-control-"
PLATFORM_COOKIE_PREFIXES = ("ds_", "__host-ds_", "__secure-ds_")

PERMISSIONS_POLICY = (
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
    "geolocation=(), gyroscope=(), hid=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), publickey-credentials-get=(), serial=(), usb=(), xr-spatial-tracking=()"
)
# Field values may hold visible ASCII, spaces, tabs and obs-text; nothing that could end a line.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_CSP_REPORTING = re.compile(r"^\s*(report-uri|report-to)(\s|$)", re.IGNORECASE)


def appspace_cookie_name() -> str:
    return "__Host-ds_appspace" if settings.DS_HTTPS else "ds_appspace"


def platform_cookie_names() -> frozenset[str]:
    return _platform_cookie_names(
        appspace_cookie_name(), settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME
    )


@functools.lru_cache(maxsize=8)
def _platform_cookie_names(*names: str) -> frozenset[str]:
    return frozenset({"ds_appspace", "__Host-ds_appspace", *names})


def is_platform_cookie(name: str, platform_names: frozenset[str]) -> bool:
    return name in platform_names or name.lower().startswith(PLATFORM_COOKIE_PREFIXES)


def strip_platform_cookies(value: bytes, platform_names: frozenset[str]) -> bytes:
    """A Cookie header without the platform's cookies (b"" when nothing is left)."""
    kept = []
    for part in value.split(b";"):
        part = part.strip()
        name = part.split(b"=", 1)[0].strip().decode("latin-1")
        if part and not is_platform_cookie(name, platform_names):
            kept.append(part)
    return b"; ".join(kept)


def read_cookie(headers: Iterable[Header], name: str) -> str | None:
    """The value of one cookie from the request's Cookie headers, or None."""
    wanted = name.encode("latin-1") + b"="
    for header, value in headers:
        if header == b"cookie" and wanted in value:
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(wanted):
                    return part[len(wanted) :].decode("latin-1")
    return None


@dataclass(frozen=True)
class Identity:
    """Who the host says is making the request; None for anonymous visitors."""

    user_id: str
    display_name: str
    permissions: tuple[str, ...]

    def headers(self) -> tuple[Header, ...]:
        """The identity headers, encoded once per identity (the gateway caches them)."""
        return (
            (b"x-dropserver-user-id", self.user_id.encode("ascii")),
            (b"x-dropserver-user-name", quote(self.display_name, safe="").encode("ascii")),
            (b"x-dropserver-user-permissions", _ascii_json(list(self.permissions))),
        )


def _ascii_json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def encode_params(params: Mapping[str, str]) -> bytes:
    """X-Dropserver-Params: a JSON object, ASCII only (escapes keep control characters out)."""
    return _ascii_json(params) if params else b"{}"


def forward_request_headers(
    headers: Iterable[Header],
    *,
    identity: Identity | None,
    host: str,
    scheme: str,
    route_index: int,
    params: Mapping[str, str],
    identity_headers: tuple[Header, ...] | None = None,
    platform_names: frozenset[str] | None = None,
) -> list[Header]:
    """The headers the sandbox receives: scrubbed client headers plus the host's own.

    `host` is the original Host header (name[:port]); it becomes both Host and
    X-Dropserver-Host. `identity_headers` may carry `identity.headers()` computed earlier.
    """
    platform_names = platform_names or platform_cookie_names()
    nominated: frozenset[bytes] = frozenset()
    out: list[Header] = []
    for name, value in headers:
        name = name.lower()  # ASGI servers lower-case names; do not bet security on it
        if name == b"connection":
            # Headers a client names in Connection are hop-by-hop too (RFC 9110 7.6.1).
            nominated = nominated | {v.strip().lower() for v in value.split(b",")}
            continue
        if name in HOP_BY_HOP or name.startswith(IDENTITY_PREFIX):
            continue
        if name == b"cookie":
            value = strip_platform_cookies(value, platform_names)
            if not value:
                continue
        out.append((name, value))
    if nominated:
        out = [(n, v) for n, v in out if n not in nominated]
    host_bytes = host.encode("latin-1")
    out.append((b"host", host_bytes))
    out.append((b"x-dropserver-host", host_bytes))
    out.append((b"x-dropserver-scheme", b"https" if scheme == "https" else b"http"))
    out.append((b"x-dropserver-route", str(route_index).encode()))
    out.append((b"x-dropserver-params", encode_params(params)))
    if identity is not None:
        out.extend(identity_headers if identity_headers is not None else identity.headers())
    return out


def set_cookie_allowed(value: bytes, platform_names: frozenset[str]) -> bool:
    """An app cookie is kept only if host-only and not named like one of the platform's."""
    try:
        text = value.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return False
    pair, *attributes = text.split(";")
    if "=" not in pair:
        return False
    name = pair.split("=", 1)[0].strip()
    if not name or is_platform_cookie(name, platform_names):
        return False
    # A Domain attribute (even one naming this host) would let an appspace plant cookies on
    # the panel or its siblings, or read theirs back.
    return not any(a.split("=", 1)[0].strip().lower() == "domain" for a in attributes)


def narrow_app_csp(value: bytes) -> bytes | None:
    """The app's own CSP without its reporting directives (which would send violation
    reports, and so data, anywhere); None when nothing is left."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    kept = []
    for policy in text.split(","):  # a comma separates policies; each is enforced
        directives = [d for d in policy.split(";") if d.strip() and not _CSP_REPORTING.match(d)]
        if directives:
            kept.append(";".join(directives).strip())
    return ", ".join(kept).encode("ascii") if kept else None


def platform_response_headers(
    *, csp: str, https: bool | None = None, reporting: str = ""
) -> list[Header]:
    """`reporting`: the Reporting-Endpoints value naming where CSP reports go, if any."""
    headers = [
        (b"content-security-policy", csp.encode("latin-1")),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"permissions-policy", PERMISSIONS_POLICY.encode()),
        # No resolving of names a page merely links to: data spelled into a host name would
        # reach that name's DNS server, outside the CSP.
        (b"x-dns-prefetch-control", b"off"),
    ]
    if reporting:
        headers.append((b"reporting-endpoints", reporting.encode("latin-1")))
    if settings.DS_HTTPS if https is None else https:
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return headers


def filter_response_headers(
    headers: Iterable[Header],
    *,
    csp: str = "",
    platform: list[Header] | None = None,
    platform_names: frozenset[str] | None = None,
) -> list[Header]:
    """App response headers made safe, with the platform's headers appended.

    Pass `platform` (from `platform_response_headers`) to reuse headers computed once per
    appspace; otherwise they are built from `csp`.
    """
    platform_names = platform_names or platform_cookie_names()
    out: list[Header] = []
    app_cookies: set[bytes] = set()
    for name, value in headers:
        name = name.lower()
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            continue
        if name == b"set-cookie":
            if set_cookie_allowed(value, platform_names):
                out.append((name, value))
                app_cookies.add(_cookie_name(value))
            continue
        if name == b"content-security-policy":
            narrowed = narrow_app_csp(value)
            if narrowed is not None:
                out.append((name, narrowed))
            continue
        if name in PLATFORM_OWNED or name.startswith((IDENTITY_PREFIX, CORS_PREFIX)):
            continue
        out.append((name, value))
    platform = platform if platform is not None else platform_response_headers(csp=csp)
    if app_cookies:  # the app's new cookie wins over the expiry of an old one (reused_names)
        platform = [
            h for h in platform if h[0] != b"set-cookie" or _cookie_name(h[1]) not in app_cookies
        ]
    out.extend(platform)
    return out


def _cookie_name(set_cookie: bytes) -> bytes:
    return set_cookie.split(b";", 1)[0].split(b"=", 1)[0].strip()
