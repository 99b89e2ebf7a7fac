"""Cleaning up after work that died (a worker killed mid-backup or mid-restore) and after
restores: every minute from Celery beat, and at the start of each backup.

- A PENDING backup whose worker is gone (same host, pid dead) or silent for
  DS_BACKUP_STALE_SECONDS is FAILED; its appspace is thawed (a backup may die while holding
  it frozen); its staging copy and temporary archive are removed; its Job fails.
- Temporary files in backups/ that no PENDING backup owns are removed.
- `appspaces/<id>/.previous-*` (data a restore replaced) is removed once the appspace has run
  on the restored data, or after DS_BACKUP_KEEP_PREVIOUS_DAYS.
- `appspaces/<id>/.restore-*` left by a dead restore is removed (it never replaced anything:
  the swap renames it away in the same step).
- `backups/<id>/` of an appspace that was deleted is removed, unless its owner kept its
  backups (rows with `kept_owner`, see appspaces/lifecycle/control.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from appspaces.jobs import job_finish
from appspaces.models import Appspace, Job
from backups.models import Backup, backups_root
from backups.offsite import tree
from backups.offsite.copies import offsite_enabled
from backups.quiesce import thaw_quietly
from backups.services import backup_fail
from packages.extraction import remove_tree
from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError

log = logging.getLogger(__name__)
INTERRUPTED = "The backup was interrupted (its worker stopped); nothing of it was kept."
RESTORE_STALE_SECONDS = 3600


def _worker_dead(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) is dead too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1] == "Z"
    except (OSError, IndexError):
        return False


def dead_backups() -> list[Backup]:
    stale = timezone.now() - timedelta(seconds=settings.DS_BACKUP_STALE_SECONDS)
    dead = []
    for backup in Backup.objects.filter(state=Backup.State.PENDING).select_related("appspace"):
        if backup.heartbeat is None or backup.heartbeat < stale or _worker_dead(backup.worker):
            dead.append(backup)
    return dead


def backups_recover() -> int:
    """Fail dead backups, thaw their appspaces, remove their leftovers."""
    count = 0
    for backup in dead_backups():
        thaw_quietly(str(backup.appspace.public_id))
        backup_fail(backup, INTERRUPTED)
        if backup.job_id:
            job = Job.objects.filter(pk=backup.job_id).exclude(state__in=Job.FINISHED).first()
            if job is not None:
                job_finish(job, Job.State.FAILED, INTERRUPTED)
        log.warning(
            "backup %s of %s was interrupted; cleaned up", backup.public_id, backup.appspace
        )
        count += 1
    return count


def orphans_remove() -> int:
    """Temporary archives and staging folders that no live backup owns."""
    root = backups_root()
    if not root.is_dir():
        return 0
    live = {
        (str(b.appspace.public_id), b.file_name, str(b.public_id))
        for b in Backup.objects.filter(state=Backup.State.PENDING).select_related("appspace")
    }
    owned = {(a, f".tmp-{f}") for a, f, _ in live} | {(a, f".staging-{p}") for a, _, p in live}
    removed = 0
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for entry in folder.iterdir():
            if entry.name.startswith((".tmp-", ".staging-")) and (
                (folder.name, entry.name) not in owned
            ):
                remove_tree(entry)
                removed += 1
    uploads = root / ".uploads"
    if uploads.is_dir():  # restore uploads whose job died (a job removes its own when it ends)
        limit = time.time() - 24 * 3600
        for entry in uploads.iterdir():
            if entry.lstat().st_mtime < limit:
                if entry.is_dir() and not entry.is_symlink():
                    remove_tree(entry)  # an off-site tree being fetched (backups/offsite/tree.py)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
    return removed


def deleted_appspaces_folders_remove() -> int:
    """Archives of appspaces that were deleted, unless their owner chose to keep them."""
    # Backups whose appspace went without being kept (e.g. with its owner's account).
    Backup.objects.filter(appspace__isnull=True, kept_owner__isnull=True).delete()
    root = backups_root()
    if not root.is_dir():
        return 0
    known = {str(pk) for pk in Appspace.objects.values_list("public_id", flat=True)}
    known |= {
        str(folder)
        for folder in Backup.objects.filter(appspace__isnull=True)
        .values_list("kept_folder", flat=True)
        .distinct()
    }
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in known:
            remove_tree(folder)
            removed += 1
    return removed + _offsite_trees_remove(known)


def _offsite_trees_remove(known: set[str]) -> int:
    """Off-site trees (backups/offsite/tree.py) of appspaces that are gone, or all of them when
    no repository is configured any more."""
    if not tree.root().is_dir():
        return 0
    removed = 0
    for folder in tree.root().iterdir():
        if not offsite_enabled() or folder.name not in known:
            remove_tree(folder)
            removed += 1
    return removed


def _running_since(client: SandboxClient, sandbox_id: str) -> float | None:
    """Seconds the sandbox has been running, or None if it is not running (or unknown)."""
    try:
        info = client.usage(sandbox_id)
    except SandboxError:
        return None
    return info.get("uptime_s") if info.get("state") == "running" else None


def previous_data_remove() -> int:
    """Data replaced by restores: kept until the appspace runs on the restored data."""
    root = layout.appspaces_dir()
    if not root.is_dir():
        return 0
    removed = 0
    keep_until = time.time() - settings.DS_BACKUP_KEEP_PREVIOUS_DAYS * 86400
    client = SandboxClient(timeout=10)
    try:
        for folder in root.iterdir():
            leftovers = [p for p in folder.glob(".previous-*") if p.is_dir()]
            leftovers += [
                p
                for p in folder.glob(".restore-*")
                if p.is_dir() and p.stat().st_mtime < time.time() - RESTORE_STALE_SECONDS
            ]
            for path in leftovers:
                age = time.time() - path.stat().st_mtime
                uptime = _running_since(client, folder.name)
                ran_since = uptime is not None and uptime < age
                if (
                    path.name.startswith(".restore-")
                    or ran_since
                    or (path.stat().st_mtime < keep_until)
                ):
                    if os.geteuid() == 0:
                        remove_tree(path)
                    else:  # data of the appspace's uid inside: the supervisor removes it
                        client.data_remove(folder.name, part=path.name)
                    removed += 1
    finally:
        client.close()
    return removed


def stale_restores_fail() -> int:
    """RESTORE jobs whose worker died: failed, and the appspace back from MIGRATING."""
    stale = timezone.now() - timedelta(seconds=RESTORE_STALE_SECONDS)
    count = 0
    for job in Job.objects.filter(
        kind=Job.Kind.RESTORE, state=Job.State.RUNNING, updated__lt=stale
    ).select_related("appspace"):
        job_finish(
            job,
            Job.State.FAILED,
            "The restore was interrupted (its worker stopped); restore again to be sure.",
        )
        if job.appspace is not None:
            Appspace.objects.filter(
                pk=job.appspace.pk,
                status=Appspace.Status.MIGRATING,
                status_reason="Restoring a backup.",
            ).update(status=Appspace.Status.ACTIVE, status_reason="")
            job.appspace.touch_config()
        count += 1
    return count


def backups_sweep() -> dict[str, int]:
    return {
        "recovered": backups_recover(),
        "orphans": orphans_remove(),
        "deleted_appspaces": deleted_appspaces_folders_remove(),
        "previous": previous_data_remove(),
        "restores": stale_restores_fail(),
    }
