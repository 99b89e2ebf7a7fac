"""`/.dropserver/csp-report` on every appspace host: browsers report there what the appspace's
CSP blocked (`report-uri`, application/csp-report; `report-to` + Reporting-Endpoints,
application/reports+json), and each blocked origin the owner could allow becomes a pending
browser request (appspaces.network.requests).

Anyone can post here, the app's own script included, so a report is a hint, never a grant, and
costs little: the per-appspace rate limit is checked first, in memory (O(1), no database);
then the content type, a body cap, the JSON shape, a known fetch directive and an origin that
parses as a browser-allowlist origin. A (appspace, origin) seen in the last DEDUP_SECONDS is
counted in memory and written with the next write, so a flood of one origin writes at most one
row update per DEDUP_SECONDS. Limits are per process (DS_WEB_PROCESSES multiplies them).
Everything refused gets a 4xx; accepted reports get 204.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings

from appspaces.gateway import pages
from appspaces.network.requests import browser_report_record
from packages.allowlist import AllowlistError, parse_browser_origin

PATH = "/.dropserver/csp-report"
ENDPOINT_NAME = "dropserver-csp"
MAX_BODY = 8 * 1024
MAX_REPORTS = 10  # per request body (reports+json batches several)
DEDUP_SECONDS = 30.0
WINDOW_SECONDS = 60.0
CONTENT_TYPES = (b"application/csp-report", b"application/reports+json")
# Fetch directives an allowlisted origin lifts (default-src covers them); not object-src,
# base-uri, form-action or frame-ancestors, which stay fixed whatever the owner allows.
DIRECTIVES = frozenset(
    {
        "default-src",
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "style-src",
        "style-src-elem",
        "style-src-attr",
        "img-src",
        "font-src",
        "connect-src",
        "media-src",
        "frame-src",
        "child-src",
        "worker-src",
        "manifest-src",
    }
)

_record = database_sync_to_async(browser_report_record, thread_sensitive=False)

# appspace pk -> [window start, requests in it]
_windows: dict[int, list[float]] = {}
# (appspace pk, origin) -> [last write time, reports counted since]
_seen: dict[tuple[int, str], list[float]] = {}


def per_minute() -> int:
    return settings.DS_CSP_REPORTS_PER_MINUTE


def reset() -> None:
    """Forget the in-memory counters (tests)."""
    _windows.clear()
    _seen.clear()


def over_limit(appspace_pk: int, now: float) -> bool:
    window = _windows.get(appspace_pk)
    if window is None or now - window[0] >= WINDOW_SECONDS:
        if len(_windows) > 10_000:
            _windows.clear()
        _windows[appspace_pk] = [now, 1]
        return False
    window[1] += 1
    return window[1] > per_minute()


class BadReport(Exception):
    pass


def _origin(url: object) -> str:
    if not isinstance(url, str) or len(url) > 2048 or "://" not in url:
        raise BadReport("not a URL")  # 'inline', 'eval', 'data' and the like
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadReport("not a URL") from None
    host = parts.hostname or ""
    text = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    try:
        return str(parse_browser_origin(text))
    except AllowlistError:
        raise BadReport("not an origin an owner could allow") from None


def _directive(value: object) -> str:
    if not isinstance(value, str):
        raise BadReport("no directive")
    name = value.strip().split(" ", 1)[0].lower()
    if name not in DIRECTIVES:
        raise BadReport("unknown directive")
    return name


def parse_reports(content_type: bytes, body: bytes) -> list[tuple[str, str]]:
    """-> [(origin, directive)] the body reports; BadReport if it has none or is malformed."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadReport("not JSON") from None
    found = []
    if content_type == b"application/csp-report":
        report = data.get("csp-report") if isinstance(data, dict) else None
        if not isinstance(report, dict):
            raise BadReport("no csp-report")
        directive = report.get("effective-directive") or report.get("violated-directive")
        found.append((_origin(report.get("blocked-uri")), _directive(directive)))
    else:
        if not isinstance(data, list) or not data or len(data) > MAX_REPORTS:
            raise BadReport("not a list of reports")
        for item in data:
            if not isinstance(item, dict) or item.get("type") != "csp-violation":
                continue
            report = item.get("body")
            if not isinstance(report, dict):
                continue
            try:
                found.append(
                    (
                        _origin(report.get("blockedURL")),
                        _directive(report.get("effectiveDirective")),
                    )
                )
            except BadReport:
                continue
        if not found:
            raise BadReport("no report of an origin")
    return found


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes or the client left."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


def _content_type(headers) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


async def handle(scope: dict, receive, send, *, config, facts) -> None:
    async def reply(status: int, text: bytes = b"", headers=()) -> None:
        await pages.send_response(
            send,
            status,
            text,
            platform=config.platform_headers,
            content_type=b"text/plain; charset=utf-8",
            headers=[(b"cache-control", b"no-store"), *headers],
        )

    if scope["method"] != "POST":
        return await reply(405, b"POST reports here.", [(b"allow", b"POST")])
    now = time.monotonic()
    if over_limit(config.pk, now):
        return await reply(429, b"Too many reports.")
    content_type = _content_type(scope["headers"])
    if content_type not in CONTENT_TYPES:
        return await reply(415, b"Not a CSP report.")
    length = facts.content_length
    if length is not None and (length < 0 or length > MAX_BODY):
        return await reply(413, b"Report too large.")
    body = await read_body(receive, MAX_BODY)
    if body is None:
        return await reply(413, b"Report too large.")
    try:
        reports = parse_reports(content_type, body)
    except BadReport as exc:
        return await reply(400, f"Not a usable report: {exc}.".encode())
    for origin, directive in dict.fromkeys(reports):
        key = (config.pk, origin)
        seen = _seen.get(key)
        if seen is not None and now - seen[0] < DEDUP_SECONDS:
            seen[1] += 1
            continue
        if len(_seen) > 10_000:
            _seen.clear()
        pending = int(seen[1]) if seen is not None else 0
        _seen[key] = [now, 0]
        await _record(appspace_pk=config.pk, origin=origin, directive=directive, count=pending + 1)
    return await reply(204)
