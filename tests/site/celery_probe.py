"""A task for the queue tests only (workers load it with --include): it holds its worker until
a file appears, standing in for a long restore."""

from __future__ import annotations

import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.hold_until")
def hold_until(started: str, release: str) -> str:
    Path(started).touch()
    while not Path(release).exists():
        time.sleep(0.05)
    return "released"
