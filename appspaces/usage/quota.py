"""The disk quota: each appspace's data dir measured, and its data made read-only above the
quota (writable again once use falls to DS_USAGE_QUOTA_RESUME_PERCENT of it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from appspaces.models import Appspace
from appspaces.sandboxes import appspace_data_held, appspace_spec
from appspaces.usage.counters import add_to_day
from sandbox.client import SandboxClient
from sandbox.data import usage as disk_usage
from sandbox.instance import FROZEN, RUNNING, STARTING, STOPPING
from sandbox.protocol import SandboxError, SandboxNotFound
from sandbox.walls import diskimage

log = logging.getLogger(__name__)

MB = 1024 * 1024  # disk_mb and memory_mb are MiB, as the backups' quota check counts them


def quota_readonly(*, disk_bytes: int, disk_mb: int, readonly: bool) -> bool:
    """Whether the data should be read-only: above the quota it is; once read-only it stays so
    until use falls to DS_USAGE_QUOTA_RESUME_PERCENT of the quota (no flapping at the edge)."""
    quota = disk_mb * MB
    if disk_bytes > quota:
        return True
    return readonly and disk_bytes * 100 > quota * settings.DS_USAGE_QUOTA_RESUME_PERCENT


def _store_disk(appspace_pk: int, used: disk_usage.DiskUsage, started: dt.datetime) -> None:
    # A measure that started earlier than the stored one never overwrites it.
    Appspace.objects.filter(pk=appspace_pk).filter(
        Q(disk_measured__isnull=True) | Q(disk_measured__lte=started)
    ).update(disk_bytes=used.bytes, disk_measured=started)
    add_to_day(appspace_pk, started.astimezone(dt.UTC).date(), disk_bytes=used.bytes)


def appspace_quota_enforce(*, appspace_pk: int) -> Appspace | None:
    """Set or clear data_readonly from the stored disk use; the appspace if it changed."""
    with transaction.atomic():
        appspace = Appspace.objects.select_for_update().filter(pk=appspace_pk).first()
        if appspace is None:
            return None
        wanted = quota_readonly(
            disk_bytes=appspace.disk_bytes,
            disk_mb=appspace.disk_mb,
            readonly=appspace.data_readonly,
        )
        if wanted == appspace.data_readonly:
            return None
        appspace.data_readonly = wanted
        appspace.save(update_fields=["data_readonly"])  # post_save: this process's gateway
        appspace.touch_config()
    log.warning(
        "appspace %s uses %d of %d MB: data %s",
        appspace.public_id,
        appspace.disk_bytes // MB,
        appspace.disk_mb,
        "read-only" if wanted else "writable again",
    )
    return appspace


def _mark_respec(appspace_pk: int, pending: bool) -> None:
    with transaction.atomic():
        kept = (
            Appspace.objects.select_for_update()
            .filter(pk=appspace_pk)
            .values_list("usage_counters", flat=True)
            .first()
        )
        if kept is None or bool(kept.get("respec")) == pending:
            return
        kept = {k: v for k, v in kept.items() if k != "respec"}
        if pending:
            kept["respec"] = True
        Appspace.objects.filter(pk=appspace_pk).update(usage_counters=kept)


def sandbox_respec(appspace: Appspace, client: SandboxClient) -> str:
    """Give a running sandbox the appspace's current spec now (data_readonly included):
    "applied", "stopped" (the next start builds it from the row anyway) or "pending" (frozen by
    a backup, busy or no supervisor: retried by the next usage collection)."""
    appspace.refresh_from_db()  # the spec is built from the row as it is now
    sandbox_id = str(appspace.public_id)
    try:
        state = client.usage(sandbox_id).get("state")
        if state == RUNNING:
            # Same as `restart` when the spec differs; a no-op when a gateway got there first.
            client.ensure(appspace_spec(appspace))
            outcome = "applied"
        elif state in (FROZEN, STARTING, STOPPING):
            outcome = "pending"
        else:
            outcome = "stopped"
    except SandboxNotFound:
        outcome = "stopped"
    except SandboxError as exc:
        log.warning("could not restart %s with its new spec: %s", sandbox_id, exc)
        outcome = "pending"
    _mark_respec(appspace.pk, outcome == "pending")
    return outcome


def _apply(changed: list[Appspace], client: SandboxClient) -> None:
    """Restart the running sandboxes of appspaces whose data_readonly changed. A gateway that
    loaded the old spec just before the change cannot put it back: its generation is older."""
    for appspace in changed:
        sandbox_respec(appspace, client)


def _measure(
    appspace: Appspace, *, force: bool = False
) -> tuple[disk_usage.DiskUsage | None, Appspace | None]:
    started = timezone.now()
    path = appspace.data_path
    try:
        if diskimage.mechanism(path) == "image" and not diskimage.is_mounted(path):
            used = _measure_image(appspace, started, force=force)
            if used is None:
                return None, None
        else:
            used = _walk(appspace)
    except (OSError, SandboxError) as exc:  # TreeMoved and DataUnavailable included
        log.warning("cannot measure the data of %s: %s", appspace.public_id, exc)
        return None, None
    _store_disk(appspace.pk, used, started)
    changed = appspace_quota_enforce(appspace_pk=appspace.pk)
    appspace.disk_bytes, appspace.disk_measured = used.bytes, started
    if changed is not None:
        appspace.data_readonly = changed.data_readonly
    return used, changed


def _walk(appspace: Appspace) -> disk_usage.DiskUsage:
    """What the data dir holds. Run as root, the walk is made here; otherwise the data is the
    appspace uid's and the supervisor walks it (`data_usage`, docs/security.md)."""
    if os.geteuid() == 0:
        return disk_usage.measure(appspace.data_path)
    with SandboxClient() as client:
        return disk_usage.DiskUsage(**client.data_usage(str(appspace.public_id)))


