"""The ASGI host router: the panel host goes to Django, appspace hosts to the gateway.

Host 127.0.0.1 from this host goes to the loopback endpoints (edge/ask.py: the TLS edge's
"ask", health probes). Anything else gets a bare 404 (HTTP) or a refused handshake
(WebSocket), so a scanner learns nothing about the instance from a wrong Host header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from dropserver_site.edge.ask import is_loopback_request
from dropserver_site.hosts import Site, classify_host, split_host_header

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


async def not_found(scope: dict, receive: Callable, send: Callable) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"Not Found"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# (domain, panel host), read once: this runs on every request, and each lazy-settings
# attribute costs microseconds. Tests that override either setting reset it.
_hosts: tuple[str, str] | None = None


def _configured_hosts() -> tuple[str, str]:
    global _hosts
    if _hosts is None:
        _hosts = (settings.DS_DOMAIN, settings.DS_PANEL_HOST)
    return _hosts


def _forget_hosts(*, setting: str, **kwargs) -> None:
    global _hosts
    if setting in ("DS_DOMAIN", "DS_PANEL_HOST"):
        _hosts = None
        _sites.clear()


# Host header value -> (site, subdomain): browsers send the same few values over and over.
# Bounded, emptied when full, so random Host headers cannot grow it.
_sites: dict[bytes, tuple[Site, str]] = {}
_SITES_MAX = 4096


def _site_of(scope: dict) -> tuple[Site, str]:
    raw = b""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            raw = value
            break
    return site_of_host(raw)


def site_of_host(raw: bytes) -> tuple[Site, str]:
    """The site of a raw Host header value, and for appspaces the subdomain label."""
    try:
        return _sites[raw]
    except KeyError:
        pass
    domain, panel_host = _configured_hosts()
    found = classify_host(
        split_host_header(raw.decode("latin-1")), domain=domain, panel_host=panel_host
    )
    if len(_sites) >= _SITES_MAX:
        _sites.clear()
    _sites[raw] = found
    return found


setting_changed.connect(_forget_hosts, dispatch_uid="host-router-settings")


class HostRouter:
    """Dispatch one ASGI protocol on the Host header."""

    def __init__(
        self, *, panel: ASGIApp, appspace: ASGIApp, loopback: ASGIApp | None = None
    ) -> None:
        self.panel = panel
        self.appspace = appspace
        # Requests to Daphne's loopback address from this host (the TLS edge's ask, probes).
        self.loopback = loopback

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> Any:
        site, subdomain = _site_of(scope)
        if site is Site.PANEL:
            return await self.panel(scope, receive, send)
        if site is Site.APPSPACE:
            scope = dict(scope, appspace_subdomain=subdomain)
            return await self.appspace(scope, receive, send)
        if self.loopback is not None and is_loopback_request(scope):
            return await self.loopback(scope, receive, send)
        return await not_found(scope, receive, send)
