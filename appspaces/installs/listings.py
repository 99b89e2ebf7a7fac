"""App listings seen from installed apps: which version a listing offers now, so the panel can
say "a newer version is available". Refreshed by a beat task and when an app page is opened."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from appspaces.models import App
from packages.fetch import AppListing, FetchError, fetch_listing, newest_version

log = logging.getLogger(__name__)


def _fetch(url: str) -> AppListing:
    listing = fetch_listing(url)
    if listing.new_url:  # the listing moved: follow once
        listing = fetch_listing(listing.new_url)
    return listing


def listing_refresh(*, app: App) -> str:
    """Fetch the app's listing and remember its newest version. -> that version, or "" if the
    listing could not be read (the previous answer is kept)."""
    return listings_refresh_url(url=app.listing_url, apps=[app])


def listings_refresh_url(*, url: str, apps: list[App]) -> str:
    now = timezone.now()
    ids = [app.pk for app in apps]
    try:
        newest = newest_version(_fetch(url))
    except FetchError as exc:
        log.info("app listing %s could not be read: %s", url, exc)
        App.objects.filter(pk__in=ids).update(listing_checked_at=now)
        return ""
    latest = str(newest.version) if newest else ""
    App.objects.filter(pk__in=ids).update(listing_latest_version=latest, listing_checked_at=now)
    return latest


def listings_refresh_all() -> int:
    """Every listing once (apps of several users sharing a listing share the fetch)."""
    by_url: dict[str, list[App]] = {}
    for app in App.objects.exclude(listing_url="").only("pk", "listing_url"):
        by_url.setdefault(app.listing_url, []).append(app)
    for url, apps in by_url.items():
        listings_refresh_url(url=url, apps=apps)
    return len(by_url)


def listing_check_due(*, app: App) -> bool:
    """Claim the app's next listing check if the last one is older than DS_LISTING_CHECK_HOURS
    (a conditional UPDATE, so opening the page twice queues one check)."""
    if not app.listing_url:
        return False
    now = timezone.now()
    stale = now - timedelta(hours=settings.DS_LISTING_CHECK_HOURS)
    return bool(
        App.objects.filter(pk=app.pk)
        .filter(Q(listing_checked_at__isnull=True) | Q(listing_checked_at__lt=stale))
        .update(listing_checked_at=now)
    )
