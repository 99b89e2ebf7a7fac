"""`manage.py verify_backups [--appspace SUB] [--json]`: read every archive back and check every
file's checksum."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from appspaces.cli import JsonCommand
from backups.models import Backup
from backups.verification import backup_verify


class Command(JsonCommand):
    help = "Verify every backup archive (exit status 1 if any is missing or damaged)."

    def add_arguments(self, parser):
        parser.add_argument("--appspace", help="only this appspace's backups (its subdomain)")

    def handle(self, *args, appspace: str | None = None, **options):
        backups = Backup.objects.filter(state=Backup.State.READY).select_related("appspace")
        if appspace:
            backups = backups.filter(appspace__subdomain=appspace.lower())
        results = []
        backups = list(backups.order_by("appspace__subdomain", "created"))
        for n, backup in enumerate(backups, 1):
            subdomain = backup.appspace.subdomain if backup.appspace else backup.kept_label
            if self.as_json:
                self.progress(f"{n}/{len(backups)} {subdomain} {backup.file_name}")
            error = backup_verify(backup=backup)
            results.append(
                {
                    "appspace": subdomain,
                    "backup_id": str(backup.public_id),
                    "file_name": backup.file_name,
                    "ok": not error,
                    "error": error or None,
                }
            )
            if not self.as_json:
                label = f"{subdomain} {backup.file_name}"
                if error:
                    self.stdout.write(f"BAD  {label}: {error}")
                else:
                    self.stdout.write(f"ok   {label} ({backup.file_count} files)")
        bad = sum(1 for r in results if not r["ok"])
        if bad:
            if self.as_json:  # the whole report, not only the error
                data = {"ok": False, "error": f"{bad} backup(s) failed verification.",
                        "checked": len(results), "bad": bad, "backups": results}  # fmt: skip
                self.stdout.write(json.dumps(data, ensure_ascii=False))
                self.as_json = False  # written: execute() must not write a second object
            else:
                self.stdout.write(f"{len(results)} backup(s) checked, {bad} bad.")
            raise CommandError(f"{bad} backup(s) failed verification.", returncode=1)
        self.done(
            {"checked": len(results), "bad": 0, "backups": results},
            f"{len(results)} backup(s) checked, 0 bad.",
        )
