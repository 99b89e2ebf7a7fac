"""`manage.py backup_appspace SUBDOMAIN`: back up one appspace now, in this process."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from appspaces.models import Appspace
from backups.models import Backup
from backups.services import BackupError, backup_create


class Command(BaseCommand):
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
        try:
            backup = backup_create(appspace=appspace, kind=kind)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{backup.path}\n{backup.file_count} files, {backup.data_bytes} bytes of data, "
            f"archive {backup.size_bytes} bytes, appspace paused {backup.downtime_ms} ms, "
            f"verified: {'yes' if backup.verified_at else 'no'}"
        )
        for warning in backup.warnings:
            self.stderr.write(f"warning: {warning}")
