"""Off-site copies of appspace backups: the OFFSITE job that uploads a READY backup to the
configured restic repository as a file tree (backups/offsite/tree.py; tagged with the appspace,
the backup, its kind and `format=tree`), retention
there by each appspace's policy, the periodic integrity check, and fetching an archive back
from a snapshot for the verified restore path (backups/restore.py).

A failed copy never deletes or changes anything local: it only marks the backup's
`offsite_state` FAILED with a message scrubbed of secrets, and the Celery task retries.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from appspaces.jobs import (
    JobFailed,
    enqueue_on_commit,
    job_claim,
    job_finish,
    job_progress,
    job_running,
    job_step,
)
from appspaces.models import Appspace, Job
from backups.format.metadata import ArchiveError
from backups.models import Backup, OffsiteCheck
from backups.offsite import tree
from backups.offsite.restic import Repository, ResticError
from backups.store import backup_policy
from packages.extraction import remove_tree

log = logging.getLogger(__name__)

KEEP_FOREVER = (Backup.Kind.MANUAL, Backup.Kind.IMPORTED)


def repository() -> Repository:
    return Repository.from_settings()


def offsite_enabled() -> bool:
    return bool(settings.DS_BACKUP_REPOSITORY and settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE)


def tree_key(backup: Backup) -> str:
    return str(backup.appspace.public_id if backup.appspace_id else backup.kept_folder)


def backup_tags(backup: Backup) -> list[str]:
    return [f"appspace={tree_key(backup)}", f"backup={backup.public_id}", f"kind={backup.kind}"]


# --- the upload job -----------------------------------------------------------------------------


def offsite_job_create(*, backup: Backup, enqueue: bool = True) -> Job | None:
    """An OFFSITE job copying a READY backup to the repository (None when none is set)."""
    if not offsite_enabled() or backup.state != Backup.State.READY:
        return None
    Backup.objects.filter(pk=backup.pk).update(
        offsite_state=Backup.Offsite.PENDING, offsite_message=""
    )
    appspace = backup.appspace
    job = Job.objects.create(
        kind=Job.Kind.OFFSITE,
        owner=appspace.owner if appspace else backup.kept_owner,
        app=appspace.app if appspace else None,
        appspace=appspace,
        step="Waiting for a worker",
        params={
            "backup": str(backup.public_id),
            "next_url": reverse("backup_list", args=[appspace.public_id]) if appspace else "",
        },
    )
    if enqueue:
        enqueue_on_commit("backups.tasks.offsite_upload", job.pk)
    return job


def offsite_copy(backup: Backup, job: Job | None = None) -> str:
    """Upload one READY backup's archive; returns the snapshot id. Raises ResticError (with
    the backup marked FAILED off-site) and leaves the local archive as it is."""
    repo = repository()

    def progress(fraction: float, _status: dict) -> None:
        if job is not None:
            job_progress(job, 10 + int(fraction * 85))

    key = tree_key(backup)
    try:
        if not backup.path.is_file():
            raise ResticError(ResticError.NOT_FOUND, "The backup's archive is missing locally.")
        with tree.locked(key):
            if tree.held(key) != str(backup.public_id):
                try:  # the tree holds another backup: from the archive, verified
                    tree.update_from_archive(key, str(backup.public_id), backup.path)
                except (ArchiveError, OSError) as exc:
                    raise ResticError(
                        ResticError.FAILED, f"The archive could not be unpacked: {exc}"
                    ) from None
            paths, tags = [tree.tree_dir(key)], [*backup_tags(backup), tree.TAG]
            try:
                snapshot = repo.backup(paths, tags, time=backup.created, progress=progress)
            except ResticError as exc:
                if exc.kind != ResticError.NO_REPOSITORY:
                    raise
                repo.ensure()  # the first copy: create the repository (one restic run less
                snapshot = repo.backup(paths, tags, time=backup.created, progress=progress)
    except ResticError as exc:
        Backup.objects.filter(pk=backup.pk).update(
            offsite_state=Backup.Offsite.FAILED, offsite_message=exc.message
        )
        log.warning("off-site copy of backup %s failed: %s", backup.public_id, exc.message)
        raise
    Backup.objects.filter(pk=backup.pk).update(
        offsite_state=Backup.Offsite.COPIED,
        offsite_snapshot=snapshot,
        offsite_message="",
        offsite_at=timezone.now(),
    )
    return snapshot


def offsite_job_run(*, job_id: int, final: bool = True) -> str:
    """Run an OFFSITE job. Unless `final`, a failure that may pass (unreachable, locked, full)
    puts the job back in the queue and returns "retry" for the task to try again later."""
    job = job_claim(job_id)
    if job is None:
        return "not claimed"
    backup = Backup.objects.filter(public_id=job.params.get("backup")).first()
    retry = ""
    with job_running(job):
        if backup is None or backup.state != Backup.State.READY:
            raise JobFailed("This backup no longer exists.")
        job_step(job, "Copying the archive to the off-site repository", 10)
        try:
            snapshot = offsite_copy(backup, job)
        except ResticError as exc:
            if final or exc.kind in (ResticError.NOT_CONFIGURED, ResticError.NOT_FOUND):
                raise JobFailed(f"The off-site copy failed: {exc.message}") from None
            retry = exc.message
        else:
            job_finish(job, Job.State.SUCCEEDED, f"Copied off-site (snapshot {snapshot[:8]}).")
    if retry:
        Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
            state=Job.State.QUEUED, step=f"Failed, will try again: {retry}"[:100]
        )
        return "retry"
    job.refresh_from_db(fields=["state"])
    return job.state


STALE_COPY_SECONDS = 3600  # an OFFSITE job RUNNING without a word for this long: worker died


def offsite_catch_up() -> int:
    """Copies that did not make it, started again: OFFSITE jobs whose worker died are failed,
    and every READY backup whose copy failed (or never started) gets a new job. Returns how
    many jobs were queued."""
    if not offsite_enabled():
        return 0
    stale = timezone.now() - timedelta(seconds=STALE_COPY_SECONDS)
    for job in Job.objects.filter(
        kind=Job.Kind.OFFSITE, state=Job.State.RUNNING, updated__lt=stale
    ):
        job_finish(job, Job.State.FAILED, "The copy was interrupted (its worker stopped).")
        Backup.objects.filter(
            public_id=job.params.get("backup"), offsite_state=Backup.Offsite.PENDING
        ).update(offsite_state=Backup.Offsite.FAILED, offsite_message="Interrupted.")
    waiting = set(
        Job.objects.filter(kind=Job.Kind.OFFSITE)
        .exclude(state__in=Job.FINISHED)
        .values_list("params__backup", flat=True)
    )
    queued = 0
    for backup in Backup.objects.filter(
        state=Backup.State.READY, offsite_state=Backup.Offsite.FAILED
    ).select_related("appspace", "appspace__app", "appspace__owner"):
        if str(backup.public_id) not in waiting and backup.appspace_id is not None:
            offsite_job_create(backup=backup)
            queued += 1
    return queued


# --- retention, check, fetch ------------------------------------------------------------------


def offsite_retention(appspace: Appspace) -> None:
    """Forget (and prune) the appspace's snapshots by its backup policy, as local pruning
    does: scheduled backups by day and week (the newest always kept), pre-migration ones for
    keep_pre_migration_days, manual and imported ones never."""
    policy = backup_policy(appspace)
    repo = repository()
    base = f"appspace={appspace.public_id}"
    repo.forget_policy(
        [base, f"kind={Backup.Kind.SCHEDULED}"],
        keep_last=1,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
    )
    repo.forget_policy(
        [base, f"kind={Backup.Kind.PRE_MIGRATION}"],
        keep_last=1,
        keep_within=f"{max(policy.keep_pre_migration_days, 1)}d",
    )


def offsite_prune_all() -> int:
    if not offsite_enabled():
        return 0
    done = 0
    copied = Appspace.objects.filter(backups__offsite_state=Backup.Offsite.COPIED).distinct()
    for appspace in copied:
        try:
            offsite_retention(appspace)
            done += 1
        except ResticError as exc:
            log.warning("off-site retention of %s failed: %s", appspace.public_id, exc.message)
    return done


def offsite_check(read_data: str | None = None) -> OffsiteCheck | None:
    """Check the repository's integrity (re-reading `read_data` of its packs); the result is
    kept for the backup health page."""
    if not offsite_enabled():
        return None
    read_data = settings.DS_BACKUP_OFFSITE_CHECK_READ if read_data is None else read_data
    try:
        result = repository().check(read_data_subset=read_data or None)
        ok, kind, output = result.ok, result.kind, result.output
    except ResticError as exc:
        ok, kind, output = False, exc.kind, exc.message
    return OffsiteCheck.objects.create(ok=ok, kind=kind, output=output, read_data=read_data)


def offsite_snapshots(appspace: Appspace):
    """The appspace's snapshots in the repository, newest first."""
    return list(reversed(repository().snapshots([f"appspace={appspace.public_id}"])))


def offsite_fetch(*, appspace: Appspace, snapshot_id: str, dest: Path) -> None:
    """Write the archive of one of the appspace's snapshots to `dest` (a staging file the
    caller then verifies and restores). Raises ResticError; `dest` is removed on failure."""
    repo = repository()
    found = [
        s
        for s in repo.snapshots([f"appspace={appspace.public_id}"])
        if s.id.startswith(snapshot_id) and len(snapshot_id) >= 8
    ]
    if len(found) != 1 or len(found[0].paths) != 1:
        raise ResticError(ResticError.NOT_FOUND, "This off-site snapshot does not exist.")
    snap = found[0]
    if tree.TAG not in snap.tags:  # copies made before trees: the archive file itself
        try:
            with open(dest, "wb") as out:
                repo.dump(snap.id, snap.paths[0], out)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return
    scratch = dest.with_name(f".{dest.name}.tree")
    try:
        repo.restore(snap.id, scratch)
        tree.to_archive(scratch / snap.paths[0].lstrip("/"), dest)
    except (ArchiveError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise ResticError(
            ResticError.CORRUPTED, f"The off-site snapshot is damaged: {exc}"
        ) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        remove_tree(scratch)
