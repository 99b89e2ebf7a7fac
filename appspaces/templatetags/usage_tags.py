"""Template tags of the usage cards: `{% appspace_usage appspace as usage %}`, the 30-day
charts `{% appspace_usage_charts appspace %}`, plain-words filters for durations and shares,
and `{% disk_quota_fallback as why %}` (why disk quotas are measured, for the admin)."""

from __future__ import annotations

from typing import Any

from django import template

from appspaces.models import Appspace
from appspaces.usage import charts
from appspaces.usage.summary import usage_summary
from sandbox.walls import diskimage

register = template.Library()


@register.simple_tag
def appspace_usage(appspace: Appspace) -> dict[str, Any]:
    """The figures of `appspaces.usage.summary.usage_summary` (one query)."""
    return usage_summary(appspace)


@register.simple_tag
def disk_quota_fallback() -> str:
    """Why appspaces' disk quotas are measured rather than enforced ("" when enforced): the
    notice on the admin's index page (the same reason as `check`'s dropserver.W002)."""
    return diskimage.measured_because()


@register.simple_tag
def appspace_usage_charts(appspace: Appspace) -> str:
    """The appspace's 30-day charts (appspaces/usage/charts.py), as SVG figures."""
    days, values = charts.appspace_days(appspace)
    return charts.charts(days, values, f"chart-{appspace.public_id}")


@register.filter
def duration(seconds: Any) -> str:
    """Seconds in plain words: "0 s", "4.2 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"."""
    try:
        total = max(float(seconds), 0.0)
    except (TypeError, ValueError):
        return ""
    if total < 10:
        return f"{total:.1f} s".replace(".0 s", " s")
    whole = round(total)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


@register.filter
def share(part: Any, whole: Any) -> str:
    """`part` as a whole percentage of `whole` ("" when there is no whole)."""
    try:
        part, whole = float(part), float(whole)
    except (TypeError, ValueError):
        return ""
    if whole <= 0:
        return ""
    return f"{round(part * 100 / whole)}%"
