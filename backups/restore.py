"""Putting data back: restoring a backup or an uploaded archive into an appspace, the automatic
restore after a failed migration, and creating an appspace's data from an archive (import).

Every restore unpacks into `appspaces/<id>/.restore-*` (beside `data/`, never mounted into a
sandbox), checks every file against the archive's checksums, hands the files to the appspace's
uid, migrates older data up in a one-shot sandbox, and only then swaps the folders in one
atomic rename (renameat2 RENAME_EXCHANGE). The replaced data is kept in `.previous-*` until
the appspace has run on the restored data, and swapped back if anything after the swap fails.

Longer than most modules on purpose: every step between an untrusted archive and live data
(and each step's undo) is reviewed as one sequence.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone

from appspaces.jobs import (
    JobFailed,
    enqueue_on_commit,
    job_claim,
    job_finish,
    job_running,
    job_step,
)
from appspaces.models import Appspace, Job
from appspaces.sandboxes import appspace_data_released, appspace_spec
from backups.format.archive import archive_name, extract_archive, read_metadata, verify_archive
from backups.format.metadata import DATA, META_NAME, ArchiveError, Metadata
from backups.models import Backup, backups_root
from backups.offsite.copies import offsite_fetch
from backups.offsite.restic import ResticError
from backups.store import MB, ensure_backups_dir, worker_name
from packages.extraction import remove_tree
from sandbox import access
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound, SandboxUnavailable
from sandbox.walls import diskimage

log = logging.getLogger(__name__)
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_OFFLINE_FROM = (Appspace.Status.ACTIVE, Appspace.Status.PAUSED, Appspace.Status.PROBLEM)

Step = Callable[[str, int], None]


class RestoreError(Exception):
    """A restore that was refused or undone; str() is a sentence for the user. The appspace's
    data is as it was before the restore began."""


def _no_step(_text: str, _progress: int) -> None:
    pass


# --- Checks -----------------------------------------------------------------------------------


def restore_check(meta: Metadata, appspace: Appspace) -> None:
    """Refuse data of another app, or data newer than the installed version understands."""
    if meta.app_name and meta.app_name != appspace.app.name:
        raise RestoreError(
            f"This backup holds data of the app “{meta.app_name}”; this appspace runs "
            f"“{appspace.app.name}”."
        )
    supported = appspace.app_version.schema
    if meta.data_schema > supported:
        raise RestoreError(
            f"This backup's data has schema {meta.data_schema} (made with version "
            f"{meta.app_version or 'unknown'}); the installed version "
            f"{appspace.app_version.version} supports schema {supported} at most. Switch the "
            "appspace to a newer version of the app first."
        )


def _size_limit(appspace: Appspace, meta: Metadata | None, trusted: bool) -> int:
    """What a restore may unpack: the appspace's disk quota; for our own backups at least what
    the backup holds (the quota may have been lowered since)."""
    limit = appspace.disk_mb * MB
    if trusted and meta is not None:
        limit = max(limit, meta.total_bytes)
    return limit


# --- Folder operations ------------------------------------------------------------------------


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (both must exist); plain renames where the kernel or file
    system lacks RENAME_EXCHANGE."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        result = renameat2(
            _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(RENAME_EXCHANGE)
        )
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(a))
    middle = a.with_name(f"{a.name}.swap-{secrets.token_hex(4)}")
    os.rename(a, middle)
    os.rename(b, a)
    os.rename(middle, b)


def hand_over(root: Path, uid: int) -> None:
    """Make unpacked files the appspace's own: owned by its uid, 0700 folders, 0600 files."""
    as_root = os.geteuid() == 0
    for folder, dirnames, filenames in os.walk(root):  # extracted by root: no links in it
        os.chmod(folder, 0o700, follow_symlinks=False)
        if as_root:
            os.chown(folder, uid, uid, follow_symlinks=False)
        for name in filenames:
            path = os.path.join(folder, name)
            os.chmod(path, 0o600, follow_symlinks=False)
            if as_root:
                os.chown(path, uid, uid, follow_symlinks=False)
        for name in dirnames:
            os.chmod(os.path.join(folder, name), 0o700, follow_symlinks=False)


