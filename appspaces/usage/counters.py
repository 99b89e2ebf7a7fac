"""Usage counters to day rows: what each appspace used per UTC day (CPU, running time, memory,
IO), from the supervisor's cgroup counters.

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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from appspaces.models import Appspace, AppspaceUsageDay
from sandbox.instance import RUNNING

log = logging.getLogger(__name__)

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


def already_counted(kept: Any, sample: Sample) -> bool:
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


def add_to_day(
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
        add_to_day(appspace_pk, day, deltas, memory_peak=sample.memory_peak)
    return deltas


def usage_prune() -> int:
    cutoff = today() - dt.timedelta(days=settings.DS_USAGE_KEEP_DAYS)
    deleted, _ = AppspaceUsageDay.objects.filter(day__lt=cutoff).delete()
    return deleted
