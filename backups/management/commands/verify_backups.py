"""`manage.py verify_backups`: read every archive back and check every file's checksum."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from backups.models import Backup
from backups.verification import backup_verify


class Command(BaseCommand):
    help = "Verify every backup archive (exit status 1 if any is missing or damaged)."

    def add_arguments(self, parser):
        parser.add_argument("--appspace", help="only this appspace's backups (its subdomain)")

    def handle(self, *args, appspace: str | None = None, **options):
        backups = Backup.objects.filter(state=Backup.State.READY).select_related("appspace")
        if appspace:
            backups = backups.filter(appspace__subdomain=appspace.lower())
        bad = 0
        total = 0
        for backup in backups.order_by("appspace__subdomain", "created"):
            total += 1
            error = backup_verify(backup=backup)
            label = f"{backup.appspace.subdomain} {backup.file_name}"
            if error:
                bad += 1
                self.stdout.write(f"BAD  {label}: {error}")
            else:
                self.stdout.write(f"ok   {label} ({backup.file_count} files)")
        self.stdout.write(f"{total} backup(s) checked, {bad} bad.")
        if bad:
            raise CommandError(f"{bad} backup(s) failed verification.", returncode=1)
