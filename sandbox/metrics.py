"""The supervisor's Prometheus metrics (multiprocess files under PROMETHEUS_MULTIPROC_DIR, summed
by /metrics: dropserver_site/observe/metrics.py): how long each appspace sandbox took to start
and how many were stopped to make room. An appspace is its public id (the sandbox id); one-shot
sandboxes (install jobs) share "-", so the label set stays bounded."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)


def _make_dir() -> None:
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)


_make_dir()


def record(update: Callable[[], object]) -> None:
    """Apply a metric update; a metrics file that cannot be written (its folder removed, a
    full disk) never fails the work being measured: the update is logged and dropped."""
    try:
        try:
            update()
        except FileNotFoundError:  # the folder went away (emptied by hand, a test): once more
            _make_dir()
            update()
    except OSError as exc:
        log.warning("metrics: an update was dropped: %s", exc)


COLD_STARTS = Histogram(
    "dropserver_sandbox_start_seconds",
    "Sandbox starts (cold starts) and how long each took until the app was ready.",
    ["appspace_id"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30),
)
EVICTIONS = Counter(
    "dropserver_sandbox_evictions",
    "Running sandboxes stopped early to make room (the cap on running sandboxes, free memory).",
    ["reason"],
)


def sandbox_label(sandbox_id: str) -> str:
    try:
        return str(uuid.UUID(sandbox_id))
    except ValueError:
        return "-"
