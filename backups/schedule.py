"""When backups are made: which appspaces are due by their policy (interval, retry delay,
nothing else under way), and the scheduled BACKUP jobs queued for them (task
`backups.tasks.backups_schedule`, every 5 minutes)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from appspaces.models import Appspace, Job
from backups.models import Backup, BackupPolicy
from backups.services import backup_job_create

BUSY_JOBS = (Job.Kind.BACKUP, Job.Kind.RESTORE, Job.Kind.MIGRATE)


def clamp_interval(hours: int) -> int:
    return max(
        settings.DS_BACKUP_MIN_INTERVAL_HOURS, min(settings.DS_BACKUP_MAX_INTERVAL_HOURS, hours)
    )


def backups_due(now: datetime | None = None) -> list[Appspace]:
    """Active appspaces whose scheduled backup is due: no READY backup within their interval,
    no failed attempt within the retry delay, and no backup, restore or migration under way."""
    now = now or timezone.now()
    for appspace in Appspace.objects.filter(
        status=Appspace.Status.ACTIVE, backup_policy__isnull=True
    ):
        BackupPolicy.objects.get_or_create(appspace=appspace)
    busy = Job.objects.filter(appspace=OuterRef("pk"), kind__in=BUSY_JOBS).exclude(
        state__in=Job.FINISHED
    )
    retry_after = now - timedelta(minutes=settings.DS_BACKUP_RETRY_MINUTES)
    candidates = (
        Appspace.objects.filter(status=Appspace.Status.ACTIVE, backup_policy__enabled=True)
        .annotate(
            last_ready=Max("backups__created", filter=Q(backups__state=Backup.State.READY)),
            last_failed=Max("backups__created", filter=Q(backups__state=Backup.State.FAILED)),
            busy=Exists(busy),
            pending=Exists(
                Backup.objects.filter(appspace=OuterRef("pk"), state=Backup.State.PENDING)
            ),
        )
        .select_related("backup_policy")
    )
    due = []
    for appspace in candidates:
        if appspace.busy or appspace.pending:
            continue
        interval = timedelta(hours=clamp_interval(appspace.backup_policy.interval_hours))
        if appspace.last_ready is not None and appspace.last_ready > now - interval:
            continue
        if appspace.last_failed is not None and appspace.last_failed > retry_after:
            continue
        due.append(appspace)
    return due


def backups_schedule(now: datetime | None = None) -> list[Job]:
    """Queue a scheduled BACKUP job for every due appspace; harmless when run twice at once
    (the policy row is locked and the busy check made again under the lock)."""
    jobs = []
    for appspace in backups_due(now):
        with transaction.atomic():
            locked = (
                BackupPolicy.objects.select_for_update(skip_locked=True)
                .filter(appspace=appspace)
                .first()
            )
            if locked is None:
                continue  # another scheduler run has it
            busy = (
                Job.objects.filter(appspace=appspace, kind__in=BUSY_JOBS)
                .exclude(state__in=Job.FINISHED)
                .exists()
            )
            if busy:
                continue
            jobs.append(backup_job_create(appspace=appspace, kind=Backup.Kind.SCHEDULED))
    return jobs
