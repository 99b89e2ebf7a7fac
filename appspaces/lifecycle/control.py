"""An appspace's life after creation (appspace_creation.py): its status, pause and resume,
restarting its sandbox with a new spec or new limits, deleting it (data removed, backups kept
or deleted), what the panel shows of its sandbox (state, log tail), and the periodic sweep."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Invitation
from appspaces.allowances import AllowanceError, check_appspace, owner_lock
from appspaces.jobs import enqueue
from appspaces.models import Appspace, Job, data_dir
from appspaces.sandboxes import appspace_data_released, appspace_spec
from backups.models import Backup, appspace_backups_dir
from packages.extraction import remove_tree
from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound, SandboxUnavailable

log = logging.getLogger(__name__)

# Jobs during which an appspace must not be deleted or changed otherwise.
BUSY_KINDS = (Job.Kind.CREATE, Job.Kind.MIGRATE, Job.Kind.BACKUP, Job.Kind.RESTORE)


class AppspaceError(Exception):
    """Something the owner asked for that cannot be done now; str() is a sentence for them."""


# --- Limits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitBounds:
    name: str
    label: str
    unit: str
    minimum: int
    maximum: int
    default: int


def limit_bounds() -> dict[str, LimitBounds]:
    """What an owner may choose for each limit, as the administrator set it."""
    s = settings
    return {
        "memory_mb": LimitBounds(
            "memory_mb", "Memory", "MB", s.DS_APPSPACE_MIN_MEMORY_MB,
            s.DS_APPSPACE_MAX_MEMORY_MB, s.DS_APPSPACE_DEFAULT_MEMORY_MB,
        ),
        "cpu_percent": LimitBounds(
            "cpu_percent", "CPU", "% of one core", s.DS_APPSPACE_MIN_CPU_PERCENT,
            s.DS_APPSPACE_MAX_CPU_PERCENT, s.DS_APPSPACE_DEFAULT_CPU_PERCENT,
        ),
        "disk_mb": LimitBounds(
            "disk_mb", "Disk", "MB", s.DS_APPSPACE_MIN_DISK_MB, s.DS_APPSPACE_MAX_DISK_MB,
            s.DS_APPSPACE_DEFAULT_DISK_MB,
        ),
        "io_read_mbps": LimitBounds(
            "io_read_mbps", "Disk reads", "MB/s", 1, s.DS_APPSPACE_MAX_IO_READ_MBPS,
            s.DS_APPSPACE_DEFAULT_IO_READ_MBPS,
        ),
        "io_write_mbps": LimitBounds(
            "io_write_mbps", "Disk writes", "MB/s", 1, s.DS_APPSPACE_MAX_IO_WRITE_MBPS,
            s.DS_APPSPACE_DEFAULT_IO_WRITE_MBPS,
        ),
        "io_read_iops": LimitBounds(
            "io_read_iops", "Disk read operations", "per second", 1,
            s.DS_APPSPACE_MAX_IO_READ_IOPS, s.DS_APPSPACE_DEFAULT_IO_READ_IOPS,
        ),
        "io_write_iops": LimitBounds(
            "io_write_iops", "Disk write operations", "per second", 1,
            s.DS_APPSPACE_MAX_IO_WRITE_IOPS, s.DS_APPSPACE_DEFAULT_IO_WRITE_IOPS,
        ),
    }  # fmt: skip


IO_LIMITS = ("io_read_mbps", "io_write_mbps", "io_read_iops", "io_write_iops")


def limit_check(name: str, value: int | None) -> int:
    bounds = limit_bounds()[name]
    if value is None:
        return min(max(bounds.default, bounds.minimum), bounds.maximum)
    if not bounds.minimum <= value <= bounds.maximum:
        raise AppspaceError(
            f"{bounds.label} must be between {bounds.minimum} and {bounds.maximum} {bounds.unit}."
        )
    return value


# --- Status ---------------------------------------------------------------------------------


def appspace_status_set(
    appspace: Appspace, status: str, reason: str = "", *, only_from: tuple[str, ...] | None = None
) -> bool:
    """Change the status (saved, so the gateway's caches hear of it); with `only_from`, only
    if the appspace is in one of those statuses now. False if it was not."""
    with transaction.atomic():
        locked = Appspace.objects.select_for_update().get(pk=appspace.pk)
        if only_from is not None and locked.status not in only_from:
            appspace.status, appspace.status_reason = locked.status, locked.status_reason
            return False
        locked.status, locked.status_reason = status, reason[:500]
        locked.save(update_fields=["status", "status_reason"])
        locked.touch_config()
    appspace.status, appspace.status_reason = status, reason[:500]
    return True


def sandbox_stop(appspace: Appspace, client: SandboxClient | None = None) -> bool:
    """Stop the appspace's sandbox; False if no supervisor answered (then none is running)."""
    own = client is None
    client = client or SandboxClient(timeout=30)
    try:
        client.stop(str(appspace.public_id))
        return True
    except SandboxNotFound:
        return True
    except SandboxUnavailable:
        return False
    finally:
        if own:
            client.close()


def sandbox_refresh(appspace: Appspace) -> str:
    """Give a running sandbox its current spec (allowlist, limits, version): the supervisor
    restarts it. A stopped one picks the spec up at its next start. -> what happened."""
    appspace.refresh_from_db()
    if appspace.status != Appspace.Status.ACTIVE:
        return "not active"
    client = SandboxClient(timeout=30)
    try:
        state = sandbox_states(client).get(str(appspace.public_id), {}).get("state")
        if state in (None, "stopped", "stopping"):
            return "stopped"
        client.restart(appspace_spec(appspace))
        return "restarted"
    except SandboxError as exc:
        log.warning("restarting the sandbox of %s failed: %s", appspace, exc)
        return "failed"
    finally:
        client.close()


def sandbox_states(client: SandboxClient | None = None) -> dict[str, dict]:
    """The supervisor's view of every sandbox, by id; raises SandboxUnavailable."""
    own = client is None
    client = client or SandboxClient(timeout=5)
    try:
        return {entry["id"]: entry for entry in client.list()}
    finally:
        if own:
            client.close()


@dataclass(frozen=True)
class RunState:
    key: str  # a CSS class: running, stopped, paused, migrating, problem, creating, unknown
    label: str
    detail: str = ""


def run_state(appspace: Appspace, sandboxes: dict[str, dict] | None) -> RunState:
    """What the owner sees: the appspace's status, and for an active one its sandbox's state
    (`sandboxes` from sandbox_states(), None when the supervisor did not answer)."""
    status = appspace.status
    if status == Appspace.Status.CREATING:
        return RunState("creating", "being created")
    if status == Appspace.Status.PAUSED:
        return RunState("paused", "paused", "Nobody can open it until you resume it.")
    if status == Appspace.Status.MIGRATING:
        return RunState("migrating", "migrating", appspace.status_reason)
    if status == Appspace.Status.PROBLEM:
        return RunState("problem", "problem", appspace.status_reason)
    if sandboxes is None:
        return RunState("unknown", "state unknown", "The sandbox supervisor is not reachable.")
    entry = sandboxes.get(str(appspace.public_id))
    state = entry.get("state") if entry else "stopped"
    if state in ("running", "starting"):
        return RunState("running", "running")
    if state == "frozen":
        return RunState("running", "running", "Paused for a moment while a backup is made.")
    if state == "problem":
        return RunState(
            "problem",
            "problem",
            f"The app kept crashing and is not started again until you restart it "
            f"({entry.get('problem') or 'crash loop'}). Its log below may say why.",
        )
    if state == "crashed":
        return RunState("stopped", "crashed", "It is started again on the next visit.")
    return RunState("stopped", "stopped", "It starts on the next visit.")


# --- Pause, resume, restart -----------------------------------------------------------------


def appspace_pause(*, appspace: Appspace) -> bool:
    """Nobody can open it (the gateway answers 503) and its sandbox stops."""
    paused = appspace_status_set(
        appspace, Appspace.Status.PAUSED, only_from=(Appspace.Status.ACTIVE,)
    )
    if paused:
        sandbox_stop(appspace)
    return paused


def appspace_resume(*, appspace: Appspace) -> bool:
    """Back to active from paused, or from a problem the owner has dealt with."""
    return appspace_status_set(
        appspace,
        Appspace.Status.ACTIVE,
        only_from=(Appspace.Status.PAUSED, Appspace.Status.PROBLEM),
    )


def appspace_restart(*, appspace: Appspace) -> None:
    """Restart the sandbox, also out of the supervisor's problem state (a crash loop)."""
    if appspace.status != Appspace.Status.ACTIVE:
        raise AppspaceError("Only an active appspace can be restarted.")
    client = SandboxClient(timeout=60)
    try:
        client.restart(appspace_spec(appspace))
    except SandboxUnavailable as exc:
        raise AppspaceError(f"The sandbox supervisor is not reachable ({exc}).") from None
    except SandboxError as exc:
        raise AppspaceError(f"The app did not start: {exc.message}") from None
    finally:
        client.close()


def appspace_limits_set(
    *,
    appspace: Appspace,
    memory_mb: int,
    cpu_percent: int,
    disk_mb: int,
    io_read_mbps: int | None = None,
    io_write_mbps: int | None = None,
    io_read_iops: int | None = None,
    io_write_iops: int | None = None,
):
    """New limits (within the admin's bounds and the owner's allowance, checked under a lock of
    the owner's row); a running sandbox is restarted with them. IO limits: None is the
    instance's default."""
    memory_mb = limit_check("memory_mb", memory_mb)
    cpu_percent = limit_check("cpu_percent", cpu_percent)
    disk_mb = limit_check("disk_mb", disk_mb)
    given = (io_read_mbps, io_write_mbps, io_read_iops, io_write_iops)
    io = {
        name: None if value is None else limit_check(name, value)
        for name, value in zip(IO_LIMITS, given, strict=True)
    }
    with transaction.atomic():
        owner_lock(appspace.owner)
        try:
            check_appspace(appspace.owner, disk_mb=disk_mb, memory_mb=memory_mb, replacing=appspace)
        except AllowanceError as exc:
            raise AppspaceError(str(exc)) from None
        appspace.memory_mb, appspace.cpu_percent, appspace.disk_mb = memory_mb, cpu_percent, disk_mb
        for name, value in io.items():
            setattr(appspace, name, value)
        appspace.save(update_fields=["memory_mb", "cpu_percent", "disk_mb", *IO_LIMITS])
    appspace.touch_config()
    transaction.on_commit(lambda: sandbox_refresh(appspace))


# --- Deleting -------------------------------------------------------------------------------


def busy_jobs(appspace: Appspace):
    return Job.objects.filter(appspace=appspace, kind__in=BUSY_KINDS).exclude(
        state__in=Job.FINISHED
    )


def appspace_delete(*, appspace: Appspace, keep_backups: bool) -> None:
    """Delete the appspace and its data. Its backups go too, unless `keep_backups`: then they
    stay the owner's (listed on the dashboard) until they delete them."""
    if appspace.status in (Appspace.Status.CREATING, Appspace.Status.MIGRATING):
        raise AppspaceError(
            f"The appspace is {appspace.get_status_display()}; delete it once that is over."
        )
    if busy_jobs(appspace).exists():
        raise AppspaceError("A backup or restore of this appspace is under way; try again after.")
    sandbox_stop(appspace)
    try:
        appspace_data_released(appspace)  # its data image unmounted: the files can go
    except SandboxError as exc:
        log.warning("appspace %s: data image not released: %s", appspace.public_id, exc)
    with transaction.atomic():
        locked = Appspace.objects.select_for_update().get(pk=appspace.pk)
        backups = Backup.objects.filter(appspace=locked)
        if keep_backups:
            backups.exclude(state=Backup.State.READY).delete()
            backups.update(
                kept_owner=locked.owner_id,
                kept_label=locked.subdomain,
                kept_folder=locked.public_id,
            )
        else:
            backups.delete()
        Invitation.objects.pending().filter(purpose__appspace=str(locked.public_id)).update(
            revoked_at=timezone.now()
        )
        locked.delete()
        transaction.on_commit(lambda: _remove_deleted(locked, keep_backups=keep_backups))


def _remove_deleted(appspace: Appspace, *, keep_backups: bool) -> None:
    moved = remove_appspace_files(appspace, backups=not keep_backups, to_trash=True)
    if moved:
        enqueue("appspaces.tasks.trash_empty")


def trash_dir() -> Path:
    return data_dir() / "trash"


def remove_appspace_files(appspace: Appspace, *, backups: bool, to_trash: bool = False) -> int:
    """The appspace's folders: data and meta, its log, its socket folder, and its backups
    (`backups`). With `to_trash` they are moved aside in one rename each (quick, whatever
    their size) and removed by trash_empty(). -> how many were moved.

    Not root (the web servers run as DS_RUN_AS): the data is the appspace uid's and the log and
    socket folders root's, so the supervisor removes those (`data_remove`); only the backups,
    which are the platform's, are handled here."""
    sandbox_id = str(appspace.public_id)
    folders = [
        appspace.path,
        layout.sandbox_log_dir(sandbox_id),
        layout.sandbox_run_dir(sandbox_id),
    ]
    if os.geteuid() != 0 and any(os.path.lexists(f) for f in folders):
        try:
            with SandboxClient() as client:
                client.data_remove(sandbox_id)
        except SandboxError as exc:  # nothing here may remove them: say what is left
            log.warning("the supervisor could not remove %s's folders: %s", sandbox_id, exc)
        folders = []
    if backups:
        folders.append(appspace_backups_dir(appspace))
    moved = 0
    for folder in folders:
        if not os.path.lexists(folder):
            continue
        if to_trash:
            trash = trash_dir()
            trash.mkdir(mode=0o700, exist_ok=True)
            try:
                os.rename(folder, trash / f"{sandbox_id}-{folder.name}-{secrets.token_hex(4)}")
                moved += 1
                continue
            except OSError:
                log.warning("could not move %s to the trash; removing it in place", folder)
        remove_tree(folder)
    return moved


def trash_empty() -> int:
    trash = trash_dir()
    if not trash.is_dir():
        return 0
    removed = 0
    for entry in trash.iterdir():
        remove_tree(entry)
        removed += 1
    return removed


# --- The log --------------------------------------------------------------------------------


def appspace_log_tail(appspace: Appspace, *, max_bytes: int | None = None) -> str:
    """The end of the appspace's sandbox log (whole lines, at most `max_bytes`), read without
    following links; "" if there is none yet."""
    limit = max_bytes or settings.DS_APPSPACE_LOG_TAIL_KB * 1024
    path = layout.sandbox_log_dir(str(appspace.public_id)) / "sandbox.log"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ""
        start = max(0, info.st_size - limit)
        raw = os.pread(fd, limit, start)
    finally:
        os.close(fd)
    if start > 0:
        cut = raw.find(b"\n")
        raw = raw[cut + 1 :] if cut != -1 else b""
    return raw.decode("utf-8", "replace")
