"""`manage.py install_app PACKAGE_PATH_OR_URL --owner EMAIL [--json] [--accept-warnings]`.

Runs the same install pipeline as the panel, in this process (no Celery needed), and waits
for it. The sandbox supervisor must be running (`manage.py sandboxd` or `serve`): the app is
started once in the sandbox to read its routes and migrations.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from accounts.addresses import user_for_address
from appspaces.allowances import AllowanceError, check_app
from appspaces.installs.service import install_job_cancel, install_job_create, install_job_run
from appspaces.installs.staging import UploadTooLarge, upload_copy
from appspaces.management.cli import supervisor_problem
from appspaces.models import Job


class Command(BaseCommand):
    help = (
        "Install an app package (a .tar.gz/.zip file, or the URL of a package or app listing) "
        "for a user, and print the app and version installed. Needs the sandbox supervisor."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", metavar="PACKAGE_PATH_OR_URL")
        parser.add_argument("--owner", required=True, metavar="EMAIL", help="who gets the app")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object"
        )
        parser.add_argument(
            "--accept-warnings",
            action="store_true",
            help="install even if the package has warnings (they are printed)",
        )

    def handle(self, *args, source: str, owner: str, as_json: bool, accept_warnings: bool, **kw):
        self.as_json = as_json
        user = user_for_address(owner)
        if user is None:
            self.fail(f"No user has the email address {owner}.")
        is_url = urlsplit(source).scheme.lower() in ("http", "https")
        if not is_url and not Path(source).is_file():
            self.fail(f"{source} is not a file (nor an http(s) URL).")
        self.require_supervisor()
        try:
            check_app(user)  # before copying the package; checked again when it is committed
        except AllowanceError as exc:
            self.fail(str(exc))
        upload = None
        if not is_url:
            path = Path(source)
            try:
                upload = upload_copy(path)
            except UploadTooLarge as exc:
                self.fail(str(exc))
        job = install_job_create(
            owner=user,
            upload=upload,
            url=source if is_url else None,
            filename="" if is_url else Path(source).name,
            accept_warnings=accept_warnings,
            enqueue=False,
        )
        install_job_run(job_id=job.pk)
        job.refresh_from_db()
        for warning in job.warnings:
            self.stderr.write(f"warning: {warning}")
        if job.state == Job.State.NEEDS_CONFIRMATION:
            install_job_cancel(job=job)
            listed = "\n".join(f"  - {w}" for w in job.warnings)
            self.fail(
                "The package has warnings; nothing was installed. Re-run with "
                f"--accept-warnings to install it anyway:\n{listed}",
                warnings=job.warnings,
            )
        if job.state != Job.State.SUCCEEDED:
            self.fail(job.message or f"The install ended as {job.get_state_display()}.")
        app, version = job.app, job.app_version
        assert app is not None and version is not None
        if self.as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": True,
                        "app_id": str(app.public_id),
                        "version_id": str(version.public_id),
                        "name": app.name,
                        "version": version.version,
                        "schema": version.schema,
                        "job_id": str(job.public_id),
                        "warnings": job.warnings,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            self.stdout.write(
                f"Installed {app.name} {version.version} for {user.email} "
                f"(app {app.public_id}, version {version.public_id})."
            )

    def require_supervisor(self) -> None:
        if problem := supervisor_problem():
            self.fail(problem)

    def fail(self, message: str, warnings: list[str] | None = None):
        if self.as_json:
            data = {"ok": False, "error": message, "warnings": warnings or []}
            self.stdout.write(json.dumps(data, ensure_ascii=False))
        raise CommandError(message)
