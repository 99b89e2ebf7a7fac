"""`manage.py backup_instance [--to PATH] [--with-secrets] [--json]`: a whole-instance snapshot,
into the configured repository (DS_BACKUP_REPOSITORY) or a new folder / .tar file."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups.instance.snapshot import InstanceError, instance_backup


class Command(BaseCommand):
    help = (
        "Back up the whole instance (database, installed app versions, the latest verified "
        "backup of every appspace, settings) into a new folder or .tar file."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--to", type=Path, help="a new folder or .tar file (default: the repository)"
        )
        parser.add_argument(
            "--with-secrets", action="store_true", help="include SECRET_KEY and *_PASSWORD etc."
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, to: Path | None, with_secrets: bool, **options):
        as_json = options["json"]

        def step(text: str) -> None:
            if not as_json and options["verbosity"] > 1:
                self.stdout.write(text)

        try:
            manifest = instance_backup(to, with_secrets=with_secrets, step=step)
        except InstanceError as exc:
            if as_json:
                self.stdout.write(json.dumps({"error": str(exc)}))
                raise SystemExit(1) from None
            raise CommandError(str(exc)) from None
        result = {
            "path": manifest.get("repository") or str(to),
            "appspaces": len(manifest["appspaces"]),
            "apps": len(manifest["apps"]),
            "users": manifest["users"],
            "bytes": sum(f["size"] for f in manifest["files"].values()),
            "warnings": manifest["warnings"],
        }
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"Instance backed up to {result['path']}: {result['users']} user(s), "
            f"{result['apps']} app version(s), {result['appspaces']} appspace(s), "
            f"{result['bytes']} bytes."
        )
        for warning in manifest["warnings"]:
            self.stdout.write(f"warning: {warning}")
