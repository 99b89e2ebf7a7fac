"""The admin's view of backups: every archive, and the health overview (last good backup per
appspace, failures, damaged archives) at admin/backups/backup/health/."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.db.models import Count, Max, Q, Sum
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from appspaces.models import Appspace
from backups.models import Backup, BackupPolicy, InstanceBackup, OffsiteCheck
from backups.schedule import clamp_interval

INSTANCE_ROWS = 10  # the newest whole-instance backups listed on the health page


def health_rows(now=None) -> list[dict]:
    """One row per appspace, those needing attention first."""
    now = now or timezone.now()
    ready = Q(backups__state=Backup.State.READY)
    appspaces = (
        Appspace.objects.select_related("owner", "backup_policy")
        .annotate(
            last_ready=Max("backups__created", filter=ready),
            count=Count("backups", filter=ready),
            bytes=Sum("backups__size_bytes", filter=ready),
            damaged=Count("backups", filter=ready & ~Q(backups__verify_error="")),
            offsite_failed=Count(
                "backups", filter=ready & Q(backups__offsite_state=Backup.Offsite.FAILED)
            ),
            last_offsite=Max(
                "backups__created", filter=ready & Q(backups__offsite_state=Backup.Offsite.COPIED)
            ),
        )
        .order_by("subdomain")
    )
    last_failures: dict[int, Backup] = {}
    for backup in Backup.objects.filter(state=Backup.State.FAILED).order_by("created"):
        last_failures[backup.appspace_id] = backup
    rows = []
    for appspace in appspaces:
        policy = getattr(appspace, "backup_policy", None)
        hours = clamp_interval(policy.interval_hours if policy else 24)
        failure = last_failures.get(appspace.pk)
        if failure and appspace.last_ready and failure.created < appspace.last_ready:
            failure_is_last = False
        else:
            failure_is_last = failure is not None
        problem = ""
        if appspace.damaged:
            problem = "damaged archive"
        elif appspace.offsite_failed:
            problem = "off-site copy failed"
        elif failure_is_last:
            problem = "last attempt failed"
        elif (
            appspace.status == Appspace.Status.ACTIVE
            and (policy is None or policy.enabled)
            and (
                appspace.last_ready is None
                or appspace.last_ready < now - timedelta(hours=2 * hours)
            )
        ):
            problem = "overdue"
        rows.append(
            {
                "appspace": appspace,
                "last_ready": appspace.last_ready,
                "last_failure": failure,
                "count": appspace.count,
                "bytes": appspace.bytes or 0,
                "damaged": appspace.damaged,
                "offsite_failed": appspace.offsite_failed,
                "last_offsite": appspace.last_offsite,
                "problem": problem,
            }
        )
    rows.sort(key=lambda r: (not r["problem"], r["appspace"].subdomain))
    return rows


def offsite_health() -> dict:
    """The off-site repository's part of the health page: where it is (no credentials), the
    last integrity check, and the copies that failed."""
    from backups.offsite.copies import offsite_enabled, repository

    if not offsite_enabled():
        return {"offsite": None}
    repo = repository()
    return {
        "offsite": {
            "location": repo.scrub(repo.location),
            "check": OffsiteCheck.objects.first(),
            "failed": Backup.objects.filter(
                state=Backup.State.READY, offsite_state=Backup.Offsite.FAILED
            ).count(),
            "pending": Backup.objects.filter(offsite_state=Backup.Offsite.PENDING).count(),
        }
    }


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    list_display = [
        "appspace", "kind", "state", "created", "size_bytes", "downtime_ms", "verified_at",
    ]  # fmt: skip
    list_filter = ["state", "kind"]
    search_fields = ["appspace__subdomain", "appspace__owner__email", "file_name"]
    readonly_fields = [f.name for f in Backup._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def get_urls(self):
        return [
            path("health/", self.admin_site.admin_view(self.health_view), name="backup_health"),
            *super().get_urls(),
        ]

    def health_view(self, request):
        rows = health_rows()
        return render(
            request,
            "backups/health.html",
            {
                **self.admin_site.each_context(request),
                "rows": rows,
                "problems": sum(1 for r in rows if r["problem"]),
                "total_bytes": sum(r["bytes"] for r in rows),
                "last_instance": InstanceBackup.objects.first(),
                "last_good": InstanceBackup.objects.filter(state="ready").first(),
                "instance_backups": InstanceBackup.objects.all()[:INSTANCE_ROWS],
                "instance_keep": {
                    "last": settings.DS_BACKUP_INSTANCE_KEEP_LAST,
                    "daily": settings.DS_BACKUP_INSTANCE_KEEP_DAILY,
                    "weekly": settings.DS_BACKUP_INSTANCE_KEEP_WEEKLY,
                },
                **offsite_health(),
            },
        )


@admin.register(BackupPolicy)
class BackupPolicyAdmin(admin.ModelAdmin):
    list_display = ["appspace", "enabled", "interval_hours", "keep_daily", "keep_weekly"]
    search_fields = ["appspace__subdomain"]


@admin.register(InstanceBackup)
class InstanceBackupAdmin(admin.ModelAdmin):
    list_display = ["created", "state", "size_bytes", "appspace_count", "target"]
    list_filter = ["state"]
    readonly_fields = [f.name for f in InstanceBackup._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
