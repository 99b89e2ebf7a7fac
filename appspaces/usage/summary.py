"""What the panel shows of an appspace's usage: today, the last 7 and 30 days, and the disk
against the quota."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import Max, Q, Sum

from appspaces.models import Appspace, AppspaceUsageDay
from appspaces.usage.counters import today
from appspaces.usage.quota import MB
from sandbox.walls import diskimage

PERIODS = (("today", "Today", 1), ("week", "Last 7 days", 7), ("month", "Last 30 days", 30))
SUMMED = ("cpu_seconds", "running_seconds", "io_read_bytes", "io_write_bytes")
PEAKS = ("memory_peak_bytes", "disk_bytes_max")


def usage_summary(appspace: Appspace) -> dict[str, Any]:
    """What the appspace used today, in the last 7 and the last 30 days (UTC days, today
    included), and its disk use against the quota. One query."""
    day = today()
    aggregates: dict[str, Any] = {}
    for key, _, days in PERIODS:
        since = Q(day__gt=day - dt.timedelta(days=days))
        aggregates |= {f"{key}__{f}": Sum(f, filter=since) for f in SUMMED}
        aggregates |= {f"{key}__{f}": Max(f, filter=since) for f in PEAKS}
    totals = AppspaceUsageDay.objects.filter(
        appspace=appspace, day__gt=day - dt.timedelta(days=30), day__lte=day
    ).aggregate(**aggregates)
    periods = []
    for key, label, days in PERIODS:
        figures = {f: totals[f"{key}__{f}"] or 0 for f in (*SUMMED, *PEAKS)}
        periods.append({"key": key, "label": label, "days": days, **figures})
    quota = appspace.disk_mb * MB
    free = diskimage.free_bytes(appspace.data_path)
    return {
        "periods": periods,
        **{p["key"]: p for p in periods},
        "cpu_percent": appspace.cpu_percent,
        "memory_limit_bytes": appspace.memory_mb * MB,
        "disk_bytes": appspace.disk_bytes,
        "disk_quota_bytes": quota,
        "disk_percent": min(round(appspace.disk_bytes * 100 / quota), 999) if quota else 0,
        "disk_measured": appspace.disk_measured,
        "over_quota": appspace.disk_bytes > quota,
        "data_readonly": appspace.data_readonly,
        "quota_mechanism": diskimage.mechanism(appspace.data_path),
        # The image is full: the app's writes fail with ENOSPC (less than 1 MB left).
        "disk_full": free is not None and free < MB,
        "resume_bytes": quota * settings.DS_USAGE_QUOTA_RESUME_PERCENT // 100,
        "disk_low_bytes": quota * 8 // 10,  # the meter turns amber from here
    }
