"""Making backups: the services other code calls (`backup_create`, `backup_before_migration`),
the per-user storage cap, and the Jobs that run backups for the panel. A READY backup then gets
its off-site copy (backups/offsite/copies.py) and the appspace's retention (retention.py).

A backup is a row in state PENDING while its archive is written under a temporary name, and
READY only once the archive is complete, fsynced and renamed into place (and, by default, read
back and verified). Nothing lists or restores a backup that is not READY.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone

from appspaces.jobs import (
    JobCancelled,
    JobFailed,
    enqueue_on_commit,
    job_claim,
    job_finish,
    job_progress,
    job_running,
    job_step,
)
from appspaces.models import Appspace, Job
from appspaces.sandboxes import DataUnavailable, appspace_data_held
from backups.format.archive import archive_name, hash_files, verify_archive, write_archive
from backups.format.metadata import ArchiveError, Metadata
from backups.models import Backup, BackupPolicy
from backups.offsite import tree
from backups.offsite.copies import offsite_enabled, offsite_job_create
from backups.quiesce import QuiesceError, Quiescer
from backups.retention import retention_apply
from backups.snapshot import SnapshotError, take_snapshot
from backups.store import (
    MB,
    BackupError,
    backup_policy,
    ensure_backups_dir,
    staging_path,
    worker_name,
)
from packages.extraction import remove_tree
from sandbox.protocol import SandboxError

log = logging.getLogger(__name__)


# --- The per-user cap -------------------------------------------------------------------------


def user_backup_bytes(user) -> int:
    mine = Q(appspace__owner=user) | Q(appspace__isnull=True, kept_owner=user)
    total = Backup.objects.filter(mine, state=Backup.State.READY).aggregate(
        total=Sum("size_bytes")
    )["total"]
    return int(total or 0)


def user_cap_bytes() -> int | None:
    cap = settings.DS_BACKUP_USER_CAP_MB
    return cap * MB if cap > 0 else None


def _size(n: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", MB), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def cap_message(used: int, cap: int, extra: int = 0) -> str:
    if extra:
        return (
            f"This backup ({_size(extra)}) would bring your backups to {_size(used + extra)}, "
            f"over the {_size(cap)} this server allows you, so it was not kept. Delete older "
            "backups (or ask the administrator to raise the limit); the existing backups are kept."
        )
    return (
        f"Your backups use {_size(used)} of the {_size(cap)} this server allows you. No new "
        "backup can be made until you delete older backups (or the administrator raises the "
        "limit); the existing backups are kept."
    )


def cap_status(user) -> dict:
    """For the panel: what the user's backups take, the cap, and whether it is reached."""
    used, cap = user_backup_bytes(user), user_cap_bytes()
    return {
        "used": used,
        "cap": cap,
        "reached": cap is not None and used >= cap,
        "message": cap_message(used, cap) if cap is not None and used >= cap else "",
    }


def _check_cap(user, extra: int = 0) -> None:
    cap = user_cap_bytes()
    if cap is None:
        return
    used = user_backup_bytes(user)
    if used + extra > cap or (extra == 0 and used >= cap):
        raise BackupError(cap_message(used, cap, extra))


# --- Progress ---------------------------------------------------------------------------------


