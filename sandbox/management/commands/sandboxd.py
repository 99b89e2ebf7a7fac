"""`manage.py sandboxd`: runs the sandbox supervisor in the foreground (as root, see docs)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandError

from sandbox import daemon


class Command(BaseCommand):
    help = "Run the sandbox supervisor: the only owner of Deno processes on this host."

    def handle(self, *args, **options) -> None:
        logging.getLogger("sandbox").setLevel(logging.INFO)
        try:
            daemon.run()
        except daemon.AlreadyRunning as exc:
            raise CommandError(str(exc)) from None
