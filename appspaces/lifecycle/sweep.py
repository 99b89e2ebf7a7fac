"""The lifecycle's upkeep: creations and version changes whose worker died are ended, and
the trash of deleted appspaces is emptied (task `appspaces.tasks.appspaces_sweep`)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from appspaces.jobs import job_finish
from appspaces.lifecycle.control import appspace_status_set, trash_empty
from appspaces.lifecycle.creation import creation_undo
from appspaces.models import Appspace, Job


def appspaces_sweep() -> dict[str, int]:
    """Creations and version changes whose worker died: a creation is undone (no row, no
    folders); an interrupted version change leaves the appspace in PROBLEM with what to do."""
    stale = timezone.now() - timedelta(minutes=settings.DS_APPSPACE_JOB_STALE_MINUTES)
    counts = {"creations": 0, "migrations": 0, "trash": trash_empty()}
    for job in Job.objects.filter(
        kind=Job.Kind.CREATE,
        state__in=(Job.State.QUEUED, Job.State.RUNNING),
        updated__lt=stale,
    ).select_related("appspace__app_version"):
        failed = (
            Job.objects.filter(pk=job.pk, updated__lt=stale)
            .exclude(state__in=Job.FINISHED)
            .update(
                state=Job.State.FAILED,
                finished=timezone.now(),
                message="The creation was interrupted; nothing of it was kept.",
            )
        )
        if not failed:
            continue
        if job.appspace is not None and job.appspace.status == Appspace.Status.CREATING:
            creation_undo(job, job.appspace)
        counts["creations"] += 1
    for job in Job.objects.filter(
        kind=Job.Kind.MIGRATE, state=Job.State.RUNNING, updated__lt=stale
    ).select_related("appspace", "app_version"):
        job_finish(job, Job.State.FAILED, "The change of version was interrupted.")
        if job.appspace is not None:
            appspace_status_set(
                job.appspace,
                Appspace.Status.PROBLEM,
                "A change of version was interrupted. Restore the backup made before it (on "
                "the Backups page), then resume the appspace.",
                only_from=(Appspace.Status.MIGRATING,),
            )
        counts["migrations"] += 1
    return counts
