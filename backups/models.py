"""Backups of appspace data (archives under DS_DATA_DIR/backups/<appspace>/) and each appspace's
schedule and retention policy."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from appspaces.models import Appspace, AppVersion, Job, data_dir


def backups_root() -> Path:
    return data_dir() / "backups"


def appspace_backups_dir(appspace: Appspace) -> Path:
    """Where an appspace's archives live: no sandbox ever mounts anything under backups/."""
    return backups_root() / str(appspace.public_id)


def _default_interval() -> int:
    return settings.DS_BACKUP_DEFAULT_INTERVAL_HOURS


def _default_daily() -> int:
    return settings.DS_BACKUP_KEEP_DAILY


def _default_weekly() -> int:
    return settings.DS_BACKUP_KEEP_WEEKLY


def _default_pre_migration_days() -> int:
    return settings.DS_BACKUP_KEEP_PRE_MIGRATION_DAYS


class BackupPolicy(models.Model):
    """When an appspace is backed up and which backups pruning keeps (created on first use)."""

    appspace = models.OneToOneField(
        Appspace, on_delete=models.CASCADE, related_name="backup_policy"
    )
    enabled = models.BooleanField(default=True)
    interval_hours = models.PositiveIntegerField(default=_default_interval)
    keep_daily = models.PositiveSmallIntegerField(default=_default_daily)
    keep_weekly = models.PositiveSmallIntegerField(default=_default_weekly)
    keep_pre_migration_days = models.PositiveSmallIntegerField(default=_default_pre_migration_days)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"backup policy of {self.appspace}"


class Backup(models.Model):
    """One archive of an appspace's data. Only READY backups are listed or restored: a row is
    PENDING while its archive is written under a temporary name, and FAILED if that stopped."""

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", "scheduled"
        MANUAL = "manual", "manual"
        PRE_MIGRATION = "pre-migration", "before a migration"
        IMPORTED = "imported", "imported"

    class State(models.TextChoices):
        PENDING = "pending", "in progress"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    class Offsite(models.TextChoices):
        PENDING = "pending", "being copied"
        COPIED = "copied", "copied"
        FAILED = "failed", "copy failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Null once the appspace was deleted and its owner chose to keep its backups: the kept_*
    # fields then say whose they are and where they live (rows with neither are swept).
    appspace = models.ForeignKey(
        Appspace, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups"
    )
    kept_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="kept_backups",
    )
    kept_label = models.CharField(max_length=63, blank=True)  # the deleted appspace's subdomain
    kept_folder = models.UUIDField(null=True, blank=True)  # its public id: backups/<id>/
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    file_name = models.CharField(max_length=200)
    size_bytes = models.BigIntegerField(default=0)  # the archive
    data_bytes = models.BigIntegerField(default=0)  # the files in it, uncompressed
    file_count = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)
    downtime_ms = models.PositiveIntegerField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_error = models.TextField(blank=True)
    app_version = models.ForeignKey(
        AppVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    app_version_label = models.CharField(max_length=64, blank=True)  # kept if the version goes
    data_schema = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)  # why it failed
    warnings = models.JSONField(default=list, blank=True)  # e.g. files that could not be kept
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The off-site copy (backups/offsite/): its state, restic snapshot id and last error.
    offsite_state = models.CharField(max_length=16, choices=Offsite.choices, blank=True)
    offsite_snapshot = models.CharField(max_length=64, blank=True)
    offsite_message = models.TextField(blank=True)  # scrubbed of secrets
    offsite_at = models.DateTimeField(null=True, blank=True)
    # Who is writing a PENDING backup ("host:pid") and when it last said so: the sweep takes a
    # backup whose worker died for failed, thaws its appspace and removes its leftovers.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["appspace", "state", "created"])]
        constraints = [
            models.UniqueConstraint(fields=["appspace", "file_name"], name="unique_backup_file"),
        ]

    def __str__(self) -> str:
        when = f"{self.created:%Y-%m-%d %H:%M}"
        of = self.appspace if self.appspace_id else f"{self.kept_label} (deleted)"
        return f"{self.get_kind_display()} backup of {of} ({when})"

    @property
    def path(self) -> Path:
        if self.appspace_id is None:
            return backups_root() / str(self.kept_folder) / self.file_name
        return appspace_backups_dir(self.appspace) / self.file_name

    @property
    def is_ready(self) -> bool:
        return self.state == self.State.READY


class OffsiteCheck(models.Model):
    """The result of one integrity check (`restic check`) of the off-site repository."""

    created = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    kind = models.CharField(max_length=32, blank=True)  # a ResticError kind when not ok
    output = models.TextField(blank=True)  # scrubbed of secrets
    read_data = models.CharField(max_length=16, blank=True)  # --read-data-subset

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"off-site check {self.created:%Y-%m-%d %H:%M}: {'ok' if self.ok else self.kind}"


class InstanceBackup(models.Model):
    """One whole-instance backup (manage.py backup_instance or the schedule), for admins."""

    class State(models.TextChoices):
        PENDING = "pending", "in progress"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    target = models.CharField(max_length=500)  # a path or snapshot id; never credentials
    snapshot = models.CharField(max_length=64, blank=True)  # its id in the repository, if there
    forgotten = models.DateTimeField(null=True, blank=True)  # when repository retention forgot it
    size_bytes = models.BigIntegerField(default=0)
    appspace_count = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"instance backup {self.created:%Y-%m-%d %H:%M} ({self.get_state_display()})"

    def done(self, *, size: int, appspaces: int, warnings: list[str]) -> None:
        self.state, self.finished = self.State.READY, timezone.now()
        self.size_bytes, self.appspace_count, self.warnings = size, appspaces, warnings
        self.save()

    def fail(self, message: str) -> None:
        self.state, self.finished, self.message = self.State.FAILED, timezone.now(), message
        self.save()
