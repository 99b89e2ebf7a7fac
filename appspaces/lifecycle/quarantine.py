"""Freed appspace names: recorded when an appspace is deleted (or renamed), and quarantined.

For DS_SUBDOMAIN_QUARANTINE_DAYS after it is freed, a name is unavailable to every owner but
the one who freed it: the old appspace's links, bookmarks and shared addresses still point at
it, and a stranger taking it at once would receive their visitors (and any login links or
data those visitors send). The previous owner may take it back at once: whatever points at
the name was theirs, so nobody else's visitors reach a stranger (the usual case is deleting
and re-creating an appspace). Administrators may release a name early (Django admin).

The row stays after the quarantine ends: the gateway uses it to clear the browser state the
old appspace left under the name (appspaces/gateway/reused_names.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from appspaces.models import FreedSubdomain


def subdomain_free(*, name: str, owner_id: uuid.UUID | None) -> None:
    """Record `name` as freed now by the user `owner_id` (a public_id): a new quarantine."""
    FreedSubdomain.objects.update_or_create(
        name=name,
        defaults={"freed_at": timezone.now(), "previous_owner": owner_id, "released_at": None},
    )


def quarantine_end(freed: FreedSubdomain) -> datetime | None:
    """When the name becomes available to anyone; None if it already is."""
    if freed.released_at is not None:
        return None
    end = freed.freed_at + timedelta(days=settings.DS_SUBDOMAIN_QUARANTINE_DAYS)
    return end if end > timezone.now() else None


def quarantined_until(name: str, *, owner) -> datetime | None:
    """The end of `name`'s quarantine if it keeps `owner` (a user, or None: anyone) from
    taking it, else None."""
    freed = FreedSubdomain.objects.filter(name=name).first()
    if freed is None:
        return None
    if owner is not None and freed.previous_owner == owner.public_id:
        return None
    return quarantine_end(freed)


def subdomains_release(queryset) -> int:
    """End the quarantine of these names now (the admin action). -> how many."""
    return queryset.filter(released_at__isnull=True).update(released_at=timezone.now())


def name_was_used(name: str) -> bool:
    """Some appspace held `name` before (the gateway clears its leftovers for the next)."""
    return FreedSubdomain.objects.filter(name=name).exists()
