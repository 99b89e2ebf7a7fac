"""`manage.py restore_appspace SUBDOMAIN ARCHIVE`: replace an appspace's data with an archive."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from appspaces.models import Appspace
from backups.restore import RestoreError, backup_restore


class Command(BaseCommand):
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
            answer = input(f"Replace all data of {appspace.subdomain}? Type its name: ")
            if answer.strip() != appspace.subdomain:
                raise CommandError("Not confirmed; nothing was changed.")

        def step(text: str, progress: int) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"{progress:3d}% {text}")

        try:
            meta = backup_restore(appspace=appspace, archive_path=archive, step=step)
        except RestoreError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Restored {len(meta.files)} file{pluralize(len(meta.files))} into "
            f"{appspace.subdomain} (backup of "
            f"{meta.created}, app version {meta.app_version}, schema {meta.data_schema})."
        )
