"""What every part of backups stands on: where an appspace's archives live, its policy row,
deleting one backup, and who is working on a row (worker_name). No orchestration here: making
(services.py), pruning (retention.py), scheduling (schedule.py) and restoring (restore.py)
build on it."""

from __future__ import annotations

import os
import socket

from appspaces.models import Appspace
from backups.models import Backup, BackupPolicy, appspace_backups_dir, backups_root
from sandbox import access

MB = 1024 * 1024


class BackupError(Exception):
    """A backup that could not be made; str() is a sentence for the user."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def backup_policy(appspace: Appspace) -> BackupPolicy:
    policy, _ = BackupPolicy.objects.get_or_create(appspace=appspace)
    return policy


def ensure_backups_dir(appspace: Appspace) -> None:
    root = backups_root()
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    appspace_backups_dir(appspace).mkdir(mode=0o700, exist_ok=True)
    # The web servers (DS_RUN_AS) hand archives to their owners: backups/ is theirs.
    for folder in (root, appspace_backups_dir(appspace)):
        access.give_to_platform(folder)


def staging_path(backup: Backup):
    return appspace_backups_dir(backup.appspace) / f".staging-{backup.public_id}"


def backup_delete(*, backup: Backup) -> None:
    if backup.state == Backup.State.PENDING:
        raise BackupError("This backup is still being made.")
    backup.path.unlink(missing_ok=True)
    backup.delete()
