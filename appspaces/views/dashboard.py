"""The dashboard: the signed-in user's appspaces (and those shared with them), apps, pending
work and invitations; staff also see every user's appspaces."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from accounts.models import Invitation
from accounts.notices.views import shown_for
from appspaces.allowances import totals as allowance_totals
from appspaces.lifecycle.control import run_state, sandbox_states
from appspaces.lifecycle.version_change import upgrade_available
from appspaces.models import Appspace, AppspaceUser, Job
from appspaces.views.apps import apps_with_versions, installs_in_progress
from backups.models import Backup
from sandbox.protocol import SandboxError

DASHBOARD_APPS = 8
ADMIN_APPSPACES = 200


def _appspace_rows(appspaces, sandboxes) -> list[dict]:
    creating = {
        job.appspace_id: job
        for job in Job.objects.filter(
            appspace__in=[a.pk for a in appspaces], kind=Job.Kind.CREATE
        ).exclude(state__in=Job.FINISHED)
    }
    return [
        {
            "appspace": appspace,
            "state": run_state(appspace, sandboxes),
            "upgrade": upgrade_available(appspace, appspace.app.versions.all()),
            "job": creating.get(appspace.pk),
        }
        for appspace in appspaces
    ]


@never_cache
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    user = request.user
    try:
        sandboxes = sandbox_states()
    except SandboxError:
        sandboxes = None
    mine = list(
        Appspace.objects.filter(owner=user)
        .select_related("app", "app_version")
        .prefetch_related("app__versions")
    )
    context = {
        "notices": shown_for(user),
        "appspace_rows": _appspace_rows(mine, sandboxes),
        "shared": AppspaceUser.objects.filter(user=user)
        .exclude(appspace__owner=user)
        .select_related("appspace__app", "appspace__owner"),
        "app_rows": apps_with_versions(user)[:DASHBOARD_APPS],
        "installs": installs_in_progress(user),
        "invitations": Invitation.objects.pending().filter(inviter=user),
        "allowance": allowance_totals(user),
        "kept_backups": Backup.objects.filter(
            appspace__isnull=True, kept_owner=user, state=Backup.State.READY
        ),
    }
    if user.is_staff:
        everyone = list(
            Appspace.objects.exclude(owner=user)
            .select_related("app", "app_version", "owner")
            .prefetch_related("app__versions")
            .order_by("owner__email", "subdomain")[:ADMIN_APPSPACES]
        )
        context["all_rows"] = _appspace_rows(everyone, sandboxes)
        context["all_total"] = Appspace.objects.exclude(owner=user).count()
    return render(request, "appspaces/dashboard.html", context)
