"""The instance's usage, for staff: every appspace's last 30 days summed as charts, and the
appspaces that used the most (appspaces/usage/charts.py draws the charts). Others get 404."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from appspaces.models import Appspace
from appspaces.usage import charts
from appspaces.usage.counters import today

TOP = 20


@never_cache
@login_required
def instance_usage(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404
    days, values = charts.instance_days()
    since = today() - dt.timedelta(days=charts.DAYS - 1)
    busiest = (
        Appspace.objects.select_related("owner", "app")
        .filter(usage_days__day__gte=since)
        .annotate(
            cpu=Sum("usage_days__cpu_seconds"),
            running=Sum("usage_days__running_seconds"),
        )
        .order_by("-cpu", "subdomain")[:TOP]
    )
    return render(
        request,
        "appspaces/instance_usage.html",
        {
            "charts": charts.charts(days, values, "instance"),
            "busiest": busiest,
            "appspaces": Appspace.objects.count(),
        },
    )
