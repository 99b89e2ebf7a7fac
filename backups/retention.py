"""When backups are made and which are kept: schedule due-ness, and pruning by each appspace's
policy (by default the newest backup of each of the last 7 days that have one, of each of the
last 4 weeks, and backups made before a migration for 30 days).

Manual and imported backups are the owner's to delete; the newest READY backup of an appspace
is never pruned, whatever the policy says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from appspaces.models import Appspace, Job
from backups.models import Backup, BackupPolicy

FAILED_ROWS_KEPT_DAYS = 30
BUSY_JOBS = (Job.Kind.BACKUP, Job.Kind.RESTORE, Job.Kind.MIGRATE)


# --- Pruning ----------------------------------------------------------------------------------


def backups_to_keep(backups: list[Backup], policy: BackupPolicy, now: datetime) -> set[int]:
    """Primary keys of the READY backups the policy keeps (`backups` newest first)."""
    keep: set[int] = set()
    if backups:
        keep.add(backups[0].pk)
    days: list = []
    weeks: list = []
    for backup in backups:
        if backup.kind in (Backup.Kind.MANUAL, Backup.Kind.IMPORTED):
            keep.add(backup.pk)
        elif backup.kind == Backup.Kind.PRE_MIGRATION:
            if backup.created >= now - timedelta(days=policy.keep_pre_migration_days):
                keep.add(backup.pk)
        else:
            day = backup.created.date()
            week = backup.created.isocalendar()[:2]
            if day not in days and len(days) < policy.keep_daily:
                days.append(day)
                keep.add(backup.pk)
            if week not in weeks and len(weeks) < policy.keep_weekly:
                weeks.append(week)
                keep.add(backup.pk)
    return keep


def retention_apply(*, appspace: Appspace, now: datetime | None = None) -> int:
    """Delete the backups the appspace's policy no longer keeps; returns how many."""
    from backups.services import backup_delete, backup_policy

    now = now or timezone.now()
    policy = backup_policy(appspace)
    ready = list(
        Backup.objects.filter(appspace=appspace, state=Backup.State.READY).order_by("-created")
    )
    keep = backups_to_keep(ready, policy, now)
    pruned = 0
    for backup in ready:
        if backup.pk not in keep:
            backup_delete(backup=backup)
            pruned += 1
    Backup.objects.filter(
        appspace=appspace,
        state=Backup.State.FAILED,
        created__lt=now - timedelta(days=FAILED_ROWS_KEPT_DAYS),
    ).delete()
    return pruned


def backups_prune_all() -> int:
    pruned = 0
    for appspace in Appspace.objects.filter(backups__isnull=False).distinct():
        pruned += retention_apply(appspace=appspace)
    return pruned


# --- The schedule -----------------------------------------------------------------------------


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
    from backups.services import backup_job_create

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
