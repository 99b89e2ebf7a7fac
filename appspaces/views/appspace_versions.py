"""Panel view of an appspace's change of version: what changes (changelog, data schema, the
backup made first), then the Job with its live page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from appspaces.access import get_appspace_for_owner
from appspaces.lifecycle.version_change import (
    VersionChangeError,
    version_change_job_create,
    version_change_plan,
)
from appspaces.models import AppVersion


@login_required
@require_http_methods(["GET", "POST"])
def appspace_version_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    target_id = request.POST.get("to") or request.GET.get("to")
    try:
        target = appspace.app.versions.get(public_id=target_id)
    except (AppVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("No such version of this app.") from None
    try:
        plan = version_change_plan(appspace=appspace, target=target)
        if request.method == "POST":
            job = version_change_job_create(appspace=appspace, target=target)
            return redirect("job_detail", job_id=job.public_id)
    except VersionChangeError as exc:
        messages.error(request, str(exc))
        return redirect("appspace_detail", appspace_id=appspace.public_id)
    return render(request, "appspaces/appspace_version.html", {"appspace": appspace, "plan": plan})
