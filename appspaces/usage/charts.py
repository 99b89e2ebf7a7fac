"""30-day usage charts, drawn on the server as SVG: one bar per UTC day for CPU time, running
time, memory peak, disk used and requests answered, for one appspace (its page) or summed over
the instance (the admins' overview).

Plain markup, no script and no style attribute, so they render under the panel's strict CSP
and without JavaScript; colours come from static/css/usage.css. Each chart is an `img` with a
title and a description that say the figures in words, and each bar carries its day and value
as a tooltip, so a screen reader gets what the picture shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db.models import Sum
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from appspaces.models import Appspace, AppspaceUsageDay
from appspaces.usage.counters import today

DAYS = 30
WIDTH, HEIGHT = 300, 90  # viewBox units; the CSS scales the chart to its column
TOP, BOTTOM = 14, 14  # room for the top label and the dates


def _seconds(value: float) -> str:
    value = float(value)
    if value < 60:
        return f"{value:.1f} s".replace(".0 s", " s")
    if value < 3600:
        return f"{value / 60:.1f} min".replace(".0 min", " min")
    return f"{value / 3600:.1f} h".replace(".0 h", " h")


def _bytes(value: float) -> str:
    return str(filesizeformat(int(value))).replace("\xa0", " ")


def _count(value: float) -> str:
    return f"{int(value):,}".replace(",", " ")


@dataclass(frozen=True)
class Series:
    field: str
    label: str
    fmt: Callable[[float], str]


SERIES = (
    Series("cpu_seconds", "CPU time", _seconds),
    Series("running_seconds", "Running time", _seconds),
    Series("memory_peak_bytes", "Memory peak", _bytes),
    Series("disk_bytes_max", "Disk used", _bytes),
    Series("requests", "Requests", _count),
)


def _days(end: dt.date) -> list[dt.date]:
    return [end - dt.timedelta(days=n) for n in range(DAYS - 1, -1, -1)]


def appspace_days(appspace: Appspace) -> tuple[list[dt.date], dict[str, list[float]]]:
    """The last 30 UTC days (today included) of one appspace, days without a row as 0."""
    days = _days(today())
    rows = AppspaceUsageDay.objects.filter(appspace=appspace, day__gte=days[0]).values(
        "day", *(s.field for s in SERIES)
    )
    return days, _fill(days, rows)


def instance_days() -> tuple[list[dt.date], dict[str, list[float]]]:
    """The same days summed over every appspace of the instance (one query): the CPU and
    running time all used, the sum of their memory peaks, the disk they all took."""
    days = _days(today())
    rows = (
        AppspaceUsageDay.objects.filter(day__gte=days[0])
        .values("day")
        .annotate(**{s.field: Sum(s.field) for s in SERIES})
    )
    return days, _fill(days, rows)


def _fill(days: list[dt.date], rows: Iterable[dict]) -> dict[str, list[float]]:
    by_day = {row["day"]: row for row in rows}
    return {
        s.field: [float((by_day.get(day) or {}).get(s.field) or 0) for day in days] for s in SERIES
    }


def bar_chart(
    series: Series, days: list[dt.date], values: list[float], chart_id: str
) -> SafeString:
    """One chart as an inline SVG `img` with its title, description and per-bar tooltips."""
    peak = max(values, default=0.0)
    total_height = HEIGHT - TOP - BOTTOM
    slot = WIDTH / len(days)
    bars = []
    for n, (day, value) in enumerate(zip(days, values, strict=True)):
        height = 0.0 if peak <= 0 else max(value / peak * total_height, 1.0 if value else 0.0)
        bars.append(
            (
                f"{n * slot + slot * 0.1:.2f}",
                f"{TOP + total_height - height:.2f}",
                f"{slot * 0.8:.2f}",
                f"{height:.2f}",
                f"{day:%b %-d}: {series.fmt(value)}",
            )
        )
    busiest = max(range(len(values)), key=values.__getitem__) if peak > 0 else None
    words = (
        f"{series.label} per day over the last {len(days)} days. "
        + (
            f"Highest: {series.fmt(peak)} on {days[busiest]:%B %-d}. "
            if busiest is not None
            else "Nothing was used. "
        )
        + f"Today: {series.fmt(values[-1])}."
    )
    return format_html(
        '<svg class="usage-chart" role="img" viewBox="0 0 {w} {h}" '
        'aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg">'
        '<title id="{id}-title">{label}</title><desc id="{id}-desc">{words}</desc>'
        '<text class="usage-chart-peak" x="0" y="10">{peak}</text>'
        '<line class="usage-chart-axis" x1="0" y1="{base}" x2="{w}" y2="{base}"/>'
        "{bars}"
        '<text class="usage-chart-date" x="0" y="{h}">{first}</text>'
        '<text class="usage-chart-date" x="{w}" y="{h}" text-anchor="end">{last}</text>'
        "</svg>",
        w=WIDTH,
        h=HEIGHT,
        id=chart_id,
        label=series.label,
        words=words,
        peak=series.fmt(peak),
        base=HEIGHT - BOTTOM,
        bars=format_html_join(
            "",
            '<rect class="usage-chart-bar" x="{}" y="{}" width="{}" height="{}">'
            "<title>{}</title></rect>",
            bars,
        ),
        first=f"{days[0]:%b %-d}",
        last=f"{days[-1]:%b %-d}",
    )


def charts(days: list[dt.date], values: dict[str, list[float]], prefix: str) -> SafeString:
    """Every series as a figure, for a template."""
    return format_html_join(
        "",
        '<figure class="usage-chart-figure">{}<figcaption>{}</figcaption></figure>',
        ((bar_chart(s, days, values[s.field], f"{prefix}-{s.field}"), s.label) for s in SERIES),
    )
