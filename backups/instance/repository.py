"""Whole-instance snapshots in the configured restic repository (DS_BACKUP_REPOSITORY): the
snapshot folder of backups/instance/snapshot.py is written to DS_DATA_DIR/.instance-backup,
sent with the tag `dropserver=instance`, then removed; a restore fetches it back (restic checks
every blob it reads, and snapshot.py every file's checksum) into the restore's scratch folder."""

from __future__ import annotations

from pathlib import Path

from appspaces.models import data_dir
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
    """Back the snapshot folder up into the repository; returns "repository snapshot <id>"."""
    repo = repository()
    try:
        repo.ensure()
        snapshot = repo.backup([folder], tags=[TAG])
    except ResticError as exc:
        raise RepositoryUnavailable(f"The repository refused the snapshot: {exc}") from None
    return f"repository snapshot {snapshot[:8]}"


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
