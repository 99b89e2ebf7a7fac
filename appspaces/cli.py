"""What every management command the README lists shares: `--json` (one JSON object on
stdout, `{"ok": true, ...}`; an error is `{"ok": false, "error": "..."}` with a non-zero exit
status), confirmation that never needs a terminal it does not have, and progress lines on
stderr only when a person is watching (a terminal). Django's command base, so not packages/."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class JsonCommand(BaseCommand):
    """A command with `--json`. Subclasses call `self.done(data, text)` once, and raise
    CommandError for anything that stops them."""

    as_json = False

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object"
        )
        return parser

    def execute(self, *args, **options):
        self.as_json = bool(options.get("as_json"))
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if self.as_json:
                self.stdout.write(json.dumps({"ok": False, "error": str(exc)}, ensure_ascii=False))
            raise
        except (EOFError, KeyboardInterrupt):
            message = "Interrupted; nothing was changed."
            if self.as_json:
                self.stdout.write(json.dumps({"ok": False, "error": message}))
            raise CommandError(message) from None

    def done(self, data: dict[str, Any], text: str) -> None:
        if self.as_json:
            self.stdout.write(json.dumps({"ok": True, **data}, ensure_ascii=False, default=str))
        else:
            self.stdout.write(text)

    def interactive(self) -> bool:
        """May this command ask a question? Only on a terminal, and never under --json."""
        return not self.as_json and sys.stdin is not None and sys.stdin.isatty()

    def progress(self, text: str, percent: int | None = None) -> None:
        """A progress line for a person watching (stderr is a terminal); silent otherwise."""
        if getattr(self.stderr, "isatty", lambda: False)():
            self.stderr.write(f"{percent:3d}% {text}" if percent is not None else text)
