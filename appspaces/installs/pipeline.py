"""The steps of one install, run by `install_job_run` (installs/service.py) for a claimed
job: fetch, extract, manifest, place, app-init, validate, warm, commit. Each step records itself on
the job (so the panel shows it) and raises JobFailed with a sentence for the owner."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from appspaces.allowances import AllowanceError, check_app, owner_lock
from appspaces.installs import checks as install_checks
from appspaces.installs.staging import job_staging_dir
from appspaces.installs.versions import parse_version, version_sort_key
from appspaces.jobs import JobCancelled, JobFailed, job_progress, job_step
from appspaces.models import App, AppVersion, Job
from appspaces.sandboxes import install_spec
from packages.extraction import ExtractionLimits, PackageError, remove_tree, safe_extract
from packages.fetch import FetchError, fetch_listing, fetch_to_file, newest_version, parse_listing
from packages.manifest import Manifest, load_manifest
from sandbox import access
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxUnavailable

MAX_VERSION_LENGTH = 64  # AppVersion.version, and a folder name


class InstallPipeline:
    """One run of the pipeline over a claimed job; `clean_up` undoes whatever it wrote."""

    def __init__(self, job: Job):
        self.job = job
        self.params = dict(job.params)
        self.staging = job_staging_dir(job)
        self.package = self.staging / "package"
        self.placed: Path | None = None
        self.committed = False
        self.client: SandboxClient | None = None

    # --- cleanup ---

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def remove_placed(self) -> None:
        if self.placed is not None:
            remove_tree(self.placed)
            if self.params.get("new_app"):
                # The app folder is this job's own until the App row exists.
                with contextlib.suppress(OSError):
                    self.placed.parent.rmdir()
            self.placed = None

    def clean_up(self) -> None:
        self.remove_placed()
        remove_tree(self.staging)

    def save_params(self, **changes: Any) -> None:
        self.params.update(changes)
        self.job.params = self.params
        Job.objects.filter(pk=self.job.pk).update(params=self.params)

    # --- steps ---

    def run(self) -> None:
        if not self.package.exists():
            self.fetch()
        files = self.staging / "files"
        remove_tree(files)  # from an attempt that stopped for confirmation or a retry
        report_bytes = self.extract(files)
        manifest = self.read_manifest(files)
        if manifest is None:
            remove_tree(files)
            return  # waiting for the owner's confirmation
        app = self.target_app()
        version = str(manifest.version)
        install_checks.check_new_version(app, manifest.version)
        self.place(files, version)
        init = self.app_init(manifest, version)
        job_step(self.job, "Checking routes and migrations", 70)
        assert self.placed is not None
        checked = install_checks.check_app_init(
            init, manifest=manifest, files_dir=self.placed / "files"
        )
        install_checks.check_schema_order(app, manifest.version, checked.schema)
        self.warm(manifest, version)
        job_step(self.job, "Saving", 96)
        self.commit(manifest, checked, report_bytes)

    def fetch(self) -> None:
        url = self.params.get("url")
        if not url:
            raise JobFailed("The uploaded package is missing; upload it again.")
        job_step(self.job, "Downloading", 2)
        fetched = self._download(url, 2, 20)
        with open(fetched, "rb") as f:
            magic = f.read(4)
        if magic[:2] == b"\x1f\x8b" or magic in (b"PK\x03\x04", b"PK\x05\x06"):
            os.replace(fetched, self.package)
            return
        try:
            listing = self._listing(fetched, url)
        finally:
            fetched.unlink(missing_ok=True)
        newest = newest_version(listing) or newest_version(listing, include_prereleases=True)
        if newest is None:
            raise JobFailed("The app listing has no versions.")
        self._adopt_listed_app(url)
        self.save_params(listing_url=url, listing_version=str(newest.version))
        job_step(self.job, f"Downloading version {newest.version}", 6)
        os.replace(self._download(newest.package_url, 6, 25), self.package)

    def _download(self, url: str, start: int, end: int) -> Path:
        def progress(received: int, total: int | None) -> None:
            if total:
                job_progress(self.job, start + (end - start) * received // total)

        try:
            return fetch_to_file(url, dest_dir=self.staging, progress=progress).path
        except FetchError as exc:
            raise JobFailed(f"Downloading {url[:200]} failed: {exc}") from None

    def _listing(self, fetched: Path, url: str):
        if fetched.stat().st_size > settings.DS_FETCH_MAX_LISTING_KB * 1024:
            raise JobFailed("The URL is neither an app package (.tar.gz or .zip) nor a listing.")
        body = fetched.read_bytes()
        try:
            json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise JobFailed(
                "The URL is neither an app package (.tar.gz or .zip) nor an app listing."
            ) from None
        try:
            listing = parse_listing(body, url)
            if listing.new_url:
                listing = fetch_listing(listing.new_url)
        except FetchError as exc:
            raise JobFailed(str(exc)) from None
        if listing.new_url:
            raise JobFailed("The app listing moved more than once; use its new address.")
        return listing

    def _adopt_listed_app(self, url: str) -> None:
        """A listing this user installed before: the install becomes a version of that app."""
        if not self.params.get("new_app"):
            return
        existing = App.objects.filter(owner=self.job.owner, listing_url=url).first()
        if existing is not None:
            self.job.app = existing
            Job.objects.filter(pk=self.job.pk).update(app=existing)
            self.save_params(app_id=str(existing.public_id), new_app=False)

    def extract(self, files: Path) -> int:
        job_step(self.job, "Unpacking", 26)
        scale = max(self.package.stat().st_size * 4, 1)

        def progress(entries: int, written: int) -> None:
            job_progress(self.job, 26 + min(13, 13 * written // scale))

        try:
            report = safe_extract(
                self.package, files, limits=ExtractionLimits.for_app_packages(), progress=progress
            )
        except PackageError as exc:
            raise JobFailed(str(exc)) from None
        return report.total_bytes

    def read_manifest(self, files: Path) -> Manifest | None:
        job_step(self.job, "Reading the manifest", 40)
        result = load_manifest(files)
        if result.errors:
            problems = "; ".join(str(e) for e in result.errors[:20])
            raise JobFailed(f"The manifest (dropapp.json) has errors: {problems}")
        manifest = result.manifest
        assert manifest is not None
        version = str(manifest.version)
        if len(version) > MAX_VERSION_LENGTH:
            raise JobFailed(f"version: longer than {MAX_VERSION_LENGTH} characters")
        listed = self.params.get("listing_version")
        if listed and parse_version(listed) != manifest.version:
            raise JobFailed(
                f"version: the listing offers {listed}, but the package's manifest says {version}"
            )
        warnings = [str(w) for w in result.warnings]
        if warnings and not self.params.get("accept_warnings"):
            waiting = Job.objects.filter(pk=self.job.pk, state=Job.State.RUNNING).update(
                state=Job.State.NEEDS_CONFIRMATION,
                warnings=warnings,
                step="Waiting for your confirmation",
                message="The package has warnings: read them, then continue or cancel.",
                updated=timezone.now(),
            )
            if not waiting:
                raise JobCancelled()
            return None
        if warnings != self.job.warnings:
            self.job.warnings = warnings
            Job.objects.filter(pk=self.job.pk).update(warnings=warnings)
        return manifest

    def target_app(self) -> App | None:
        """The app this version joins, or None for a new app."""
        if self.params.get("new_app"):
            return None
        app = App.objects.filter(public_id=self.params["app_id"], owner=self.job.owner).first()
        if app is None:
            raise JobFailed("The app was deleted while this version was being installed.")
        return app

    def place(self, files: Path, version: str) -> None:
        """Move the unpacked files to where every sandbox of this version will see them."""
        job_step(self.job, "Placing the files", 45)
        app_dir = settings.DS_DATA_DIR / "apps" / self.params["app_id"]
        for directory in (app_dir.parent, app_dir):
            directory.mkdir(mode=0o711, exist_ok=True)
            os.chmod(directory, 0o711)  # sandbox uids traverse, never list
        target = app_dir / version
        try:
            target.mkdir(mode=0o711)
        except FileExistsError:
            raise JobFailed(
                f"Version {version} is being installed by another job (or an interrupted "
                "install left it behind, which is cleaned up within the hour); try again later."
            ) from None
        self.placed = target
        self.save_params(placed=f"{self.params['app_id']}/{version}")
        os.chmod(target, 0o711)
        # Moving a folder to another parent rewrites its "..": its owner needs write permission
        # on it (root does not), and the unpacked files are read-only.
        mode = stat.S_IMODE(os.stat(files).st_mode)
        os.chmod(files, mode | 0o200)
        os.rename(files, target / "files")
        os.chmod(target / "files", mode)
        # The platform's (DS_RUN_AS): the web servers delete apps and versions.
        for directory in (app_dir.parent, app_dir):
            access.give_to_platform(directory)
        access.give_tree_to_platform(target)

    def _client(self) -> SandboxClient:
        if self.client is None:
            self.client = SandboxClient()
        return self.client

    def _run_sandbox(self, manifest: Manifest, version: str, mode: str, timeout: float):
        spec = install_spec(
            self.job,
            app_id=self.params["app_id"],
            version=version,
            entrypoint=manifest.entrypoint,
        )
        try:
            return self._client().run_once(spec, mode, timeout=timeout)
        except SandboxUnavailable:
            raise
        except SandboxError as exc:
            raise JobFailed(f"The sandbox could not run the app: {exc}") from None

    def app_init(self, manifest: Manifest, version: str) -> dict:
        timeout = settings.DS_APP_INIT_TIMEOUT
        job_step(self.job, "Starting the app to read its routes", 50)
        result = self._run_sandbox(manifest, version, "app-init", timeout)
        return install_checks.app_init_result(result, timeout=timeout)

    def warm(self, manifest: Manifest, version: str) -> None:
        timeout = settings.DS_APP_WARM_TIMEOUT
        job_step(self.job, "Preparing the app's code cache", 75)
        result = self._run_sandbox(manifest, version, "warm", timeout)
        if not result.ok:
            reason = install_checks.run_failure(result, timeout=timeout)
            raise JobFailed(f"Preparing the app's code cache failed: {reason}")

    def commit(self, manifest: Manifest, checked, size_bytes: int) -> None:
        now = timezone.now()
        version = str(manifest.version)
        with transaction.atomic():
            if self.params.get("new_app"):
                owner_lock(self.job.owner)  # two installs racing are counted in turn
                try:
                    check_app(self.job.owner)
                except AllowanceError as exc:
                    raise JobFailed(str(exc)) from None
                app = App.objects.create(
                    public_id=self.params["app_id"],
                    owner=self.job.owner,
                    name=install_checks.app_name(manifest, self.params),
                    listing_url=self.params.get("listing_url", ""),
                    listing_latest_version=self.params.get("listing_version", ""),
                    listing_checked_at=now if self.params.get("listing_url") else None,
                )
            else:
                app = App.objects.select_for_update().filter(pk=self.job.app_id).first()
                if app is None:
                    raise JobFailed("The app was deleted while this version was being installed.")
                # Checked again under the app's lock: another job may have committed meanwhile.
                install_checks.check_new_version(app, manifest.version)
                install_checks.check_schema_order(app, manifest.version, checked.schema)
                self._update_app(app, manifest, now)
            app_version = AppVersion.objects.create(
                app=app,
                version=version,
                version_key=version_sort_key(manifest.version),
                schema=checked.schema,
                manifest=manifest.to_dict(),
                routes=checked.routes,
                migrations=checked.migrations,
                entrypoint=manifest.entrypoint,
                changelog=manifest.changelog_text,
                size_bytes=size_bytes,
            )
            params = {**self.params, "next_url": reverse("app_detail", args=[app.public_id])}
            params.pop("placed", None)
            finished = Job.objects.filter(pk=self.job.pk, state=Job.State.RUNNING).update(
                state=Job.State.SUCCEEDED,
                step="Installed",
                progress=100,
                message=f"Installed {app.name} {version}.",
                app=app,
                app_version=app_version,
                params=params,
                finished=now,
                updated=now,
            )
            if not finished:
                raise JobCancelled()  # rolls the rows back; the cleanup removes the files
        self.placed = None  # committed: the files belong to the version now
        self.committed = True
        self.job.refresh_from_db()

    def _update_app(self, app: App, manifest: Manifest, now) -> None:
        fields = []
        newest = max(
            (parse_version(v) for v in app.versions.values_list("version", flat=True)), default=None
        )
        if manifest.name and (newest is None or manifest.version > newest):
            app.name = manifest.name
            fields.append("name")
        if self.params.get("listing_url"):
            app.listing_url = self.params["listing_url"]
            latest = self.params["listing_version"]
            if not app.listing_latest_version or parse_version(latest) > parse_version(
                app.listing_latest_version
            ):
                app.listing_latest_version = latest
            app.listing_checked_at = now
            fields += ["listing_url", "listing_latest_version", "listing_checked_at"]
        if fields:
            app.save(update_fields=fields)
