"""`manage.py restore_instance [SNAPSHOT|PATH] [--force] [--json]`: rebuild the instance from a
snapshot (default: the latest instance snapshot in the configured repository)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from backups.instance.snapshot import InstanceError, instance_restore


class Command(BaseCommand):
    help = (
        "Rebuild this (empty) instance from a whole-instance snapshot: database, app versions "
        "and every appspace's data. Refuses a non-empty instance unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "snapshot",
            nargs="?",
            help="a snapshot folder or .tar file, or a repository snapshot id (default: latest)",
        )
        parser.add_argument("--force", action="store_true", help="replace what this instance holds")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, snapshot: str | None, force: bool, **options):
        as_json = options["json"]

        def step(text: str) -> None:
            if not as_json and options["verbosity"] > 1:
                self.stdout.write(text)

        try:
            summary = instance_restore(snapshot, force=force, step=step)
        except InstanceError as exc:
            if as_json:
                out = {"error": str(exc)}
                if exc.summary is not None:
                    out["summary"] = exc.summary
                self.stdout.write(json.dumps(out))
                raise SystemExit(1) from None
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(
            f"Instance restored: {summary['users']} user(s), {len(summary['apps'])} app "
            f"version(s), data of {len(summary['restored'])} appspace(s)."
        )
