"""Which backups are kept: pruning by each appspace's policy (by default the newest backup of
each of the last 7 days that have one, of each of the last 4 weeks, and backups made before a
migration for 30 days).

Manual and imported backups are the owner's to delete; the newest READY backup of an appspace
is never pruned, whatever the policy says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from appspaces.models import Appspace
from backups.models import Backup, BackupPolicy
from backups.store import backup_delete, backup_policy

FAILED_ROWS_KEPT_DAYS = 30


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
