"""Panel views of appspaces: creating one (choose a version, then address, network, limits and
an optional backup to start from), its page (status, open, users, allowlist, blocked
connections, versions, log, limits), pause / resume / restart, its log, deleting it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from accounts.notices.views import shown_for
from accounts.upload_gate import accepts_upload
from appspaces.access import get_app_version_for_owner, get_appspace_for_owner
from appspaces.allowances import summary as allowance_summary
from appspaces.installs.versions import parse_version, versions_newest_first
from appspaces.lifecycle.control import (
    AppspaceError,
    appspace_delete,
    appspace_limits_set,
    appspace_log_tail,
    appspace_pause,
    appspace_restart,
    appspace_resume,
    limit_bounds,
    run_state,
    sandbox_states,
)
from appspaces.lifecycle.creation import appspace_create
from appspaces.lifecycle.subdomains import SubdomainError
from appspaces.lifecycle.version_change import upgrade_available
from appspaces.models import App, Appspace, Job
from appspaces.network.approvals import allowlist_rows, suggestion_rows
from appspaces.network.blocked import blocked_connections_pull, blocked_rows
from appspaces.network.requests import request_rows
from appspaces.notices import subject as appspace_subject
from appspaces.sharing.users import appspace_invitations_pending
from appspaces.views.appspace_forms import (
    AllowlistAddForm,
    AppspaceLimitsForm,
    AppspaceUserAddForm,
    CreateAppspaceForm,
    DeleteAppspaceForm,
)
from backups.models import Backup
from backups.views.uploads import ARCHIVE_FIELD, ArchiveUploadHandler, kept_archive_path
from packages.allowlist import AllowlistError
from sandbox.protocol import SandboxError

# --- Creating -------------------------------------------------------------------------------


def _kept_backups(user):
    return Backup.objects.filter(
        appspace__isnull=True, kept_owner=user, state=Backup.State.READY
    ).order_by("-created")


def _create_context(request, version, form) -> dict:
    return {
        "version": version,
        "app": version.app,
        "form": form,
        "suggestions": suggestion_rows(version.suggested_network),
        "bounds": limit_bounds(),
        "allowance_summary": allowance_summary(request.user),
    }


# An archive to import streams to an unnamed file through ArchiveUploadHandler (in place before
# anything reads the body): `@accepts_upload` outside, the version's owner-scoped lookup next
# (from the query string, where the form puts it, so before the body is read), csrf_protect
# inside. A refused archive is only closed: it never had a name.
@accepts_upload(ArchiveUploadHandler)
@require_http_methods(["GET", "POST"])
def appspace_new(request: HttpRequest) -> HttpResponse:
    version = None
    if request.GET.get("version"):
        version = get_app_version_for_owner(request.user, request.GET["version"])
    return _appspace_new(request, version)


@csrf_protect
def _appspace_new(request: HttpRequest, version) -> HttpResponse:
    version_id = None if version else request.POST.get("version")
    if version is None and not version_id:
        apps = []
        for app in App.objects.filter(owner=request.user).prefetch_related("versions"):
            versions = versions_newest_first(app.versions.all())
            if versions:
                apps.append({"app": app, "versions": versions})
        return render(request, "appspaces/appspace_new.html", {"apps": apps})
    if version is None:
        version = get_app_version_for_owner(request.user, version_id)
    kept = list(_kept_backups(request.user))
    if request.method != "POST":
        form = CreateAppspaceForm(version=version, owner=request.user, kept_backups=kept)
        return render(
            request, "appspaces/appspace_create.html", _create_context(request, version, form)
        )
    upload = request.FILES.get(ARCHIVE_FIELD)  # parses the body: the handler has now run
    handler = request.upload_handlers[0]
    form = CreateAppspaceForm(
        request.POST,
        request.FILES,
        version=version,
        owner=request.user,
        kept_backups=kept,
        archive_too_large=getattr(handler, "too_large", False),
    )
    try:
        if form.is_valid():
            archive = None
            if upload is not None:
                archive = upload.keep(kept_archive_path())  # the job owns it now
            try:
                job = appspace_create(
                    owner=request.user,
                    app_version=version,
                    subdomain=form.cleaned_data["subdomain"],
                    server_allowlist=form.server_allowlist,
                    browser_allowlist=form.browser_allowlist,
                    memory_mb=form.cleaned_data["memory_mb"],
                    cpu_percent=form.cleaned_data["cpu_percent"],
                    disk_mb=form.cleaned_data["disk_mb"],
                    import_archive=archive,
                    import_backup=form.kept_choice,
                )
            except (SubdomainError, AllowlistError, AppspaceError) as exc:
                if archive is not None:
                    archive.unlink(missing_ok=True)
                form.add_error("subdomain" if isinstance(exc, SubdomainError) else None, str(exc))
            else:
                return redirect("job_detail", job_id=job.public_id)
    finally:
        if upload is not None:
            upload.discard()
    return render(
        request,
        "appspaces/appspace_create.html",
        _create_context(request, version, form),
        status=400,
    )


# --- Its page -------------------------------------------------------------------------------


def _version_rows(appspace: Appspace) -> list[dict]:
    rows = []
    current = parse_version(appspace.app_version.version)
    for version in versions_newest_first(appspace.app.versions.all()):
        rows.append(
            {
                "version": version,
                "current": version.pk == appspace.app_version_id,
                "newer": parse_version(version.version) > current,
                "schema_changes": version.schema != appspace.data_schema,
            }
        )
    return rows


def render_appspace(
    request: HttpRequest,
    appspace: Appspace,
    *,
    user_form=None,
    allowlist_forms=None,
    limits_form=None,
    status: int = 200,
) -> HttpResponse:
    try:
        sandboxes = sandbox_states()
    except SandboxError:
        sandboxes = None
    if sandboxes is not None and appspace.status != Appspace.Status.CREATING:
        blocked_connections_pull(appspace=appspace)
    forms = allowlist_forms or {}
    jobs = Job.objects.filter(appspace=appspace).exclude(state__in=Job.FINISHED)
    rows = blocked_rows(appspace)
    names = {
        p["key"]: str(p.get("name") or p["key"])
        for p in appspace.app_version.permissions
        if isinstance(p, dict) and p.get("key")
    }
    context = {
        "appspace": appspace,
        "notices": shown_for(request.user, appspace_subject(appspace)),
        "state": run_state(appspace, sandboxes),
        "members": [
            {"member": m, "permissions": [names.get(k, k) for k in m.permissions]}
            for m in appspace.users.select_related("user")
        ],
        "invitations": [
            {"invitation": i, "permissions": [names.get(k, k) for k in _granted(i.purpose)]}
            for i in appspace_invitations_pending(appspace)
        ],
        "user_form": user_form or AppspaceUserAddForm(appspace=appspace),
        "allowlist": allowlist_rows(appspace),
        "server_form": forms.get("server") or AllowlistAddForm(kind="server", prefix="server"),
        "browser_form": forms.get("browser") or AllowlistAddForm(kind="browser", prefix="browser"),
        "blocked": [r for r in rows if not r["blocked"].dismissed],
        "requests": request_rows(appspace),
        "dismissed": [r for r in rows if r["blocked"].dismissed],
        "versions": _version_rows(appspace),
        "upgrade": upgrade_available(appspace),
        "log": appspace_log_tail(appspace),
        "allowance_summary": allowance_summary(appspace.owner),
        "limits_form": limits_form
        or AppspaceLimitsForm(
            initial={
                "memory_mb": appspace.memory_mb,
                "cpu_percent": appspace.cpu_percent,
                "disk_mb": appspace.disk_mb,
                "io_read_mbps": appspace.io_read_mbps,
                "io_write_mbps": appspace.io_write_mbps,
            }
        ),
        "jobs": jobs,
    }
    return render(request, "appspaces/appspace_detail.html", context, status=status)


def _granted(purpose) -> list[str]:
    granted = purpose.get("permissions") if isinstance(purpose, dict) else None
    return [str(k) for k in granted] if isinstance(granted, list) else []


@never_cache
@login_required
def appspace_detail(request: HttpRequest, appspace_id) -> HttpResponse:
    return render_appspace(request, get_appspace_for_owner(request.user, appspace_id))


@never_cache
@login_required
def appspace_log(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    response = HttpResponse(appspace_log_tail(appspace), content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def appspace_pause_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    if appspace_pause(appspace=appspace):
        messages.success(request, f"{appspace.subdomain} is paused: nobody can open it.")
    else:
        messages.error(request, f"{appspace.subdomain} is {appspace.get_status_display()}.")
    return redirect("appspace_detail", appspace_id=appspace.public_id)


@require_POST
@login_required
def appspace_resume_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    if appspace_resume(appspace=appspace):
        messages.success(request, f"{appspace.subdomain} is active again.")
    else:
        messages.error(request, f"{appspace.subdomain} is {appspace.get_status_display()}.")
    return redirect("appspace_detail", appspace_id=appspace.public_id)


@require_POST
@login_required
def appspace_restart_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    try:
        appspace_restart(appspace=appspace)
    except AppspaceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{appspace.subdomain} was restarted.")
    return redirect("appspace_detail", appspace_id=appspace.public_id)


@require_POST
@login_required
def appspace_limits_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    form = AppspaceLimitsForm(request.POST)
    if not form.is_valid():
        return render_appspace(request, appspace, limits_form=form, status=400)
    try:
        appspace_limits_set(appspace=appspace, **form.cleaned_data)
    except AppspaceError as exc:
        form.add_error(None, str(exc))
        return render_appspace(request, appspace, limits_form=form, status=400)
    messages.success(request, "The new limits apply from the appspace's next start.")
    return redirect("appspace_detail", appspace_id=appspace.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def appspace_delete_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    form = DeleteAppspaceForm(request.POST or None, appspace=appspace)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                appspace_delete(
                    appspace=appspace, keep_backups=form.cleaned_data["backups"] == "keep"
                )
            except AppspaceError as exc:
                form.add_error(None, str(exc))
            else:
                kept = form.cleaned_data["backups"] == "keep"
                messages.success(
                    request,
                    f"{appspace.subdomain} was deleted"
                    + ("; its backups are kept (see below)." if kept else ", with its backups."),
                )
                return redirect("dashboard")
        status = 400
    context = {
        "appspace": appspace,
        "form": form,
        "backup_count": appspace.backups.filter(state="ready").count(),
    }
    return render(request, "appspaces/appspace_delete.html", context, status=status)


def appspace_or_404_for_owner(request: HttpRequest, appspace_id) -> Appspace:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    if appspace.status == Appspace.Status.CREATING:
        raise Http404("The appspace is still being created.")
    return appspace
