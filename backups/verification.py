"""Re-reading archives: every READY backup is verified again every DS_BACKUP_VERIFY_DAYS (bit
rot, a disk that lost a block, a hand that edited a file), and on demand (`verify_backups`)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from backups.format.archive import verify_archive
from backups.format.metadata import ArchiveError
from backups.models import Backup


def backup_verify(*, backup: Backup) -> str:
    """ "" if the archive is complete and every checksum matches, else why not (also recorded
    on the row: `verify_error`, shown in the panel and the admin overview)."""
    try:
        if not backup.path.is_file():
            raise ArchiveError("The archive is missing from the disk.")
        verify_archive(backup.path)
        error = ""
    except ArchiveError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"The archive cannot be read: {exc.strerror or exc}."
    fields = {"verify_error": error}
    if not error:
        fields["verified_at"] = timezone.now()
    Backup.objects.filter(pk=backup.pk).update(**fields)
    backup.refresh_from_db()
    return error


def backups_verify_due() -> dict[str, int]:
    since = timezone.now() - timedelta(days=settings.DS_BACKUP_VERIFY_DAYS)
    counts = {"verified": 0, "bad": 0}
    due = Backup.objects.filter(state=Backup.State.READY).filter(
        Q(verified_at__isnull=True) | Q(verified_at__lt=since)
    )
    for backup in due.select_related("appspace"):
        counts["bad" if backup_verify(backup=backup) else "verified"] += 1
    return counts
