"""Periodic upkeep of installs: what a crash, a closed tab or an unanswered question left behind.

- installs waiting for confirmation longer than DS_INSTALL_CONFIRM_HOURS are cancelled;
- installs "running" without a sign of life for an hour (the worker died) are failed;
- job folders under uploads/ whose job ended (or never existed), and stray partial uploads;
- folders under apps/ that no app or version row owns and no running install is filling.
Everything is left alone for an hour first, so nothing being created right now is touched.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from appspaces.installs.service import install_job_cancel
from appspaces.installs.staging import job_staging_dir, uploads_dir
from appspaces.models import App, AppVersion, Job
from packages.extraction import remove_tree

log = logging.getLogger(__name__)

GRACE_SECONDS = 3600
STALE_RUNNING = timedelta(hours=1)


def _old(path: Path, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > GRACE_SECONDS
    except FileNotFoundError:
        return False


def _uuid(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name)
    except ValueError:
        return None


def installs_sweep() -> dict[str, int]:
    now = timezone.now()
    counts = {"expired": 0, "interrupted": 0, "folders": 0}
    installs = Job.objects.filter(kind=Job.Kind.INSTALL)

    waited = now - timedelta(hours=settings.DS_INSTALL_CONFIRM_HOURS)
    for job in installs.filter(state=Job.State.NEEDS_CONFIRMATION, updated__lt=waited):
        if install_job_cancel(job=job):
            Job.objects.filter(pk=job.pk).update(
                message="Cancelled: the warnings were not accepted in time."
            )
            counts["expired"] += 1

    for job in installs.filter(state=Job.State.RUNNING, updated__lt=now - STALE_RUNNING):
        if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, updated=job.updated).update(
            state=Job.State.FAILED,
            finished=now,
            message="The install was interrupted (the worker stopped); please try again.",
        ):
            counts["interrupted"] += 1

    clock = time.time()
    unfinished = list(installs.exclude(state__in=Job.FINISHED))
    busy_staging = {job_staging_dir(job).name for job in unfinished}
    for entry in uploads_dir().iterdir():
        if entry.name in busy_staging or not _old(entry, clock):
            continue
        if entry.name.startswith("incoming-") or _uuid(entry.name):
            remove_tree(entry)
            counts["folders"] += 1

    busy_versions = {str(job.params.get("placed", "")) for job in unfinished}
    busy_apps = {str(job.params.get("app_id", "")) for job in unfinished}
    apps_root = Path(settings.DS_DATA_DIR) / "apps"
    if apps_root.is_dir():
        for app_dir in apps_root.iterdir():
            app_id = _uuid(app_dir.name)
            if app_id is None or not app_dir.is_dir():
                continue
            counts["folders"] += _sweep_app_dir(app_dir, app_id, busy_versions, busy_apps, clock)
    if any(counts.values()):
        log.info("installs sweep: %s", counts)
    return counts


def _sweep_app_dir(app_dir: Path, app_id, busy_versions, busy_apps, clock: float) -> int:
    removed = 0
    known = set(AppVersion.objects.filter(app__public_id=app_id).values_list("version", flat=True))
    for version_dir in app_dir.iterdir():
        key = f"{app_dir.name}/{version_dir.name}"
        if version_dir.name in known or key in busy_versions or not _old(version_dir, clock):
            continue
        remove_tree(version_dir)
        removed += 1
    has_row = App.objects.filter(public_id=app_id).exists()
    if not has_row and app_dir.name not in busy_apps and not any(app_dir.iterdir()):
        app_dir.rmdir()
    return removed