def _as_platform() -> bool:
    """Not root (a worker running as DS_RUN_AS): what touches data of the appspace's uid goes
    through the supervisor's narrow operations (sandbox/data/files.py)."""
    return os.geteuid() != 0


def _exchange_data(client: SandboxClient, appspace: Appspace, folder: Path) -> None:
    """Swap `folder`/data with the appspace's live data."""
    if _as_platform():
        client.data_swap(str(appspace.public_id), folder.name)
    else:
        exchange(folder / DATA, appspace.data_path)


def _remove_part(client: SandboxClient, appspace: Appspace, folder: Path) -> None:
    """Remove a `.restore-*` or `.previous-*` folder of the appspace (data of its uid inside)."""
    if _as_platform() and folder.exists():
        client.data_remove(str(appspace.public_id), part=folder.name)
    else:
        remove_tree(folder)


def _stop(client: SandboxClient, sandbox_id: str) -> bool:
    """Stop the appspace's sandbox; False if no supervisor answers (then none runs)."""
    try:
        client.stop(sandbox_id)
        return True
    except SandboxNotFound:
        return True
    except SandboxUnavailable:
        return False


# --- Status while restoring -------------------------------------------------------------------


def _take_offline(appspace: Appspace) -> str:
    """MIGRATING while the data changes: the gateway answers 503 and starts no sandbox."""
    appspace.refresh_from_db(fields=["status"])
    previous = appspace.status
    taken = Appspace.objects.filter(pk=appspace.pk, status__in=_OFFLINE_FROM).update(
        status=Appspace.Status.MIGRATING, status_reason="Restoring a backup."
    )
    if not taken:
        raise RestoreError(
            f"The appspace is {appspace.get_status_display()}; a restore can start once that "
            "is over."
        )
    appspace.touch_config()
    return previous


def _back_online(appspace: Appspace, previous: str) -> None:
    Appspace.objects.filter(pk=appspace.pk, status=Appspace.Status.MIGRATING).update(
        status=previous, status_reason=""
    )
    appspace.touch_config()


