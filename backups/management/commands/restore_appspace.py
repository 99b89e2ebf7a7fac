"""`manage.py restore_appspace SUBDOMAIN ARCHIVE [--yes] [--json]`: replace an appspace's data
with an archive. Without a terminal (a script, cron, closed stdin) it asks nothing: it needs
--yes, and says so instead of failing on the missing answer."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError
from django.template.defaultfilters import pluralize

from appspaces.cli import JsonCommand
from appspaces.models import Appspace
from backups.restore import RestoreError, backup_restore


class Command(JsonCommand):
    help = (
        "Replace an appspace's data with a backup archive (checked file by file first; the "
        "current data is kept aside until the appspace runs on the restored data)."
    )

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument("archive", type=Path)
        parser.add_argument(
            "--yes", action="store_true", help="do not ask (the current data is replaced)"
        )

    def handle(self, *args, subdomain: str, archive: Path, yes: bool, **options):
        appspace = Appspace.objects.filter(subdomain=subdomain.lower()).first()
        if appspace is None:
            raise CommandError(f"No appspace {subdomain!r}.")
        if not archive.is_file():
            raise CommandError(f"{archive} is not a file.")
        if not yes:
            if not self.interactive():
                raise CommandError(
                    "Not confirmed: there is no terminal to ask on; pass --yes to replace the "
                    f"data of {appspace.subdomain}. Nothing was changed."
                )
            answer = input(f"Replace all data of {appspace.subdomain}? Type its name: ")
            if answer.strip() != appspace.subdomain:
                raise CommandError("Not confirmed; nothing was changed.")

        def step(text: str, progress: int) -> None:
            if options["verbosity"] > 1 and not self.as_json:
                self.stdout.write(f"{progress:3d}% {text}")
            else:
                self.progress(text, progress)

        try:
            meta = backup_restore(appspace=appspace, archive_path=archive, step=step)
        except RestoreError as exc:
            raise CommandError(str(exc)) from None
        self.done(
            {
                "appspace": appspace.subdomain,
                "files": len(meta.files),
                "backup_created": meta.created,
                "app_version": meta.app_version,
                "data_schema": meta.data_schema,
            },
            f"Restored {len(meta.files)} file{pluralize(len(meta.files))} into "
            f"{appspace.subdomain} (backup of "
            f"{meta.created}, app version {meta.app_version}, schema {meta.data_schema}).",
        )
