"""A notice per person, kind and subject while its condition holds; who wants which by email."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class NoticeQuerySet(models.QuerySet):
    def open(self):
        return self.filter(resolved_at__isnull=True)

    def shown(self):
        """What the panel shows: open and not dismissed."""
        return self.open().filter(dismissed_at__isnull=True)


class Notice(models.Model):
    """One occurrence of a condition for one recipient: opened when first seen, resolved when
    it no longer holds (a recurrence then opens a new row, and notifies again). Emailed once,
    then reminded every DS_NOTICE_REMIND_HOURS while open and not dismissed."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notices"
    )
    kind = models.CharField(max_length=40)
    key = models.CharField(max_length=200)
    title = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    path = models.CharField(max_length=500, default="/")  # on the panel host
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)
    email_count = models.PositiveIntegerField(default=0)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = NoticeQuerySet.as_manager()

    class Meta:
        ordering = ["-first_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "kind", "key"],
                condition=Q(resolved_at__isnull=True),
                name="notice_open_once",
            ),
        ]
        indexes = [models.Index(fields=["kind", "resolved_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} for {self.recipient_id}"

    @property
    def url(self) -> str:
        return settings.DS_PANEL_URL + self.path


class NoticePreference(models.Model):
    """Whether a person gets a kind of notice by email; no row: yes. The panel always shows."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notice_preferences"
    )
    kind = models.CharField(max_length=40)
    email = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind"], name="notice_preference_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {'email' if self.email else 'panel only'}"
