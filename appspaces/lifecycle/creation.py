"""Creating an appspace: the appspace row (status CREATING) holds its subdomain from the start,
so two owners cannot race for one name; the Job then makes the folders, publishes the users,
runs the app's migrations from schema 0 (or imports a backup archive) in a one-shot sandbox,
starts it once, and only then makes it ACTIVE. Any failure (or a cancel) removes the folders
and the row: nothing half-created stays, and the name is free again.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse

from appspaces.allowances import AllowanceError, check_appspace, owner_lock
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
from appspaces.lifecycle.control import (
    AppspaceError,
    appspace_status_set,
    limit_check,
    remove_appspace_files,
    sandbox_stop,
)
from appspaces.lifecycle.subdomains import SubdomainError, subdomain_check_available
from appspaces.models import AllowlistEntry, Appspace, AppVersion, Job
from appspaces.sandboxes import appspace_spec, parse_server_entry, publish_users
from backups.models import Backup
from backups.restore import RestoreError, backup_import
from packages.allowlist import parse_browser_origin
from sandbox import access, layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxUnavailable


def appspace_create(
    *,
    owner,
    app_version: AppVersion,
    subdomain: str,
    server_allowlist: list[str] | tuple[str, ...] = (),
    browser_allowlist: list[str] | tuple[str, ...] = (),
    memory_mb: int | None = None,
    cpu_percent: int | None = None,
    disk_mb: int | None = None,
    import_archive: Path | None = None,
    import_backup=None,
    enqueue: bool = True,
) -> Job:
    """Reserve the subdomain (an appspace row in CREATING) and queue the creation job.

    Raises SubdomainError, AllowlistError (naming the entry) or AppspaceError (limits, or the
    owner's allowance: checked under a lock of the owner's row). The
    job owns `import_archive` (an uploaded file: removed when the job ends); `import_backup` is
    a kept Backup of the owner's, imported from a copy."""
    if app_version.app.owner_id != owner.pk:
        raise ValueError("the app belongs to someone else")
    name = subdomain_check_available(subdomain, owner=owner)
    server = _canonical(server_allowlist, parse_server_entry)
    browser = _canonical(browser_allowlist, parse_browser_origin)
    limits = {
        "memory_mb": limit_check("memory_mb", memory_mb),
        "cpu_percent": limit_check("cpu_percent", cpu_percent),
        "disk_mb": limit_check("disk_mb", disk_mb),
    }
    params: dict = {"subdomain": name, "domain": f"{name}.{settings.DS_DOMAIN}"}
    if import_archive is not None:
        params["import_archive"] = str(import_archive)
    if import_backup is not None:
        params["import_backup"] = str(import_backup.public_id)
    try:
        with transaction.atomic():
            owner_lock(owner)  # concurrent creations of one person are counted in turn
            try:
                check_appspace(owner, disk_mb=limits["disk_mb"], memory_mb=limits["memory_mb"])
            except AllowanceError as exc:
                raise AppspaceError(str(exc)) from None
            appspace = Appspace.objects.create(
                owner=owner,
                app=app_version.app,
                app_version=app_version,
                subdomain=name,
                status=Appspace.Status.CREATING,
                **limits,
            )
            AllowlistEntry.objects.bulk_create(
                [AllowlistEntry(appspace=appspace, kind="server", value=v) for v in server]
                + [AllowlistEntry(appspace=appspace, kind="browser", value=v) for v in browser]
            )
            params["next_url"] = reverse("appspace_detail", args=[appspace.public_id])
            job = Job.objects.create(
                kind=Job.Kind.CREATE,
                owner=owner,
                app=app_version.app,
                app_version=app_version,
                appspace=appspace,
                params=params,
                step="Waiting for a worker",
            )
            if enqueue:
                enqueue_on_commit("appspaces.tasks.appspace_create_task", job.pk)
    except IntegrityError:
        raise SubdomainError(
            f"{name}.{settings.DS_DOMAIN} is taken; choose another name."
        ) from None
    return job


def _canonical(values, parse) -> list[str]:
    out: list[str] = []
    for value in values:
        text = str(parse(value))  # AllowlistError names the entry
        if text not in out:
            out.append(text)
    return out


