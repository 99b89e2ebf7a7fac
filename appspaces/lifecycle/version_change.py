"""Moving an appspace to another installed version of its app (upgrade or downgrade).

A Job: the appspace goes offline (MIGRATING: the gateway answers 503), its sandbox stops, a
verified backup is made when the data schema changes, the app's migrations run in a one-shot
sandbox (an upgrade runs the target version's `up`s, so the target's code; a downgrade runs the
current version's `down`s, so the current, higher version's code), then the appspace switches
to the version and comes back. If the migration fails, or the new version does not start, the
backup is restored (the data exactly as it was) and the appspace goes back to its old version;
the owner reads why on the job's page.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from appspaces.installs.versions import parse_version, versions_newest_first
from appspaces.jobs import (
    DONE,
    NOT_CLAIMED,
    JobCancelled,
    JobFailed,
    enqueue_on_commit,
    job_claim,
    job_finish,
    job_requeue,
    job_running,
    job_step,
)
from appspaces.lifecycle.control import appspace_status_set, busy_jobs
from appspaces.models import Appspace, AppVersion, Job
from appspaces.sandboxes import appspace_spec, publish_users
from backups.restore import RestoreError, restore_after_failed_migration
from backups.services import BackupError, backup_before_migration
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound, SandboxUnavailable

log = logging.getLogger(__name__)

_FROM = (Appspace.Status.ACTIVE, Appspace.Status.PAUSED)


class VersionChangeError(Exception):
    """A change that cannot start; str() says why, for the owner."""


@dataclass(frozen=True)
class VersionChangePlan:
    appspace: Appspace
    current: AppVersion
    target: AppVersion

    @property
    def upgrade(self) -> bool:
        return parse_version(self.target.version) > parse_version(self.current.version)

    @property
    def schema_from(self) -> int:
        return self.appspace.data_schema

    @property
    def schema_to(self) -> int:
        return self.target.schema

    @property
    def changes_schema(self) -> bool:
        return self.schema_from != self.schema_to

    @property
    def code_version(self) -> AppVersion:
        """Whose migrations run: `up`s are the target's, `down`s the current version's."""
        return self.target if self.schema_to > self.schema_from else self.current


def upgrade_available(appspace: Appspace, versions=None) -> AppVersion | None:
    """The newest installed version of the appspace's app, if newer than the one it runs."""
    versions = versions_newest_first(
        versions if versions is not None else appspace.app.versions.all()
    )
    if versions and parse_version(versions[0].version) > parse_version(
        appspace.app_version.version
    ):
        return versions[0]
    return None


def version_change_plan(*, appspace: Appspace, target: AppVersion) -> VersionChangePlan:
    if target.app_id != appspace.app_id:
        raise VersionChangeError("That version belongs to another app.")
    if target.pk == appspace.app_version_id:
        raise VersionChangeError(f"The appspace already runs version {target.version}.")
    if appspace.status not in _FROM:
        raise VersionChangeError(
            f"The appspace is {appspace.get_status_display()}; its version can change when it "
            "is active or paused."
        )
    if busy_jobs(appspace).exists():
        raise VersionChangeError("Other work on this appspace is under way; try again after.")
    return VersionChangePlan(appspace, appspace.app_version, target)


def version_change_job_create(
    *, appspace: Appspace, target: AppVersion, enqueue: bool = True
) -> Job:
    plan = version_change_plan(appspace=appspace, target=target)
    with transaction.atomic():
        job = Job.objects.create(
            kind=Job.Kind.MIGRATE,
            owner=appspace.owner,
            app=appspace.app,
            app_version=target,
            appspace=appspace,
            step="Waiting for a worker",
            params={
                "from_version": plan.current.version,
                "to_version": target.version,
                "next_url": reverse("appspace_detail", args=[appspace.public_id]),
            },
        )
        if enqueue:
            enqueue_on_commit("appspaces.tasks.appspace_version_change_task", job.pk)
    return job