def _measure_image(
    appspace: Appspace, started: dt.datetime, *, force: bool
) -> disk_usage.DiskUsage | None:
    """A stopped appspace's data image, mounted for the walk (`appspace_data_held`); None when
    it did not change since the last measure (its file's mtime: only a mount writes to it)."""
    image = diskimage.image_path(appspace.data_path)
    measured = appspace.disk_measured
    if not force and measured is not None and image.stat().st_mtime <= measured.timestamp():
        return None
    with appspace_data_held(appspace):
        used = _walk(appspace)
    # The check and unmount around the walk wrote to the image: not a change of its data.
    with contextlib.suppress(OSError):
        os.utime(image, (started.timestamp(), started.timestamp()))
    return used


def appspace_disk_measure(
    *, appspace: Appspace, client: SandboxClient | None = None, force: bool = False
) -> disk_usage.DiskUsage | None:
    """Measure the data dir now, store it, and apply the quota (restarting a running sandbox
    when its data turns read-only or writable). None if the tree kept moving or cannot be
    read. A stopped appspace's data image is mounted for it (when it changed since the last
    measure, or `force`). Blocks for the walk: call it from a task or a sync view, never on an
    event loop."""
    used, changed = _measure(appspace, force=force)
    if changed is not None:
        _apply([changed], client or SandboxClient())
    return used


def appspace_measure_now(*, appspace: Appspace) -> disk_usage.DiskUsage | None:
    """The panel's "measure now" (after the owner freed space): the periodic measure, now."""
    return appspace_disk_measure(appspace=appspace, force=True)


def appspace_quota_check(*, appspace: Appspace) -> bool:
    """Apply the quota to the last measure without measuring again (after disk_mb changed);
    whether data_readonly changed. A switch to read-only waits out gateway caches (~3 s):
    from a view, prefer `appspace_measure_soon`."""
    changed = appspace_quota_enforce(appspace_pk=appspace.pk)
    if changed is None:
        return False
    _apply([changed], SandboxClient())
    appspace.refresh_from_db()
    return True


def disk_measure_all(client: SandboxClient | None = None) -> int:
    """Measure every appspace's data dir; the number measured."""
    measured, changed = 0, []
    for appspace in Appspace.objects.exclude(status=Appspace.Status.CREATING).iterator():
        used, flipped = _measure(appspace)
        measured += used is not None
        if flipped is not None:
            changed.append(flipped)
    if changed:
        _apply(changed, client or SandboxClient())
    return measured
