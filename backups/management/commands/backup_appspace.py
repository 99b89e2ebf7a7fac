"""`manage.py backup_appspace SUBDOMAIN [--json]`: back up one appspace now, in this process."""

from __future__ import annotations

from django.core.management.base import CommandError

from appspaces.cli import JsonCommand
from appspaces.models import Appspace
from backups.models import Backup
from backups.services import BackupError, backup_create


class Command(JsonCommand):
    help = "Back up an appspace's data now (prints the archive's path)."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument(
            "--kind", choices=[Backup.Kind.MANUAL, Backup.Kind.SCHEDULED],
            default=Backup.Kind.MANUAL,
        )  # fmt: skip

    def handle(self, *args, subdomain: str, kind: str, **options):
        appspace = Appspace.objects.filter(subdomain=subdomain.lower()).first()
        if appspace is None:
            raise CommandError(f"No appspace {subdomain!r}.")
        self.progress(f"Backing up {appspace.subdomain}...")
        try:
            backup = backup_create(appspace=appspace, kind=kind)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        if not self.as_json:
            for warning in backup.warnings:
                self.stderr.write(f"warning: {warning}")
        self.done(
            {
                "appspace": appspace.subdomain,
                "backup_id": str(backup.public_id),
                "path": str(backup.path),
                "files": backup.file_count,
                "data_bytes": backup.data_bytes,
                "archive_bytes": backup.size_bytes,
                "downtime_ms": backup.downtime_ms,
                "verified": bool(backup.verified_at),
                "warnings": backup.warnings,
            },
            f"{backup.path}\n{backup.file_count} files, {backup.data_bytes} bytes of data, "
            f"archive {backup.size_bytes} bytes, appspace paused {backup.downtime_ms} ms, "
            f"verified: {'yes' if backup.verified_at else 'no'}",
        )
