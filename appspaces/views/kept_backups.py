"""Backups of deleted appspaces that their owner kept: download or delete them (they can also
start a new appspace: the creation form offers them)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from backups.access import get_kept_backup_for_owner
from backups.store import BackupError, backup_delete


@login_required
def kept_backup_download(request: HttpRequest, backup_id) -> FileResponse:
    backup = get_kept_backup_for_owner(request.user, backup_id)
    response = FileResponse(
        open(backup.path, "rb"),  # noqa: SIM115 (closed by the response)
        as_attachment=True,
        filename=f"{backup.kept_label}-{backup.file_name}",
        content_type="application/zstd",
    )
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def kept_backup_delete(request: HttpRequest, backup_id) -> HttpResponse:
    backup = get_kept_backup_for_owner(request.user, backup_id)
    try:
        backup_delete(backup=backup)
    except BackupError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The backup of {backup.kept_label} was deleted.")
    return redirect("dashboard")
