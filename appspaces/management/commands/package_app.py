"""`manage.py package_app DIR -o FILE [--json]`: validate an app's folder and build its package."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from appspaces.cli import JsonCommand
from packages.build import build_package
from packages.extraction import ExtractionLimits, PackageError


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


class Command(JsonCommand):
    help = (
        "Validate an app folder (dropapp.json, entrypoint, files) and build a deterministic "
        ".tar.gz package from it. Exits non-zero with the reasons if the app is not valid."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("dir", help="the app's folder, with dropapp.json at its root")
        parser.add_argument("-o", "--output", required=True, help="the .tar.gz file to write")

    def handle(self, *args, **options) -> None:
        source, output = Path(options["dir"]), Path(options["output"])
        try:
            result = build_package(source, output, limits=ExtractionLimits.for_app_packages())
        except PackageError as exc:
            raise CommandError(str(exc)) from None
        if not self.as_json:
            for warning in result.manifest.warnings:
                self.stderr.write(f"warning: {warning}")
            for skipped in result.skipped:
                self.stderr.write(f"skipped: {skipped}")
        if not result.ok:
            reasons = [str(e) for e in result.manifest.errors] + result.errors
            raise CommandError(
                "The app cannot be packaged:\n" + "\n".join(f"  - {r}" for r in reasons)
            )
        manifest = result.manifest.manifest
        assert manifest is not None
        self.done(
            {
                "name": manifest.name or source.name,
                "version": str(manifest.version),
                "output": str(output),
                "files": result.files,
                "bytes": result.total_bytes,
                "sha256": result.sha256,
                "warnings": [str(w) for w in result.manifest.warnings],
                "skipped": [str(s) for s in result.skipped],
            },
            f"Packaged {manifest.name or source.name} {manifest.version}: {result.files} files, "
            f"{_size(result.total_bytes)} -> {output}\nsha256 {result.sha256}",
        )