class Reporter:
    """Steps and progress of one backup: onto its Job (if any, which may cancel it) and the
    heartbeat of its row (how the sweep tells a live backup from a dead one)."""

    def __init__(self, backup: Backup, job: Job | None):
        self.backup, self.job = backup, job
        self.last_beat = 0.0

    def step(self, text: str, progress: int) -> None:
        if self.job is not None:
            job_step(self.job, text, progress)
        self.beat(force=True)

    def progress(self, progress: int) -> None:
        if self.job is not None:
            job_progress(self.job, progress)
        self.beat()

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_beat > 2.0:
            self.last_beat = now
            Backup.objects.filter(pk=self.backup.pk).update(heartbeat=timezone.now())

    def span(self, start: int, end: int, total: int) -> Callable[[int], None]:
        """A bytes-done callback moving the bar from `start` to `end` over `total` bytes."""
        total = max(total, 1)
        return lambda done: self.progress(start + (end - start) * min(done, total) // total)


# --- Making a backup --------------------------------------------------------------------------


def _fresh_pending(appspace: Appspace):
    stale = timezone.now() - timedelta(seconds=settings.DS_BACKUP_STALE_SECONDS)
    return Backup.objects.filter(
        appspace=appspace, state=Backup.State.PENDING, heartbeat__gte=stale
    )


def _begin(appspace: Appspace, kind: str, job: Job | None) -> Backup:
    """The PENDING row, made under a lock so two backups of one appspace never overlap."""
    backup_policy(appspace)
    with transaction.atomic():
        BackupPolicy.objects.select_for_update().get(appspace=appspace)
        if _fresh_pending(appspace).exists():
            raise BackupError("A backup of this appspace is already being made.")
        now = timezone.now()
        backup = Backup(appspace=appspace, kind=kind, created=now, job=job)
        backup.file_name = archive_name(now, kind, backup.public_id)
        backup.app_version = appspace.app_version
        backup.app_version_label = appspace.app_version.version
        backup.data_schema = appspace.data_schema
        backup.worker, backup.heartbeat = worker_name(), now
        backup.save()
        return backup


def _snapshot(appspace: Appspace, staging, quiescer: Quiescer, report: Reporter):
    """The snapshot of the live data. Run as root it is read in place; otherwise the data is
    the appspace uid's and is read through a read-only view the supervisor opens
    (`data_view`, docs/security.md), closed before the image's hold is released."""
    if os.geteuid() == 0:
        return take_snapshot(appspace.data_path, staging, quiescer, tick=report.beat)
    sandbox_id = str(appspace.public_id)
    try:
        source = Path(quiescer.client.data_view(sandbox_id, appspace.sandbox_uid))
    except SandboxError as exc:
        raise SnapshotError(f"The data could not be opened for the backup: {exc}") from None
    try:
        return take_snapshot(source, staging, quiescer, tick=report.beat)
    finally:
        with contextlib.suppress(SandboxError):
            quiescer.client.data_view_close(sandbox_id)


def backup_leftovers_remove(backup: Backup) -> None:
    """Everything an unfinished backup may have left: its staging copy and temporary archive
    (and the archive itself if the row never became READY)."""
    remove_tree(staging_path(backup))
    tmp = backup.path.with_name(f".tmp-{backup.file_name}")
    tmp.unlink(missing_ok=True)
    if backup.state != Backup.State.READY:
        backup.path.unlink(missing_ok=True)


def _user_message(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "The disk holding the backups is full, so this backup was not made. Nothing was "
            "lost: the appspace's data and its earlier backups are untouched. Free some space "
            "(or ask the administrator to) and try again."
        )
    if isinstance(exc, BackupError | SnapshotError | QuiesceError | ArchiveError):
        return str(exc)
    if isinstance(exc, JobCancelled):
        return "Cancelled."
    return None


def backup_create(*, appspace: Appspace, kind: str, job: Job | None = None) -> Backup:
    """Back up an appspace's data now, in this process; returns the READY backup.

    The appspace is held still (frozen) only while its changed files are copied; the copy is
    then hashed, compressed and written without it. Raises BackupError with a sentence for the
    user, after marking the row FAILED and removing everything it wrote; older backups and the
    appspace's data are never touched.
    """
    appspace = Appspace.objects.select_related("app", "app_version", "owner").get(pk=appspace.pk)
    backup = _begin(appspace, kind, job)
    report = Reporter(backup, job)
    try:
        _check_cap(appspace.owner)
        ensure_backups_dir(appspace)
        _make(backup, appspace, report)
    except BaseException as exc:
        message = _user_message(exc)
        backup_fail(backup, message or "The backup failed on the server (see the worker's log).")
        backup.refresh_from_db()
        if message is not None and not isinstance(exc, JobCancelled):
            raise BackupError(message) from exc
        raise
    transaction.on_commit(lambda: _prune_after(appspace.pk))
    offsite_job_create(backup=backup)  # a separate job: a failed copy never fails this backup
    return backup


def _prune_after(appspace_id: int) -> None:
    appspace = Appspace.objects.filter(pk=appspace_id).first()
    if appspace is not None:
        retention_apply(appspace=appspace)


def _make(backup: Backup, appspace: Appspace, report: Reporter) -> None:
    staging = staging_path(backup)
    report.step("Copying the data", 5)
    quiescer = Quiescer(str(appspace.public_id))
    try:
        # A stopped appspace's data image is mounted for the copy (the folder is empty under it).
        with appspace_data_held(appspace, quiescer.client):
            snap = _snapshot(appspace, staging, quiescer, report)
    except DataUnavailable as exc:
        raise BackupError(f"{exc} Nothing was backed up; try again shortly.") from None
    finally:
        quiescer.client.close()
    report.step("Checking the files", 30)
    records = hash_files(staging, snap.files, progress=report.span(30, 40, snap.total_bytes))
    metadata = Metadata(
        appspace_id=str(appspace.public_id),
        app_id=str(appspace.app.public_id),
        app_name=appspace.app.name,
        app_version=appspace.app_version.version,
        data_schema=appspace.data_schema,
        created=backup.created.isoformat(),
        files=records,
        folders=snap.folders,
        skipped=snap.skipped,
    )
    report.step("Compressing", 40)
    size = write_archive(
        source=staging,
        dest=backup.path,
        metadata=metadata,
        progress=report.span(40, 85, snap.total_bytes),
    )
    backup.size_bytes = size
    try:
        _check_cap(appspace.owner, extra=size)
    except BackupError:
        backup.path.unlink(missing_ok=True)
        raise
    verified_at = None
    if settings.DS_BACKUP_VERIFY_AFTER_WRITE:
        report.step("Verifying the archive", 85)
        verify_archive(backup.path, progress=report.span(85, 99, snap.total_bytes))
        verified_at = timezone.now()
    _offsite_tree(backup, appspace, staging, metadata)
    remove_tree(staging)
    warnings = [f"{s['path']}: {s['reason']}" for s in snap.skipped][:100]
    Backup.objects.filter(pk=backup.pk).update(
        state=Backup.State.READY,
        size_bytes=size,
        data_bytes=snap.total_bytes,
        file_count=len(records),
        downtime_ms=round(snap.downtime_ms),
        verified_at=verified_at,
        warnings=warnings,
        finished=timezone.now(),
        heartbeat=None,
        message="",
    )
    backup.refresh_from_db()


def _offsite_tree(backup: Backup, appspace: Appspace, staging: Path, metadata: Metadata) -> None:
    """With an off-site repository, the staging copy (just hashed into the archive's metadata)
    becomes the tree the next off-site copy sends (backups/offsite/tree.py): its changed files
    are moved there instead of deleted. Skipped while a copy is reading the tree: that job then
    brings the tree up to date from the archive itself."""
    if not offsite_enabled():
        return
    key = str(appspace.public_id)
    try:
        with tree.locked(key, wait=False) as got:
            if got:
                tree.update(key, str(backup.public_id), staging, metadata)
    except OSError as exc:  # the backup stands; the copy job rebuilds the tree from the archive
        log.warning("off-site tree of %s not updated: %s", key, exc)


def backup_fail(backup: Backup, message: str) -> None:
    """Mark a backup that did not complete as FAILED and remove what it wrote."""
    Backup.objects.filter(pk=backup.pk).exclude(state=Backup.State.READY).update(
        state=Backup.State.FAILED, message=message, finished=timezone.now(), heartbeat=None
    )
    backup.refresh_from_db()
    backup_leftovers_remove(backup)


def backup_before_migration(*, appspace: Appspace) -> Backup:
    """For the migration code: a verified backup of the appspace's data as it is now, to call
    (with the appspace's sandbox stopped or not) before a migration that changes the data
    schema. Raises BackupError: do not migrate then. Pass the result to
    `backups.restore.restore_after_failed_migration` if the migration fails."""
    return backup_create(appspace=appspace, kind=Backup.Kind.PRE_MIGRATION)


# --- Jobs -------------------------------------------------------------------------------------


def backup_job_create(*, appspace: Appspace, kind: str = Backup.Kind.MANUAL, enqueue=True) -> Job:
    """A BACKUP job for the live job page; the Celery task runs it."""
    job = Job.objects.create(
        kind=Job.Kind.BACKUP,
        owner=appspace.owner,
        app=appspace.app,
        app_version=appspace.app_version,
        appspace=appspace,
        step="Waiting for a worker",
        params={
            "backup_kind": kind,
            "next_url": reverse("backup_list", args=[appspace.public_id]),
        },
    )
    if enqueue:
        enqueue_on_commit("backups.tasks.backup_run", job.pk)
    return job


def backup_job_run(*, job_id: int) -> str:
    job = job_claim(job_id)
    if job is None:
        return "not claimed"
    appspace = job.appspace
    if appspace is None:
        job_finish(job, Job.State.FAILED, "The appspace no longer exists.")
        return Job.State.FAILED
    with job_running(job):
        try:
            backup = backup_create(appspace=appspace, kind=job.params.get("backup_kind"), job=job)
        except BackupError as exc:
            raise JobFailed(str(exc)) from None
        count = len(backup.warnings)
        note = f" {count} file{pluralize(count)} could not be kept." if count else ""
        job_finish(
            job,
            Job.State.SUCCEEDED,
            f"Backed up {backup.file_count} file{pluralize(backup.file_count)} "
            f"({_size(backup.size_bytes)}); the appspace "
            f"was paused for {backup.downtime_ms or 0} ms.{note}",
        )
    job.refresh_from_db(fields=["state"])
    return job.state