# --- The restore ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Restore:
    appspace: Appspace
    archive: Path
    migrate: bool  # bring older data up to the installed version's schema
    start: bool  # start the appspace on the restored data (and swap back if it fails)
    trusted: bool  # one of our own backups (its size may exceed a since-lowered quota)
    # The appspace has no data yet (an import, a new host): a swap that put nothing aside
    # leaves no `.previous-*` behind. Any other swap put data aside (a failed migration's too).
    into_new: bool = False
    step: Step = _no_step
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))
    old_schema: int = 0  # the appspace's, to put back with its data

    def __post_init__(self) -> None:
        # Extraction reports every chunk: pass on only what the job row would show differently.
        report, last = self.step, [("", -1)]

        def on_change(text: str, progress: int) -> None:
            if (text, progress) != last[0]:
                last[0] = (text, progress)
                report(text, progress)

        self.step = on_change

    @property
    def stage(self) -> Path:
        return self.appspace.path / f".restore-{self.token}"

    def run(self) -> Metadata:
        appspace = self.appspace
        self.step("Reading the archive", 2)
        try:
            meta = read_metadata(self.archive)
        except ArchiveError as exc:
            raise RestoreError(str(exc)) from None
        if self.migrate:
            restore_check(meta, appspace)
        target = appspace.app_version.schema if self.migrate else meta.data_schema
        self.step("Unpacking and checking every file", 5)
        appspace.path.mkdir(parents=True, exist_ok=True)
        total = max(meta.total_bytes, 1)
        try:
            extract_archive(
                self.archive,
                self.stage,
                max_total_bytes=_size_limit(appspace, meta, self.trusted),
                progress=lambda done: self.step(
                    "Unpacking and checking every file", 5 + 60 * min(done, total) // total
                ),
            )
        except ArchiveError as exc:
            raise RestoreError(str(exc)) from None
        except OSError as exc:
            raise RestoreError(_os_message(exc)) from exc
        client = SandboxClient()
        try:
            # Traversable (not readable) by the sandbox uid, for a migration of the staged data.
            os.chmod(self.stage, 0o711)
            os.chmod(self.stage / META_NAME, 0o600)
            if _as_platform():
                client.data_hand_over(
                    str(appspace.public_id), self.stage.name, appspace.sandbox_uid
                )
            else:
                hand_over(self.stage / DATA, appspace.sandbox_uid)
            if meta.data_schema < target:
                self.step(f"Migrating the data from schema {meta.data_schema} to {target}", 70)
                self._migrate(client, meta.data_schema, target)
            self.step("Putting the data in place", 90)
            previous = self._swap(client, target)
        except BaseException:
            _remove_part(client, appspace, self.stage)
            client.close()
            raise
        try:
            if self.start:  # no step reported from here on: a cancel can no longer stop it
                self._start_or_undo(client, previous, meta)
        finally:
            client.close()
        return meta

    def _migrate(self, client: SandboxClient, schema_from: int, schema_to: int) -> None:
        spec = dataclasses.replace(
            appspace_spec(self.appspace),
            id=f"restore-{self.token}",
            data_dir=str(self.stage / DATA),
        )
        try:
            result = client.run_once(spec, "migrate", {"from": schema_from, "to": schema_to})
        except SandboxError as exc:
            raise RestoreError(f"The restored data could not be migrated: {exc}") from None
        if not result.ok:
            detail = (result.result or {}).get("error") or result.outcome
            raise RestoreError(
                f"The app could not migrate the restored data from schema {schema_from} to "
                f"{schema_to}: {detail}"
            )

    def _swap(self, client: SandboxClient, schema: int) -> Path:
        """Swap the restored data in; returns where the replaced data now is."""
        appspace = self.appspace
        sandbox_id = str(appspace.public_id)
        _stop(client, sandbox_id)
        appspace_data_released(appspace, client)  # no data image mounted on data/ now
        live = appspace.data_path
        if not live.exists():
            live.mkdir(mode=0o700)
        _exchange_data(client, appspace, self.stage)
        # With a data image (sandbox.walls.diskimage) the replaced data is in it, not in the
        # folder: it goes aside too, and the next mount makes a new image of the restored data.
        image = diskimage.image_path(live)
        if image.exists():
            os.rename(image, self.stage / diskimage.IMAGE_NAME)
        Appspace.objects.filter(pk=appspace.pk).update(data_schema=schema)
        # A sandbox started in between would still have the replaced folder mounted.
        _stop(client, sandbox_id)
        previous = appspace.path / f".previous-{timezone.now():%Y%m%dT%H%M%S}-{self.token}"
        os.rename(self.stage, previous)
        if self.into_new and not self._replaced(previous):
            _remove_part(client, appspace, previous)  # nothing was replaced
        return previous

    @staticmethod
    def _replaced(previous: Path) -> bool:
        """Whether the swap put data aside: files, or a data image. Asked only when the
        appspace had no data yet (`into_new`): its empty data/ is the platform's (or root
        reads it), while data that was replaced is its uid's, unreadable by DS_RUN_AS: a
        folder it cannot list (a forced instance restore over old data) counts as replaced."""
        if (previous / diskimage.IMAGE_NAME).exists():
            return True
        try:
            return any((previous / DATA).iterdir())
        except PermissionError:
            return True

    def _start_or_undo(self, client: SandboxClient, previous: Path, meta: Metadata) -> None:
        appspace = self.appspace
        appspace.refresh_from_db()
        try:
            client.ensure(appspace_spec(appspace))
        except SandboxUnavailable:
            return  # no supervisor now: the sweep drops `previous` once the appspace has run
        except SandboxError as exc:
            _stop(client, str(appspace.public_id))
            appspace_data_released(appspace, client)
            _exchange_data(client, appspace, previous)
            image = diskimage.image_path(appspace.data_path)
            image.unlink(missing_ok=True)  # made of the restored data by the start
            if (previous / diskimage.IMAGE_NAME).exists():
                os.rename(previous / diskimage.IMAGE_NAME, image)
            Appspace.objects.filter(pk=appspace.pk).update(data_schema=self.old_schema)
            _remove_part(client, appspace, previous)
            raise RestoreError(
                "The app would not start with the restored data, so the data it had before "
                f"was put back. ({exc})"
            ) from None
        _remove_part(client, appspace, previous)  # it runs on the restored data: old data goes


