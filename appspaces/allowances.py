"""Per-person allowances: how many appspaces and apps one person may hold, and how much disk and
memory their appspaces may claim in all (the sums of their quotas and limits).

Defaults come from DS_ALLOWANCE_* settings; an admin overrides them per person
(accounts.Allowance, in the Django admin; an empty field means the default, 0 no limit). The
services check inside their transaction after `owner_lock`, which locks the person's user row,
so two creations (or installs) racing each other are counted one after the other and cannot
together go past the allowance.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum

from accounts.models import Allowance
from appspaces.models import App, Appspace

FIELDS = ("appspaces", "apps", "disk_mb", "memory_mb")


class AllowanceError(ValueError):
    """A request beyond the person's allowance; the message says what is left."""


@dataclass(frozen=True)
class Amounts:
    appspaces: int
    apps: int
    disk_mb: int
    memory_mb: int


def allowance_of(user) -> Amounts:
    """The person's allowance (0: no limit)."""
    override = Allowance.objects.filter(user_id=user.pk).first()
    values = {}
    for field in FIELDS:
        value = getattr(override, field, None) if override else None
        values[field] = (
            getattr(settings, f"DS_ALLOWANCE_{field.upper()}") if value is None else value
        )
    return Amounts(**values)


def usage_of(user, *, excluding: Appspace | None = None) -> Amounts:
    """What the person holds now: every appspace they own counts (also one being created)."""
    appspaces = Appspace.objects.filter(owner_id=user.pk)
    if excluding is not None:
        appspaces = appspaces.exclude(pk=excluding.pk)
    sums = appspaces.aggregate(disk=Sum("disk_mb"), memory=Sum("memory_mb"))
    return Amounts(
        appspaces=appspaces.count(),
        apps=App.objects.filter(owner_id=user.pk).count(),
        disk_mb=sums["disk"] or 0,
        memory_mb=sums["memory"] or 0,
    )


def owner_lock(user) -> None:
    """Lock the person's row until the transaction ends: allowance checks queue behind it."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").get()


def size(mb: int) -> str:
    """500 MB, 2 GB, 1.5 GB."""
    if mb >= 1024:
        gb = mb / 1024
        return f"{gb:.0f} GB" if gb == int(gb) else f"{gb:.1f} GB"
    return f"{mb} MB"


def summary(user, *, excluding: Appspace | None = None) -> str:
    """ "You have 2 of 3 appspaces; 500 MB of 2 GB disk left; ..." (limited parts only)."""
    allowed, used = allowance_of(user), usage_of(user, excluding=excluding)
    parts = []
    if allowed.appspaces:
        parts.append(f"You have {used.appspaces} of {allowed.appspaces} appspaces")
    if allowed.disk_mb:
        left = max(allowed.disk_mb - used.disk_mb, 0)
        parts.append(f"{size(left)} of {size(allowed.disk_mb)} disk left")
    if allowed.memory_mb:
        left = max(allowed.memory_mb - used.memory_mb, 0)
        parts.append(f"{size(left)} of {size(allowed.memory_mb)} memory left")
    return "; ".join(parts) + "." if parts else "Your allowance has no limits."


def check_appspace(user, *, disk_mb: int, memory_mb: int, replacing: Appspace | None = None):
    """Raise AllowanceError if the person may not hold one more appspace with these limits (or,
    with `replacing`, that appspace with new limits). Call under `owner_lock`."""
    allowed = allowance_of(user)
    used = usage_of(user, excluding=replacing)
    problems = []
    if replacing is None and allowed.appspaces and used.appspaces + 1 > allowed.appspaces:
        problems.append(f"you already have {used.appspaces} of {allowed.appspaces} appspaces")
    if allowed.disk_mb and used.disk_mb + disk_mb > allowed.disk_mb:
        left = max(allowed.disk_mb - used.disk_mb, 0)
        problems.append(f"{size(disk_mb)} of disk asked, {size(left)} available")
    if allowed.memory_mb and used.memory_mb + memory_mb > allowed.memory_mb:
        left = max(allowed.memory_mb - used.memory_mb, 0)
        problems.append(f"{size(memory_mb)} of memory asked, {size(left)} available")
    if problems:
        raise AllowanceError(
            "Beyond your allowance: "
            + "; ".join(problems)
            + ". "
            + summary(user)
            + " Ask an admin for more."
        )


def check_app(user) -> None:
    """Raise AllowanceError if the person may not install one more app (a new version of an app
    they have is always allowed). Call under `owner_lock` where it must hold."""
    allowed = allowance_of(user)
    if not allowed.apps:
        return
    have = App.objects.filter(owner_id=user.pk).count()
    if have >= allowed.apps:
        raise AllowanceError(
            f"Beyond your allowance: you have {have} of {allowed.apps} apps installed. "
            "Delete one or ask an admin for more."
        )


def totals(user) -> list[dict]:
    """For the dashboard: each amount held against the allowance (0: no limit)."""
    allowed, used = allowance_of(user), usage_of(user)
    labels = {
        "appspaces": ("Appspaces", str),
        "apps": ("Apps", str),
        "disk_mb": ("Disk", size),
        "memory_mb": ("Memory", size),
    }
    rows = []
    for field, (label, show) in labels.items():
        limit, have = getattr(allowed, field), getattr(used, field)
        rows.append(
            {
                "label": label,
                "used": show(have),
                "allowed": show(limit) if limit else "no limit",
                "full": bool(limit) and have >= limit,
            }
        )
    return rows
