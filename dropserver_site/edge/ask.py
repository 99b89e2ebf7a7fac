"""Which host names may get a certificate, and the loopback endpoint Caddy asks.

With on-demand TLS, Caddy requests a certificate the first time a client says a name in its
TLS handshake, but only after GET /.well-known/dropserver/tls-ask?domain=NAME answers 200.
Yes is for the panel host and the host of an appspace that exists; anything else gets 404,
so nobody can make the instance request (and get rate-limited on) certificates for arbitrary
names. The endpoint only answers requests made to Daphne's loopback address by a local
process: the edge refuses the path from outside, and a request Caddy proxied carries
X-Forwarded-For, which this refuses too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from dropserver_site.edge.caddy import ASK_PATH
from dropserver_site.hosts import Site, classify_host, split_host_header

LOOPBACK_HOSTS = frozenset({"127.0.0.1"})


def may_have_certificate(name: str) -> bool:
    """True for the panel host and the host of an existing appspace (any status)."""
    from appspaces.models import Appspace

    host = split_host_header(name)
    if not host or host != name.strip().lower().rstrip("."):
        return False  # ports, brackets, non-ASCII: never a name we serve
    site, label = classify_host(host, domain=settings.DS_DOMAIN, panel_host=settings.DS_PANEL_HOST)
    if site is Site.PANEL:
        return True
    return site is Site.APPSPACE and Appspace.objects.filter(subdomain=label).exists()


def is_loopback_request(scope: dict) -> bool:
    """A request addressed to Daphne's loopback address by a process on this host."""
    host = b""
    for name, value in scope.get("headers", ()):
        if name in (b"x-forwarded-for", b"forwarded"):
            return False
        if name == b"host":
            host = value
    client = (scope.get("client") or ("",))[0]
    name = host.decode("latin-1").rsplit(":", 1)[0]
    return name in LOOPBACK_HOSTS and client in LOOPBACK_HOSTS


async def _respond(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def loopback_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The ASGI app for Host 127.0.0.1: the ask, and the health endpoints for local probes."""
    from dropserver_site.observe import health

    path, method = scope.get("path", ""), scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await _respond(send, 405, {"error": "method not allowed"})
    elif path == ASK_PATH:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        names = query.get("domain", [])
        ok = len(names) == 1 and await database_sync_to_async(may_have_certificate)(names[0])
        await _respond(send, 200 if ok else 404, {"allowed": bool(ok)})
    elif path == "/healthz":
        await _respond(send, 200, health.liveness())
    elif path == "/readyz":
        status, body = await database_sync_to_async(health.readiness)()
        await _respond(send, status, body)
    else:
        await _respond(send, 404, {"error": "not found"})