def _os_message(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "The disk is full, so the backup could not be unpacked. Nothing was changed: the "
            "appspace's data is as it was."
        )
    return f"The backup could not be unpacked: {exc.strerror or exc}."


def _run(restore: _Restore, *, manage_status: bool) -> Metadata:
    appspace = restore.appspace
    appspace.refresh_from_db()
    restore.old_schema = appspace.data_schema
    previous_status = _take_offline(appspace) if manage_status else None
    try:
        return restore.run()
    finally:
        if previous_status is not None:
            _back_online(appspace, previous_status)


def backup_restore(
    *,
    appspace: Appspace,
    backup: Backup | None = None,
    archive_path: Path | None = None,
    step: Step = _no_step,
) -> Metadata:
    """Replace an appspace's data with a READY backup of it or an uploaded archive.

    The appspace is offline (MIGRATING) meanwhile and back in its previous status after.
    Older data is migrated up; newer data, another app's data or a damaged archive is refused
    (RestoreError) and nothing changes. If the app does not start on the restored data, its
    previous data is put back."""
    if (backup is None) == (archive_path is None):
        raise ValueError("give a backup or an archive path")
    if backup is not None:
        if backup.appspace_id != appspace.pk or backup.state != Backup.State.READY:
            raise RestoreError("This backup cannot be restored here.")
        archive_path = backup.path
        if not archive_path.is_file():
            raise RestoreError("This backup's archive is missing from the disk.")
    assert archive_path is not None
    restore = _Restore(
        appspace,
        Path(archive_path),
        migrate=True,
        start=True,
        trusted=backup is not None,
        step=step,
    )
    meta = _run(restore, manage_status=True)
    if backup is not None:
        Backup.objects.filter(pk=backup.pk).update(verified_at=timezone.now(), verify_error="")
    return meta


def restore_after_failed_migration(*, appspace: Appspace, backup: Backup) -> None:
    """For the migration code: put back the data `backup_before_migration` saved, exactly as it
    was (no migration, no start, the appspace's status and version untouched: the caller sets
    them), and its data schema. Raises RestoreError if the backup cannot be restored; then the
    data is as the failed migration left it."""
    if backup.appspace_id != appspace.pk or backup.state != Backup.State.READY:
        raise RestoreError("This backup cannot be restored here.")
    restore = _Restore(appspace, backup.path, migrate=False, start=False, trusted=True)
    _run(restore, manage_status=False)


def restore_onto_new_host(*, appspace: Appspace, backup: Backup) -> None:
    """For an instance restore: give an appspace (folders made, no data yet) the data of its
    READY backup, checked file by file and migrated up to its app version; not started."""
    if backup.appspace_id != appspace.pk or backup.state != Backup.State.READY:
        raise RestoreError("This backup cannot be restored here.")
    restore = _Restore(
        appspace, backup.path, migrate=True, start=False, trusted=True, into_new=True
    )
    _run(restore, manage_status=False)


def backup_import(*, appspace: Appspace, archive_path: Path) -> Backup:
    """Give a newly created appspace (status CREATING, no data yet) the data of an archive: the
    archive is checked whole, kept as the appspace's first backup (kind "imported"), then
    restored and migrated up to the appspace's app version. The caller then makes the appspace
    active. Raises RestoreError (nothing kept) if the archive is refused."""
    try:
        meta = verify_archive(Path(archive_path))
    except ArchiveError as exc:
        raise RestoreError(str(exc)) from None
    restore_check(meta, appspace)
    if meta.total_bytes > appspace.disk_mb * MB:
        raise RestoreError(
            f"The archive holds {meta.total_bytes // MB} MB of data; this appspace may use "
            f"{appspace.disk_mb} MB."
        )
    ensure_backups_dir(appspace)
    now = timezone.now()
    backup = Backup(
        appspace=appspace,
        kind=Backup.Kind.IMPORTED,
        state=Backup.State.PENDING,
        created=now,
        app_version_label=meta.app_version,
        data_schema=meta.data_schema,
        worker=worker_name(),
        heartbeat=now,
    )
    backup.file_name = archive_name(now, backup.kind, backup.public_id)
    backup.save()
    tmp = backup.path.with_name(f".tmp-{backup.file_name}")
    try:
        shutil.copyfile(archive_path, tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, backup.path)
        restore = _Restore(
            appspace, backup.path, migrate=True, start=False, trusted=False, into_new=True
        )
        _run(restore, manage_status=False)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        backup.path.unlink(missing_ok=True)
        backup.delete()
        if isinstance(exc, OSError):
            raise RestoreError(_os_message(exc)) from exc
        raise
    Backup.objects.filter(pk=backup.pk).update(
        state=Backup.State.READY,
        size_bytes=backup.path.stat().st_size,
        data_bytes=meta.total_bytes,
        file_count=len(meta.files),
        verified_at=timezone.now(),
        finished=timezone.now(),
        heartbeat=None,
    )
    backup.refresh_from_db()
    return backup


