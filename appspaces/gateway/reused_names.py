"""A reused name carries nothing from its old tenant: when an appspace's name was held by
another appspace before (a FreedSubdomain row exists), the gateway wipes what the old app left
in each visitor's browser under that host, once per browser.

Every response to a request that does not present this appspace's marker cookie
(`ds_tenant=<appspace public_id>`, host-only, HttpOnly) carries:
- `Clear-Site-Data: "cache", "storage"`: the HTTP cache, localStorage, sessionStorage,
  IndexedDB, Cache Storage and service worker registrations of this origin. Not "cookies": for
  cookies browsers clear the whole registrable domain, which would log the visitor out of the
  panel and every other appspace.
- an expired `Set-Cookie` (Path=/) for each app cookie the request carried (those are the old
  app's: the new one's responses all came with the marker), which are also kept from the app;
- the marker cookie, so the next request of this browser is the new tenant's as usual.
The headers are the platform's: app responses cannot send, remove or reorder them (Clear-Site-Data
and cookies named `ds_*` are platform-owned, see headers.py), and an app cookie set on the same
response wins over the expiry of its old namesake.

A service worker of the old app that answers navigations itself keeps the first request from
reaching the gateway; the browser's update check of its script, which does reach it (with
`Service-Worker: script`), gets the same headers and so unregisters it.

While no appspace holds a freed name (its quarantine), the bare 404 under it carries
`Clear-Site-Data` too, so browsers that come back meanwhile are cleared before anyone reuses it.
"""

from __future__ import annotations

import dataclasses

from django.conf import settings
from django.db.models.signals import post_save

from appspaces.gateway.headers import Header, is_platform_cookie
from appspaces.gateway.state.cache import LoadingCache
from appspaces.lifecycle.quarantine import name_was_used
from appspaces.models import FreedSubdomain

CLEAR_SITE_DATA: Header = (b"clear-site-data", b'"cache", "storage"')
MARKER_MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie


def marker_cookie_name() -> str:
    return "__Host-ds_tenant" if settings.DS_HTTPS else "ds_tenant"


def _cookie(value: str, *, max_age: int, name: str) -> bytes:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if settings.DS_HTTPS:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def clearing(scope: dict, marker: str, platform_names: frozenset[str]):
    """None if this browser already presented `marker`; else (the headers to add to every
    response, the request headers without the old app's cookies)."""
    name = marker_cookie_name()
    wanted = f"{name}={marker}".encode("latin-1")
    old: list[str] = []
    kept_headers: list[Header] = []
    for header, value in scope["headers"]:
        if header != b"cookie":
            kept_headers.append((header, value))
            continue
        kept = []
        for part in value.split(b";"):
            part = part.strip()
            if not part:
                continue
            if part == wanted:
                return None
            cookie = part.split(b"=", 1)[0].strip().decode("latin-1")
            if is_platform_cookie(cookie, platform_names):
                kept.append(part)
            elif cookie and cookie not in old:
                old.append(cookie)
        if kept:
            kept_headers.append((b"cookie", b"; ".join(kept)))
    added = [CLEAR_SITE_DATA]
    added.extend((b"set-cookie", _cookie("", max_age=0, name=cookie)) for cookie in old)
    added.append((b"set-cookie", _cookie(marker, max_age=MARKER_MAX_AGE, name=name)))
    return added, kept_headers


def for_request(config, scope: dict, platform_names: frozenset[str]):
    """The appspace config to answer this request with: `config` itself, or (for a browser
    that has not been cleared for this tenant yet) a copy whose platform headers clear it.
    Drops the old app's cookies from `scope` in that case."""
    if not config.name_reused:
        return config
    found = clearing(scope, config.public_id, platform_names)
    if found is None:
        return config
    added, request_headers = found
    scope["headers"] = request_headers
    return dataclasses.replace(config, platform_headers=[*config.platform_headers, *added])


freed_names: LoadingCache[str, bool] = LoadingCache(
    "freed name", name_was_used, ttl=lambda: settings.DS_GATEWAY_CACHE_TTL, max_entries=10_000
)


async def not_found_headers(subdomain: str) -> list[Header]:
    """For the bare 404 of a host no appspace holds: clear what a former one left."""
    return [CLEAR_SITE_DATA] if await freed_names.get(subdomain) else []


def _freed(sender, instance: FreedSubdomain, **kwargs) -> None:
    freed_names.invalidate(instance.name)


post_save.connect(_freed, sender=FreedSubdomain, dispatch_uid="gateway-freed-name")
