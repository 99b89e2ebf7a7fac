"""The dashboard: the signed-in user's appspaces, apps and pending work."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from appspaces.views.apps import apps_with_versions, installs_in_progress

DASHBOARD_APPS = 8


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "app_rows": apps_with_versions(request.user)[:DASHBOARD_APPS],
        "installs": installs_in_progress(request.user),
    }
    return render(request, "appspaces/dashboard.html", context)