# --- Jobs -------------------------------------------------------------------------------------


def uploads_dir() -> Path:
    path = backups_root() / ".uploads"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    for folder in (path.parent, path):  # the web servers (DS_RUN_AS) write uploads here
        access.give_to_platform(folder)
    return path


def restore_job_create(
    *,
    appspace: Appspace,
    backup: Backup | None = None,
    upload: Path | None = None,
    offsite: str | None = None,
    enqueue: bool = True,
) -> Job:
    """A RESTORE job (from a backup, an uploaded archive the job then owns, or an off-site
    snapshot id: its archive is fetched into a staging file and restored as an upload is)."""
    params: dict = {"next_url": reverse("backup_list", args=[appspace.public_id])}
    if offsite is not None:
        params["offsite"] = offsite
    if backup is not None:
        params["backup"] = str(backup.public_id)
    if upload is not None:
        params["upload"] = str(upload)
    job = Job.objects.create(
        kind=Job.Kind.RESTORE,
        owner=appspace.owner,
        app=appspace.app,
        app_version=appspace.app_version,
        appspace=appspace,
        step="Waiting for a worker",
        params=params,
    )
    if enqueue:
        enqueue_on_commit("backups.tasks.restore_run", job.pk)
    return job


def restore_job_run(*, job_id: int) -> str:
    job = job_claim(job_id)
    if job is None:
        return "not claimed"
    upload = Path(job.params["upload"]) if job.params.get("upload") else None
    if job.params.get("offsite"):
        upload = uploads_dir() / f"offsite-{job.public_id}.tar.zst"
    try:
        if job.appspace is None:
            job_finish(job, Job.State.FAILED, "The appspace no longer exists.")
            return Job.State.FAILED
        with job_running(job):
            backup = None
            if job.params.get("offsite"):
                _offsite_fetch(job, upload)
            if job.params.get("backup"):
                backup = Backup.objects.filter(
                    public_id=job.params["backup"], appspace=job.appspace
                ).first()
                if backup is None:
                    raise JobFailed("This backup no longer exists.")
            try:
                meta = backup_restore(
                    appspace=job.appspace,
                    backup=backup,
                    archive_path=None if backup else upload,
                    step=lambda text, progress: job_step(job, text, progress),
                )
            except RestoreError as exc:
                raise JobFailed(str(exc)) from None
            job_finish(
                job,
                Job.State.SUCCEEDED,
                f"Restored {len(meta.files)} file{pluralize(len(meta.files))} (data from "
                f"{meta.created[:16].replace('T', ' ')} UTC, app version "
                f"{meta.app_version or 'unknown'}).",
            )
    finally:
        if upload is not None:
            upload.unlink(missing_ok=True)
    job.refresh_from_db(fields=["state"])
    return job.state


def _offsite_fetch(job: Job, dest: Path) -> None:
    """Fetch an off-site snapshot's archive into `dest`; the restore then verifies it like an
    uploaded archive (untrusted: checked against this appspace, its size and its hashes)."""

    job_step(job, "Fetching the archive from the off-site repository", 5)
    try:
        offsite_fetch(appspace=job.appspace, snapshot_id=job.params["offsite"], dest=dest)
    except ResticError as exc:
        raise JobFailed(f"The off-site snapshot could not be fetched: {exc.message}") from None
