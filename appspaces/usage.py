"""What each appspace costs: CPU, running time, memory, IO and disk per UTC day, sampled from the
supervisor's cgroup counters and from the data dirs; the disk quota (data read-only above it);
and the figures the panel shows (`usage_summary`).

The supervisor's counters belong to one run of a sandbox (a new cgroup at every start), so
each sample is compared with the last one kept in `Appspace.usage_counters`: within a run only
the growth is added, a new run is added whole, an older run or an older sample adds nothing.
Samples are applied under a row lock, so two collectors running at once never count twice.
See docs/operations.md, "Usage and quotas".
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from appspaces.models import Appspace, AppspaceUsageDay
from appspaces.sandboxes import appspace_spec
from sandbox import usage as disk_usage
from sandbox.client import SandboxClient
from sandbox.instance import FROZEN, RUNNING, STARTING, STOPPING
from sandbox.protocol import SandboxError, SandboxNotFound

log = logging.getLogger(__name__)

MB = 1024 * 1024  # disk_mb and memory_mb are MiB, as the backups' quota check counts them
# Two samples belong to the same run when the pid matches and the start times they imply agree
# this closely (the start is derived from the uptime, so it carries the request's latency).
RUN_START_TOLERANCE = 2.0


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


@cache
def _boot_id() -> str:
    # Monotonic clocks restart with the host: a run's start only compares within one boot.
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# --- Counters -> daily deltas (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One reading of a running sandbox's counters, all since that run started."""

    pid: int
    start: float  # time.monotonic() at which the run became ready, derived from its uptime
    boot: str
    uptime_s: float
    cpu_ns: int
    io_read: int
    io_write: int
    memory_peak: int

    @classmethod
    def from_usage(cls, data: dict[str, Any], *, now: float | None = None) -> Sample | None:
        """From the supervisor's `usage` answer; None unless the sandbox is running."""
        if data.get("state") != RUNNING or data.get("pid") is None or data.get("uptime_s") is None:
            return None
        now = time.monotonic() if now is None else now
        uptime = max(float(data["uptime_s"]), 0.0)
        return cls(
            pid=int(data["pid"]),
            start=round(now - uptime, 3),
            boot=_boot_id(),
            uptime_s=uptime,
            cpu_ns=max(int(data.get("cpu_usage_ns") or 0), 0),
            io_read=max(int(data.get("io_read_bytes") or 0), 0),
            io_write=max(int(data.get("io_write_bytes") or 0), 0),
            memory_peak=max(int(data.get("memory_peak_bytes") or 0), 0),
        )

    @classmethod
    def from_last_run(cls, data: Any, *, now: float | None = None) -> Sample | None:
        """The final reading of a run that has ended, which the supervisor keeps after the
        run's cgroup is gone (`last_run` in its listing); None if there is none."""
        if not isinstance(data, dict) or data.get("pid") is None:
            return None
        now = time.monotonic() if now is None else now
        uptime = max(float(data.get("uptime_s") or 0), 0.0)
        ended_ago = max(float(data.get("ended_ago_s") or 0), 0.0)
        return cls(
            pid=int(data["pid"]),
            start=round(now - ended_ago - uptime, 3),
            boot=_boot_id(),
            uptime_s=uptime,
            cpu_ns=max(int(data.get("cpu_usage_ns") or 0), 0),
            io_read=max(int(data.get("io_read_bytes") or 0), 0),
            io_write=max(int(data.get("io_write_bytes") or 0), 0),
            memory_peak=max(int(data.get("memory_peak_bytes") or 0), 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start": self.start,
            "boot": self.boot,
            "uptime_s": self.uptime_s,
            "cpu_ns": self.cpu_ns,
            "io_read": self.io_read,
            "io_write": self.io_write,
        }


@dataclass(frozen=True)
class Deltas:
    cpu_seconds: float = 0.0
    running_seconds: float = 0.0
    io_read_bytes: int = 0
    io_write_bytes: int = 0


def _same_run(kept: dict[str, Any] | None, sample: Sample) -> bool:
    return (
        isinstance(kept, dict)
        and kept.get("pid") == sample.pid
        and kept.get("boot") == sample.boot
        and abs(float(kept.get("start") or 0) - sample.start) <= RUN_START_TOLERANCE
    )


def _already_counted(kept: Any, sample: Sample) -> bool:
    """A cheap check before taking the row lock: this reading, or a later one of its run (or
    of a later run), was applied already. usage_record decides for certain under the lock."""
    if not isinstance(kept, dict):
        return False
    if _same_run(kept, sample):
        return sample.uptime_s <= kept.get("uptime_s", 0)
    return _same_run(kept.get("prev"), sample)


def counter_deltas(kept: dict[str, Any], sample: Sample) -> tuple[Deltas, dict[str, Any] | None]:
    """What `sample` adds to the day given the counters `kept` from the last one, and the
    counters to keep from now on (None: keep the old ones). Never negative, never twice."""
    if _same_run(kept, sample):
        if sample.uptime_s <= kept.get("uptime_s", 0) or sample.cpu_ns < kept.get("cpu_ns", 0):
            # An older reading of this run (a later one is counted), or the same one again
            # (an ended run's final reading, listed until the sandbox runs again).
            return Deltas(), None
        deltas = Deltas(
            cpu_seconds=(sample.cpu_ns - kept.get("cpu_ns", 0)) / 1e9,
            running_seconds=sample.uptime_s - kept.get("uptime_s", 0),
            io_read_bytes=max(sample.io_read - kept.get("io_read", 0), 0),
            io_write_bytes=max(sample.io_write - kept.get("io_write", 0), 0),
        )
        return deltas, {**kept, **sample.to_json()}
    if _same_run(kept.get("prev"), sample):
        return Deltas(), None  # a late reading of the run before the current one
    if kept.get("boot") == sample.boot and sample.start < float(kept.get("start") or 0) - (
        RUN_START_TOLERANCE
    ):
        return Deltas(), None  # a run older than the one counted already
    # A run not seen before: everything its counters hold happened since it started.
    deltas = Deltas(sample.cpu_ns / 1e9, sample.uptime_s, sample.io_read, sample.io_write)
    prev = {k: kept[k] for k in ("pid", "boot", "start") if k in kept}
    return deltas, {**kept, **sample.to_json(), "prev": prev or None}


# --- Writing days ------------------------------------------------------------------------------


def _add_to_day(
    appspace_pk: int,
    day: dt.date,
    deltas: Deltas = Deltas(),
    *,
    memory_peak: int = 0,
    disk_bytes: int = 0,
) -> None:
    """Add to the day's row in one UPDATE (F expressions), so concurrent writers all count."""
    AppspaceUsageDay.objects.get_or_create(appspace_id=appspace_pk, day=day)
    AppspaceUsageDay.objects.filter(appspace_id=appspace_pk, day=day).update(
        cpu_seconds=F("cpu_seconds") + deltas.cpu_seconds,
        running_seconds=F("running_seconds") + deltas.running_seconds,
        io_read_bytes=F("io_read_bytes") + deltas.io_read_bytes,
        io_write_bytes=F("io_write_bytes") + deltas.io_write_bytes,
        memory_peak_bytes=Greatest(F("memory_peak_bytes"), Value(memory_peak)),
        disk_bytes_max=Greatest(F("disk_bytes_max"), Value(disk_bytes)),
    )


def usage_record(*, appspace_pk: int, sample: Sample, day: dt.date | None = None) -> Deltas:
    """Apply one sample: deltas to the day, the sample kept for the next one."""
    day = day or today()
    with transaction.atomic():
        kept = (
            Appspace.objects.select_for_update()
            .filter(pk=appspace_pk)
            .values_list("usage_counters", flat=True)
            .first()
        )
        if kept is None:
            return Deltas()
        kept = kept if isinstance(kept, dict) else {}
        deltas, keep = counter_deltas(kept, sample)
        if keep is None:
            return Deltas()
        keep["sampled"] = timezone.now().isoformat()
        Appspace.objects.filter(pk=appspace_pk).update(usage_counters=keep)
        _add_to_day(appspace_pk, day, deltas, memory_peak=sample.memory_peak)
    return deltas


# --- Collection --------------------------------------------------------------------------------


def _appspace_ids(listing: list[dict[str, Any]], states: tuple[str, ...]) -> dict[uuid.UUID, str]:
    """Sandbox id -> state for appspace sandboxes (install jobs' ids are not UUIDs)."""
    found = {}
    for entry in listing:
        try:
            found[uuid.UUID(str(entry.get("id")))] = str(entry.get("state"))
        except ValueError:
            continue
    return {k: v for k, v in found.items() if v in states}


def _last_runs(listing: list[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
    """Sandbox id -> the final reading of its last ended run, for appspace sandboxes."""
    found = {}
    for entry in listing:
        if not isinstance(entry.get("last_run"), dict):
            continue
        try:
            found[uuid.UUID(str(entry.get("id")))] = entry["last_run"]
        except ValueError:
            continue
    return found


def usage_collect_all(client: SandboxClient | None = None) -> int:
    """Sample every running appspace sandbox once, after adding what runs that ended since
    the last collection did in their last moments; the number of running ones sampled.
    Without a supervisor this logs and returns 0: the counters wait for the next run."""
    client = client or SandboxClient()
    try:
        listing = client.list()
    except SandboxError as exc:
        log.warning("usage collection skipped: %s", exc)
        return 0
    running = _appspace_ids(listing, (RUNNING,))
    ended = _last_runs(listing)
    now = time.monotonic()
    for appspace in Appspace.objects.filter(public_id__in=list(ended)):
        sample = Sample.from_last_run(ended[appspace.public_id], now=now)
        if sample is not None and not _already_counted(appspace.usage_counters, sample):
            usage_record(appspace_pk=appspace.pk, sample=sample)
    sampled = 0
    # 0.9: a measure taken by the previous collection counts as due at this one.
    disk_due = timezone.now() - dt.timedelta(seconds=settings.DS_USAGE_DISK_RUNNING_SECONDS * 0.9)
    # Every appspace with a running sandbox pays for it, whatever its status says by now.
    for appspace in Appspace.objects.filter(public_id__in=list(running)):
        try:
            sample = Sample.from_usage(client.usage(str(appspace.public_id)))
        except SandboxError as exc:
            log.info("no usage for %s: %s", appspace.public_id, exc)
            continue
        if sample is None:
            continue  # stopped since the listing
        usage_record(appspace_pk=appspace.pk, sample=sample)
        sampled += 1
        if appspace.usage_counters.get("respec"):
            sandbox_respec(appspace, client)
        # Only a running sandbox can grow its data dir: measure those more often.
        if appspace.disk_measured is None or appspace.disk_measured < disk_due:
            appspace_disk_measure(appspace=appspace, client=client)
    return sampled


# --- Disk and the quota ------------------------------------------------------------------------


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
    _add_to_day(appspace_pk, started.astimezone(dt.UTC).date(), disk_bytes=used.bytes)


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


def _measure(appspace: Appspace) -> tuple[disk_usage.DiskUsage | None, Appspace | None]:
    started = timezone.now()
    try:
        used = disk_usage.measure(appspace.data_path)
    except OSError as exc:  # TreeMoved included
        log.warning("cannot measure the data of %s: %s", appspace.public_id, exc)
        return None, None
    _store_disk(appspace.pk, used, started)
    changed = appspace_quota_enforce(appspace_pk=appspace.pk)
    appspace.disk_bytes, appspace.disk_measured = used.bytes, started
    if changed is not None:
        appspace.data_readonly = changed.data_readonly
    return used, changed


def appspace_disk_measure(
    *, appspace: Appspace, client: SandboxClient | None = None
) -> disk_usage.DiskUsage | None:
    """Measure the data dir now, store it, and apply the quota (restarting a running sandbox
    when its data turns read-only or writable). None if the tree kept moving or cannot be
    read. Blocks for the walk: call it from a task or a sync view, never on an event loop."""
    used, changed = _measure(appspace)
    if changed is not None:
        _apply([changed], client or SandboxClient())
    return used


def appspace_measure_now(*, appspace: Appspace) -> disk_usage.DiskUsage | None:
    """The panel's "measure now" (after the owner freed space): the periodic measure, now."""
    return appspace_disk_measure(appspace=appspace)


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


def appspace_measure_soon(*, appspace: Appspace) -> None:
    """Queue that measure once the current transaction commits: a view need not wait."""
    pk = appspace.pk
    transaction.on_commit(lambda: disk_measure.delay(pk))


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


def usage_prune() -> int:
    cutoff = today() - dt.timedelta(days=settings.DS_USAGE_KEEP_DAYS)
    deleted, _ = AppspaceUsageDay.objects.filter(day__lt=cutoff).delete()
    return deleted


# --- Selectors ---------------------------------------------------------------------------------

PERIODS = (("today", "Today", 1), ("week", "Last 7 days", 7), ("month", "Last 30 days", 30))
SUMMED = ("cpu_seconds", "running_seconds", "io_read_bytes", "io_write_bytes")
PEAKS = ("memory_peak_bytes", "disk_bytes_max")


def usage_summary(appspace: Appspace) -> dict[str, Any]:
    """What the appspace used today, in the last 7 and the last 30 days (UTC days, today
    included), and its disk use against the quota. One query."""
    day = today()
    aggregates: dict[str, Any] = {}
    for key, _, days in PERIODS:
        since = Q(day__gt=day - dt.timedelta(days=days))
        aggregates |= {f"{key}__{f}": Sum(f, filter=since) for f in SUMMED}
        aggregates |= {f"{key}__{f}": Max(f, filter=since) for f in PEAKS}
    totals = AppspaceUsageDay.objects.filter(
        appspace=appspace, day__gt=day - dt.timedelta(days=30), day__lte=day
    ).aggregate(**aggregates)
    periods = []
    for key, label, days in PERIODS:
        figures = {f: totals[f"{key}__{f}"] or 0 for f in (*SUMMED, *PEAKS)}
        periods.append({"key": key, "label": label, "days": days, **figures})
    quota = appspace.disk_mb * MB
    return {
        "periods": periods,
        **{p["key"]: p for p in periods},
        "cpu_percent": appspace.cpu_percent,
        "memory_limit_bytes": appspace.memory_mb * MB,
        "disk_bytes": appspace.disk_bytes,
        "disk_quota_bytes": quota,
        "disk_percent": min(round(appspace.disk_bytes * 100 / quota), 999) if quota else 0,
        "disk_measured": appspace.disk_measured,
        "over_quota": appspace.disk_bytes > quota,
        "data_readonly": appspace.data_readonly,
        "resume_bytes": quota * settings.DS_USAGE_QUOTA_RESUME_PERCENT // 100,
        "disk_low_bytes": quota * 8 // 10,  # the meter turns amber from here
    }


# --- Tasks (beat schedule: "# --- Usage ---" in settings.py) ------------------------------------


@shared_task(ignore_result=True)
def usage_collect() -> int:
    return usage_collect_all()


@shared_task(ignore_result=True)
def disk_measure(appspace_id: int | None = None) -> int:
    """Every appspace's data dir, or one appspace's (the panel's "measure now")."""
    if appspace_id is None:
        return disk_measure_all()
    appspace = Appspace.objects.filter(pk=appspace_id).first()
    return int(appspace is not None and appspace_disk_measure(appspace=appspace) is not None)


@shared_task(ignore_result=True)
def usage_days_prune() -> int:
    return usage_prune()
