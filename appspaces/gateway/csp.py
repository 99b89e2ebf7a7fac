"""The Content-Security-Policy every appspace response carries."""

from __future__ import annotations

from collections.abc import Iterable


def appspace_csp(browser_origins: Iterable[str]) -> str:
    """`default-src 'self'` plus only the origins the owner allowed for the browser.

    Origins were validated when the owner approved them (scheme://host[:port], no path,
    no quotes or semicolons), so they can be joined as CSP source expressions as they are.
    """
    sources = " ".join(["'self'", *sorted(set(browser_origins))])
    return (
        f"default-src {sources}; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
    )
