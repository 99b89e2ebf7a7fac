"""The Content-Security-Policy every appspace response carries."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from packages.allowlist import AllowlistError, parse_browser_origin

log = logging.getLogger(__name__)

# What a browser-allowlist source may look like once it is in a header: scheme://host[:port],
# host possibly starting with "*.". Anything else (quotes, ';', ',', spaces, paths) could add
# directives or keywords to the policy, so it is dropped even if it reached the database.
_SOURCE = re.compile(r"^https?://(\*\.)?[a-z0-9.-]+(:\d{1,5})?$")

FIXED_DIRECTIVES = "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
# Where browsers report what the policy blocked (gateway/csp_reports.py): `report-uri` always;
# over https also `report-to`, naming the endpoint of the Reporting-Endpoints header. Not over
# plain http: Chromium ignores report-uri once report-to is there, and its Reporting API does
# not deliver from http pages (measured: nothing within 25 s, where report-uri is immediate).
REPORT_PATH = "/.dropserver/csp-report"
REPORT_ENDPOINT = "dropserver-csp"
REPORTING_ENDPOINTS = f'{REPORT_ENDPOINT}="{REPORT_PATH}"'


def csp_sources(values: Iterable[str]) -> list[str]:
    """The CSP sources of stored browser-allowlist values; invalid ones are logged and left out."""
    sources = set()
    for value in values:
        try:
            source = parse_browser_origin(value).csp_source()
        except AllowlistError as exc:
            log.warning("browser allowlist entry %r left out of the CSP: %s", value, exc)
            continue
        if _SOURCE.match(source):
            sources.add(source)
        else:  # pragma: no cover - parse_browser_origin only produces such sources
            log.warning("browser allowlist entry %r left out of the CSP", value)
    return sorted(sources)


def appspace_csp(browser_origins: Iterable[str], *, report_to: bool = False) -> str:
    """`default-src 'self'` plus only the origins the owner allowed for the browser.

    Origins are parsed again here (scheme://host[:port], no path, quotes, ';' or ','), so
    a bad value in the database cannot add a directive or a keyword to the policy.
    """
    sources = " ".join(["'self'", *csp_sources(browser_origins)])
    reporting = f"report-uri {REPORT_PATH}" + (
        f"; report-to {REPORT_ENDPOINT}" if report_to else ""
    )
    return f"default-src {sources}; {FIXED_DIRECTIVES}; {reporting}"
