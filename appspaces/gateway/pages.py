"""The gateway's own responses: its pages (404, 403, 503, 502, 504...), redirects, and the bare
404 for hosts that are no appspace. Every one carries the platform's headers.

Templates are read from disk once, in a thread; rendering is pure CPU and runs on the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.template import Template
from django.template.loader import get_template

from appspaces.gateway.headers import Header, platform_response_headers

STYLESHEET_PATH = "/.dropserver/style.css"
STYLESHEET = b"""\
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;
background:#f6f7f9}main{max-width:36rem;margin:12vh auto;padding:0 1.25rem}
h1{font-size:1.6rem;margin:.2rem 0 1rem}.status{color:#6b7280;font-weight:600;margin:0}
.reason{padding:.75rem 1rem;background:#fff4e5;border-left:4px solid #f0a020}
.by{margin-top:3rem;font-size:.85rem}.by a{color:#6b7280}
a.button,button{display:inline-block;font:inherit;padding:.45rem 1rem;border-radius:6px;
border:1px solid #2856d0;background:#2f64e8;color:#fff;text-decoration:none;cursor:pointer}
"""
# Pages for hosts that are no appspace have no appspace policy to follow: nothing loads.
BARE_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

Send = Callable[[dict], Any]

_templates: dict[str, Template] = {}


async def _template(name: str):
    template = _templates.get(name)
    if template is None:
        template = await sync_to_async(get_template, thread_sensitive=False)(name)
        _templates[name] = template
    return template


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    *,
    platform: Iterable[Header],
    content_type: bytes = b"text/html; charset=utf-8",
    headers: Iterable[Header] = (),
    head_only: bool = False,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
                *platform,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head_only else body})


def page_sender(send: Send, *, host: str, platform: Iterable[Header], method: str):
    """`send_page` with what stays the same for one request bound: `await page(status,
    (title, message), headers, **context)`."""

    async def page(status: int, text: tuple[str, str], headers=(), **context: Any) -> None:
        await send_page(
            send,
            status,
            title=text[0],
            message=text[1],
            host=host,
            platform=platform,
            headers=headers,
            head_only=method == "HEAD",
            **context,
        )

    return page


async def send_page(
    send: Send,
    status: int,
    *,
    title: str,
    message: str,
    host: str,
    platform: Iterable[Header],
    headers: Iterable[Header] = (),
    head_only: bool = False,
    **context: Any,
) -> None:
    template = await _template("gateway/page.html")
    html = template.render(
        {
            "status": status,
            "title": title,
            "message": message,
            "host": host,
            "panel_url": settings.DS_PANEL_URL,
            **context,
        }
    )
    await send_response(
        send,
        status,
        html.encode(),
        platform=platform,
        headers=[(b"cache-control", b"no-store"), *headers],
        head_only=head_only,
    )


async def send_redirect(
    send: Send, location: str, *, platform: Iterable[Header], headers: Iterable[Header] = ()
) -> None:
    await send_response(
        send,
        302,
        b"",
        platform=platform,
        content_type=b"text/plain; charset=utf-8",
        headers=[
            (b"location", location.encode("latin-1")),
            (b"cache-control", b"no-store"),
            *headers,
        ],
    )


async def send_bare_not_found(send: Send, headers: Iterable[Header] = ()) -> None:
    """No such appspace: say nothing more than the host router says for unknown hosts."""
    await send_response(
        send,
        404,
        b"Not Found",
        platform=platform_response_headers(csp=BARE_CSP),
        content_type=b"text/plain; charset=utf-8",
        headers=headers,
    )


async def send_stylesheet(send: Send, platform: Iterable[Header], head_only: bool) -> None:
    await send_response(
        send,
        200,
        STYLESHEET,
        platform=platform,
        content_type=b"text/css; charset=utf-8",
        headers=[(b"cache-control", b"public, max-age=3600")],
        head_only=head_only,
    )


# What visitors read for each gateway error (no internal detail, ever).
NOT_FOUND = ("Page not found", "There is nothing at this address in this appspace.")
BAD_GATEWAY = (
    "The app did not answer",
    "This appspace's app failed to answer the request. Try again in a moment; if it keeps "
    "happening, tell the appspace's owner.",
)
GATEWAY_TIMEOUT = (
    "The app took too long",
    "This appspace's app did not answer in time. Try again in a moment.",
)
TOO_LARGE = ("Request too large", "The request body is larger than this server accepts.")
HEADERS_TOO_LARGE = (
    "Request headers too large",
    "The request carried more or larger headers than this server accepts. Clearing this "
    "site's cookies may help.",
)
CROSS_ORIGIN = (
    "Request refused",
    "This request came from another site, so it was refused to protect your data here.",
)
ACCESS_WITHDRAWN = (
    "No access",
    "Your access to this appspace changed while this request was running. Reload the page.",
)
BUSY = (
    "Temporarily unavailable",
    "This server is busy right now. Try again in a moment.",
)
UNAVAILABLE = {
    "creating": ("Not ready yet", "This appspace is being created. Try again in a moment."),
    "paused": ("Paused", "The owner has paused this appspace."),
    "migrating": (
        "Being updated",
        "This appspace is being moved to another version of its app. It will be back shortly.",
    ),
    "problem": ("Something is wrong", "This appspace has a problem and cannot be used now."),
}
