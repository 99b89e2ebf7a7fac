"""The periodic usage collection: every running appspace sandbox sampled once (plus the last
moments of runs that ended since), its data dir measured when due, and sandboxes whose data
turned read-only or writable restarted with their new spec."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from appspaces.models import Appspace
from appspaces.usage.counters import Sample, already_counted, usage_record
from appspaces.usage.quota import appspace_disk_measure, sandbox_respec
from sandbox.client import SandboxClient
from sandbox.instance import RUNNING
from sandbox.protocol import SandboxError

log = logging.getLogger(__name__)


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
        if sample is not None and not already_counted(appspace.usage_counters, sample):
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
