"""Panel views of an appspace's backups: the list, back up now, schedule and retention, restore
(typed confirmation; from a backup or an uploaded archive), download and delete. Long work runs
as Jobs and shows the live job page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from accounts.upload_gate import accepts_upload
from appspaces.access import get_appspace_for_owner
from appspaces.models import Appspace, Job
from backups.access import get_backup_for_owner
from backups.models import Backup
from backups.restore import restore_job_create
from backups.schedule import clamp_interval
from backups.services import backup_job_create, cap_status
from backups.store import BackupError, backup_delete, backup_policy
from backups.views.forms import ConfirmRestoreForm, PolicyForm, UploadRestoreForm
from backups.views.uploads import ARCHIVE_FIELD, ArchiveUploadHandler, kept_archive_path

RESTORABLE = (Appspace.Status.ACTIVE, Appspace.Status.PAUSED, Appspace.Status.PROBLEM)


def _unfinished_jobs(appspace: Appspace):
    return Job.objects.filter(
        appspace=appspace, kind__in=(Job.Kind.BACKUP, Job.Kind.RESTORE)
    ).exclude(state__in=Job.FINISHED)


def _render_list(
    request: HttpRequest, appspace: Appspace, *, policy_form=None, upload_form=None, status=200
) -> HttpResponse:
    policy = backup_policy(appspace)
    backups = appspace.backups.filter(state=Backup.State.READY).order_by("-created")
    last = backups.first()
    next_due = None
    if policy.enabled and appspace.status == Appspace.Status.ACTIVE:
        from datetime import timedelta

        from django.utils import timezone

        interval = timedelta(hours=clamp_interval(policy.interval_hours))
        next_due = max(last.created + interval, timezone.now()) if last else timezone.now()
    context = {
        "appspace": appspace,
        "backups": backups,
        "failures": appspace.backups.filter(state=Backup.State.FAILED).order_by("-created")[:5],
        # off-site copies show too, but never hold back a backup or a restore
        "jobs": Job.objects.filter(
            appspace=appspace, kind__in=(Job.Kind.BACKUP, Job.Kind.RESTORE, Job.Kind.OFFSITE)
        ).exclude(state__in=Job.FINISHED),
        "cap": cap_status(request.user),
        "policy_form": policy_form or PolicyForm(instance=policy),
        "upload_form": upload_form or UploadRestoreForm(subdomain=appspace.subdomain),
        "next_due": next_due,
        "can_restore": appspace.status in RESTORABLE,
    }
    return render(request, "backups/list.html", context, status=status)


@login_required
def backup_list(request: HttpRequest, appspace_id) -> HttpResponse:
    return _render_list(request, get_appspace_for_owner(request.user, appspace_id))


@require_POST
@login_required
def backup_now(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    cap = cap_status(request.user)
    if cap["reached"]:
        messages.error(request, cap["message"])
        return redirect("backup_list", appspace_id=appspace.public_id)
    running = _unfinished_jobs(appspace).first()
    if running is not None:
        messages.info(request, "A backup or restore of this appspace is already under way.")
        return redirect("job_detail", job_id=running.public_id)
    job = backup_job_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    return redirect("job_detail", job_id=job.public_id)


@require_POST
@login_required
def backup_policy_update(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    form = PolicyForm(request.POST, instance=backup_policy(appspace))
    if not form.is_valid():
        return _render_list(request, appspace, policy_form=form, status=400)
    form.save()
    messages.success(request, "The backup schedule and retention were saved.")
    return redirect("backup_list", appspace_id=appspace.public_id)


def _start_restore(request: HttpRequest, appspace: Appspace, **source) -> HttpResponse:
    running = _unfinished_jobs(appspace).first()
    if running is not None:
        messages.info(request, "A backup or restore of this appspace is already under way.")
        return redirect("job_detail", job_id=running.public_id)
    job = restore_job_create(appspace=appspace, **source)
    return redirect("job_detail", job_id=job.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def backup_restore_view(request: HttpRequest, appspace_id, backup_id) -> HttpResponse:
    backup = get_backup_for_owner(request.user, appspace_id, backup_id)
    appspace = backup.appspace
    form = ConfirmRestoreForm(request.POST or None, subdomain=appspace.subdomain)
    source = request.POST.get("source") or request.GET.get("source")
    offsite = source == "offsite" and backup.offsite_state == Backup.Offsite.COPIED
    if request.method == "POST" and form.is_valid() and appspace.status in RESTORABLE:
        if offsite:  # fetched from the repository, then verified like an uploaded archive
            return _start_restore(request, appspace, offsite=backup.offsite_snapshot)
        return _start_restore(request, appspace, backup=backup)
    status = 400 if form.errors or request.method == "POST" else 200
    return render(
        request,
        "backups/restore.html",
        {
            "appspace": appspace,
            "backup": backup,
            "offsite": offsite,
            "form": form,
            "can_restore": appspace.status in RESTORABLE,
        },
        status=status,
    )


# The archive streams to an unnamed file through ArchiveUploadHandler, which must be in place
# before the body is read, and so before the CSRF check: `@accepts_upload` outside, the owner's
# lookup and whether the appspace can be restored next (before the body is read), csrf_protect
# inside. A refused archive is only closed: it never had a name.
@accepts_upload(ArchiveUploadHandler)
@require_POST
def backup_upload_restore(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    if appspace.status not in RESTORABLE:
        messages.error(request, "This appspace cannot be restored in its current state.")
        return _render_list(request, appspace, status=409)
    return _backup_upload_restore(request, appspace)


@csrf_protect
def _backup_upload_restore(request: HttpRequest, appspace: Appspace) -> HttpResponse:
    handler = request.upload_handlers[0]
    form = UploadRestoreForm(
        request.POST,
        request.FILES,
        subdomain=appspace.subdomain,
        upload_too_large=getattr(handler, "too_large", False),
    )
    upload = request.FILES.get(ARCHIVE_FIELD)
    try:
        if form.is_valid() and appspace.status in RESTORABLE:
            kept = upload.keep(kept_archive_path())  # the job owns it now
            return _start_restore(request, appspace, upload=kept)
    finally:
        if upload is not None:
            upload.discard()
    return _render_list(request, appspace, upload_form=form, status=400)


@login_required
def backup_download(request: HttpRequest, appspace_id, backup_id) -> FileResponse:
    backup = get_backup_for_owner(request.user, appspace_id, backup_id)
    name = f"{backup.appspace.subdomain}-{backup.file_name}"
    response = FileResponse(
        open(backup.path, "rb"),  # noqa: SIM115 (closed by the response)
        as_attachment=True,
        filename=name,
        content_type="application/zstd",
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def backup_delete_view(request: HttpRequest, appspace_id, backup_id) -> HttpResponse:
    backup = get_backup_for_owner(request.user, appspace_id, backup_id)
    if request.method == "POST":
        try:
            backup_delete(backup=backup)
        except BackupError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "The backup was deleted.")
        return redirect("backup_list", appspace_id=backup.appspace.public_id)
    return render(request, "backups/delete.html", {"appspace": backup.appspace, "backup": backup})