class _Change:
    def __init__(self, job: Job, appspace: Appspace, target: AppVersion):
        self.job = job
        self.appspace = appspace
        self.current = appspace.app_version
        self.target = target
        self.previous_status = appspace.status
        self.backup = None
        self.client = SandboxClient(timeout=60)

    def take_offline(self) -> None:
        with transaction.atomic():
            locked = Appspace.objects.select_for_update().get(pk=self.appspace.pk)
            if locked.status not in _FROM or locked.app_version_id != self.current.pk:
                raise JobFailed(
                    f"The appspace is {locked.get_status_display()} on version "
                    f"{locked.app_version.version}; nothing was changed."
                )
            self.previous_status = locked.status
            locked.status = Appspace.Status.MIGRATING
            locked.status_reason = f"Changing to version {self.target.version}."
            locked.save(update_fields=["status", "status_reason"])
            locked.touch_config()
        self.appspace.refresh_from_db()
        self.job.params = {**self.job.params, "previous_status": self.previous_status}
        self.job.save(update_fields=["params"])

    def stop(self) -> None:
        with contextlib.suppress(SandboxNotFound):
            self.client.stop(str(self.appspace.public_id))

    def run(self) -> None:
        appspace, job, target = self.appspace, self.job, self.target
        plan = VersionChangePlan(appspace, self.current, target)
        job_step(job, "Stopping the appspace", 5)
        self.stop()
        if plan.changes_schema:
            job_step(job, "Backing up the data", 10)

            try:
                self.backup = backup_before_migration(appspace=appspace)
            except BackupError as exc:
                raise JobFailed(f"No backup could be made, so nothing was changed: {exc}") from None
            job_step(
                job, f"Migrating the data from schema {plan.schema_from} to {plan.schema_to}", 50
            )
            self.migrate(plan)
        job_step(job, f"Switching to version {target.version}", 85)
        Appspace.objects.filter(pk=appspace.pk).update(
            app_version=target, data_schema=plan.schema_to
        )
        appspace.refresh_from_db()
        publish_users(appspace)
        if self.previous_status == Appspace.Status.ACTIVE:
            job_step(job, f"Starting version {target.version}", 92)
            try:
                self.client.ensure(appspace_spec(appspace))
            except SandboxError as exc:
                raise _Failed(f"Version {target.version} did not start: {exc.message}") from None
        with transaction.atomic():
            if Job.objects.select_for_update().get(pk=job.pk).state != Job.State.RUNNING:
                raise JobCancelled()
            locked = Appspace.objects.select_for_update().get(pk=appspace.pk)
            locked.status, locked.status_reason = self.previous_status, ""
            locked.save(update_fields=["status", "status_reason"])
            locked.touch_config()
            job_finish(
                job, Job.State.SUCCEEDED, f"{appspace.subdomain} runs version {target.version}."
            )

    def migrate(self, plan: VersionChangePlan) -> None:
        spec = appspace_spec(self.appspace, version=plan.code_version)
        try:
            result = self.client.run_once(
                spec,
                "migrate",
                {"from": plan.schema_from, "to": plan.schema_to},
                timeout=settings.DS_APPSPACE_MIGRATE_TIMEOUT,
            )
        except SandboxError as exc:
            raise _Failed(f"The migration could not run: {exc.message}") from None
        if not result.ok:
            detail = (result.result or {}).get("error") or result.outcome
            if result.timed_out:
                detail = "it took too long"
            raise _Failed(f"The app's migration failed: {detail}")

    def roll_back(self) -> str:
        """Put the data and the version back as they were; -> a sentence on how that went."""
        appspace = self.appspace
        with contextlib.suppress(SandboxError):
            self.stop()
        note = ""
        if self.backup is not None:
            try:
                restore_after_failed_migration(appspace=appspace, backup=self.backup)
            except (RestoreError, OSError, SandboxError) as exc:
                log.exception("restoring %s after a failed migration failed", appspace)
                Appspace.objects.filter(pk=appspace.pk).update(app_version=self.current)
                appspace.refresh_from_db()
                appspace_status_set(
                    appspace,
                    Appspace.Status.PROBLEM,
                    "A change of version failed and its data could not be put back "
                    f"automatically ({exc}). Restore the backup made before it on the Backups "
                    "page.",
                )
                return (
                    " The data could not be put back automatically: restore the backup made "
                    "before the change from the Backups page."
                )
            note = " Its data was put back exactly as it was."
        appspace.refresh_from_db()
        with transaction.atomic():
            locked = Appspace.objects.select_for_update().get(pk=appspace.pk)
            locked.app_version = self.current
            if self.backup is None:
                locked.data_schema = appspace.data_schema
            locked.status, locked.status_reason = self.previous_status, ""
            locked.save(update_fields=["app_version", "data_schema", "status", "status_reason"])
            locked.touch_config()
        appspace.refresh_from_db()
        publish_users(appspace)
        return f" The appspace is back on version {self.current.version}.{note}"


class _Failed(Exception):
    """The migration or the new version failed: roll back, then fail the job with this."""


def version_change_run(*, job_id: int, requeue_if_sandbox_down: bool = False) -> str:
    job = job_claim(job_id)
    if job is None:
        return NOT_CLAIMED
    appspace = (
        Appspace.objects.select_related("app", "app_version__app", "owner")
        .filter(pk=job.appspace_id)
        .first()
    )
    target = job.app_version
    if appspace is None or target is None:
        job_finish(job, Job.State.FAILED, "The appspace or the version is gone.")
        return DONE
    change = _Change(job, appspace, target)
    try:
        with job_running(job):
            change.take_offline()
            try:
                change.run()
            except SandboxUnavailable as exc:
                if change.backup is None and requeue_if_sandbox_down:
                    change.roll_back()
                    return job_requeue(job)
                outcome = change.roll_back()
                raise JobFailed(
                    f"The sandbox supervisor is not reachable ({exc}).{outcome}"
                ) from None
            except _Failed as exc:
                raise JobFailed(f"{exc}{change.roll_back()}") from None
            except JobFailed as exc:
                raise JobFailed(f"{exc}{change.roll_back()}") from None
            except BaseException:
                change.roll_back()
                raise
    finally:
        change.client.close()
    return DONE