class _Creation:
    def __init__(self, job: Job, appspace: Appspace):
        self.job = job
        self.appspace = appspace
        self.client = SandboxClient(timeout=30)

    def close(self) -> None:
        self.client.close()
        archive = self.job.params.get("import_archive")
        if archive:
            Path(archive).unlink(missing_ok=True)

    def run(self) -> None:
        appspace, job = self.appspace, self.job
        version = appspace.app_version
        job_step(job, "Preparing the appspace's folders", 5)
        prepare_folders(appspace)
        publish_users(appspace)
        archive = self._import_source()
        if archive is not None:
            job_step(job, "Importing the data from the backup", 15)
            self._import(archive)
        elif version.schema > 0:
            job_step(job, f"Setting up the app's data (schema 0 → {version.schema})", 30)
            self._migrate(version.schema)
        job_step(job, "Starting the appspace", 80)
        try:
            self.client.ensure(appspace_spec(appspace))
        except SandboxUnavailable:
            raise
        except SandboxError as exc:
            tail = (exc.details.get("stderr_tail") or "").strip()[-600:]
            raise JobFailed(
                f"The app did not start: {exc.message}" + (f"\n{tail}" if tail else "")
            ) from None
        with transaction.atomic():
            current = Job.objects.select_for_update().get(pk=job.pk)
            if current.state != Job.State.RUNNING:
                raise JobCancelled()
            appspace_status_set(appspace, Appspace.Status.ACTIVE)
            job_finish(job, Job.State.SUCCEEDED, f"{appspace.domain} is ready.")

    def _import_source(self) -> Path | None:
        params = self.job.params
        if params.get("import_archive"):
            return Path(params["import_archive"])
        if params.get("import_backup"):
            backup = Backup.objects.filter(
                public_id=params["import_backup"],
                kept_owner=self.job.owner,
                appspace__isnull=True,
                state=Backup.State.READY,
            ).first()
            if backup is None or not backup.path.is_file():
                raise JobFailed("The backup to import is no longer there.")
            return backup.path
        return None

    def _import(self, archive: Path) -> None:
        try:
            backup_import(appspace=self.appspace, archive_path=archive)
        except RestoreError as exc:
            raise JobFailed(f"The backup could not be imported: {exc}") from None
        self.appspace.refresh_from_db(fields=["data_schema"])

    def _migrate(self, schema: int) -> None:
        result = self.client.run_once(
            appspace_spec(self.appspace),
            "migrate",
            {"from": 0, "to": schema},
            timeout=settings.DS_APPSPACE_MIGRATE_TIMEOUT,
        )
        if not result.ok:
            detail = (result.result or {}).get("error") or result.outcome
            if result.timed_out:
                detail = "it took too long"
            raise JobFailed(f"The app's migrations failed: {detail}")
        self.appspace.data_schema = schema
        self.appspace.save(update_fields=["data_schema"])

    def undo_folders(self) -> None:
        sandbox_stop(self.appspace, self.client)
        remove_appspace_files(self.appspace, backups=True)

    def undo(self) -> None:
        """Nothing of a failed creation stays: no folders, no row; the name is free again."""
        self.undo_folders()
        appspace_row_remove(self.appspace)


def creation_undo(job: Job, appspace: Appspace) -> None:
    """Undo a creation whose worker is gone (the sweep)."""
    creation = _Creation(job, appspace)
    try:
        creation.undo()
    finally:
        creation.close()


def appspace_row_remove(appspace: Appspace) -> None:
    with transaction.atomic():
        # The job stays (its page says what went wrong); the appspace goes.
        Job.objects.filter(appspace=appspace).update(appspace=None)
        Backup.objects.filter(appspace=appspace).delete()
        Appspace.objects.filter(pk=appspace.pk).delete()


def prepare_folders(appspace: Appspace) -> None:
    """appspaces/<id>/ (the platform's, traversable), data/ (the appspace's uid, 0700), meta/
    (the platform's: DS_RUN_AS or root, group uid, 0750; the supervisor sets the same at each
    start)."""
    root = layout.appspaces_dir()
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    appspace.path.mkdir(mode=0o711, exist_ok=True)
    os.chmod(appspace.path, 0o711)
    for folder in (root, appspace.path):  # the platform's: restores stage their data here
        access.give_to_platform(folder)
    as_root = os.geteuid() == 0
    for folder, owner, mode in (
        (appspace.data_path, (appspace.sandbox_uid, appspace.sandbox_uid), 0o700),
        (appspace.meta_path, (access.platform_uid(), appspace.sandbox_uid), 0o750),
    ):
        folder.mkdir(mode=mode, exist_ok=True)
        if as_root:
            os.chown(folder, *owner)
        os.chmod(folder, mode)


def appspace_create_run(*, job_id: int, requeue_if_sandbox_down: bool = False) -> str:
    """Claim a creation job and run it. -> DONE, NOT_CLAIMED, or REQUEUED (no supervisor yet:
    the folders were removed, the row kept, the job queued again for a retry)."""
    job = job_claim(job_id)
    if job is None:
        return NOT_CLAIMED
    appspace = (
        Appspace.objects.select_related("app_version__app", "owner")
        .filter(pk=job.appspace_id, status=Appspace.Status.CREATING)
        .first()
    )
    if appspace is None:
        job_finish(job, Job.State.FAILED, "The appspace being created is gone.")
        return DONE
    creation = _Creation(job, appspace)
    try:
        with job_running(job, cleanup=creation.undo):
            try:
                creation.run()
            except SandboxUnavailable as exc:
                if not requeue_if_sandbox_down:
                    raise JobFailed(
                        "The sandbox supervisor is not running, so the appspace cannot be set "
                        "up: start `python manage.py sandboxd` (or `python manage.py serve`). "
                        f"({exc})"
                    ) from None
                creation.undo_folders()
                return job_requeue(job)
    finally:
        creation.close()
    return DONE
