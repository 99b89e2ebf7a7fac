"""Whole-instance snapshots in the configured restic repository (DS_BACKUP_REPOSITORY): the
snapshot folder of backups/instance/snapshot.py is written to DS_DATA_DIR/.instance-backup,
sent with the tag `dropserver=instance`, then removed; a restore fetches it back (restic checks
every blob it reads, and snapshot.py every file's checksum) into the restore's scratch folder.

Retention (`retention()`, after every snapshot sent and with the off-site prune task): this
instance's snapshots (same host, same DS_DATA_DIR) beyond the newest
DS_BACKUP_INSTANCE_KEEP_LAST, the newest of each of the last DS_BACKUP_INSTANCE_KEEP_DAILY days
and of each of the last DS_BACKUP_INSTANCE_KEEP_WEEKLY weeks are forgotten and pruned; their
InstanceBackup rows are marked `forgotten`. Another instance's snapshots in the same repository
(the machine this one was rebuilt from) are left alone."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.utils import timezone

from appspaces.models import data_dir
from backups.models import InstanceBackup
from backups.offsite.restic import Repository, ResticError

TAG = "dropserver=instance"


class RepositoryUnavailable(Exception):
    """No repository is configured, or restic failed; str() is safe to show (scrubbed)."""


def repository() -> Repository:
    repo = Repository.from_settings()
    if not repo.configured():
        raise RepositoryUnavailable(
            "No backup repository is configured (DS_BACKUP_REPOSITORY and "
            "DS_BACKUP_REPOSITORY_PASSWORD_FILE); give --to PATH or a snapshot path."
        )
    return repo


def staging_folder() -> Path:
    """Always the same path: restic finds the previous snapshot as its parent."""
    return data_dir() / ".instance-backup"


def send(folder: Path) -> str:
    """Back the snapshot folder up into the repository; returns the snapshot's id."""
    repo = repository()
    try:
        repo.ensure()
        return repo.backup([folder], tags=[TAG])
    except ResticError as exc:
        raise RepositoryUnavailable(f"The repository refused the snapshot: {exc}") from None


def retention() -> list[str]:
    """Forget and prune this instance's snapshots beyond the policy (see the module's text);
    returns the ids of the instance snapshots still in the repository. Raises
    RepositoryUnavailable."""
    repo = repository()
    try:
        # host,paths: this instance's own (its host name, its DS_DATA_DIR/.instance-backup).
        repo.forget_policy(
            [TAG],
            keep_last=max(settings.DS_BACKUP_INSTANCE_KEEP_LAST, 1),
            keep_daily=settings.DS_BACKUP_INSTANCE_KEEP_DAILY,
            keep_weekly=settings.DS_BACKUP_INSTANCE_KEEP_WEEKLY,
            group_by="host,paths",
        )
        kept = [s.id for s in repo.snapshots(tags=[TAG])]
    except ResticError as exc:
        raise RepositoryUnavailable(f"Instance snapshot retention failed: {exc}") from None
    # restic 0.14 reports a new snapshot by its short id: rows may hold either form.
    gone = [
        row.pk
        for row in InstanceBackup.objects.filter(forgotten=None).exclude(snapshot="")
        if not any(full.startswith(row.snapshot) for full in kept)
    ]
    InstanceBackup.objects.filter(pk__in=gone).update(forgotten=timezone.now())
    return kept


def fetch(snapshot: str | None, scratch: Path) -> Path:
    """Restore an instance snapshot (the latest if None) under scratch; returns its folder."""
    repo = repository()
    try:
        found = repo.snapshots(tags=[TAG])
        if snapshot:
            found = [s for s in found if s.id.startswith(snapshot)]
        if not found:
            which = f"snapshot {snapshot}" if snapshot else "instance snapshot"
            raise RepositoryUnavailable(f"The repository holds no {which}.")
        chosen = found[-1]
        repo.restore(chosen.id, scratch)
    except ResticError as exc:
        raise RepositoryUnavailable(f"The instance snapshot could not be read: {exc}") from None
    return scratch / chosen.paths[0].lstrip("/")
