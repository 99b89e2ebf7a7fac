"""Requests per appspace and day, for the usage charts.

Each web process counts the requests its gateway answered in memory (`tally.count`, a dict
increment on the event loop) and adds them to `AppspaceUsageDay.requests` at most every
DS_USAGE_REQUESTS_FLUSH_SECONDS, one UPDATE per appspace, in a thread off the event loop. A
process killed between two flushes loses at most that many seconds of counts: the day's
figure is for the owner's chart; the exact count is the Prometheus counter
`dropserver_appspace_requests`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, transaction
from django.db.models import F

from appspaces.models import AppspaceUsageDay
from appspaces.usage.counters import today

log = logging.getLogger(__name__)


def requests_add(counts: dict[int, int], day: dt.date | None = None) -> None:
    """Add `counts` (appspace pk -> requests) to the day's rows, creating rows as needed. An
    appspace deleted meanwhile is skipped."""
    day = day or today()
    for appspace_pk, n in counts.items():
        rows = AppspaceUsageDay.objects.filter(appspace_id=appspace_pk, day=day)
        if rows.update(requests=F("requests") + n):
            continue
        try:
            with transaction.atomic():
                AppspaceUsageDay.objects.create(appspace_id=appspace_pk, day=day, requests=n)
        except IntegrityError:  # created by another process meanwhile, or the appspace is gone
            rows.update(requests=F("requests") + n)


def _flush(counts: dict[int, int]) -> None:
    close_old_connections()
    try:
        requests_add(counts)
    except DatabaseError as exc:
        log.warning("request counts of %d appspaces lost: %s", len(counts), exc)
    finally:
        close_old_connections()


class RequestTally:
    """One per process: counts between flushes, and the one pending flush."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task] = set()
        self._seconds: float | None = None

    def count(self, appspace_pk: int) -> None:
        """Count one answered request; the first count after a flush schedules the next."""
        self._counts[appspace_pk] += 1
        if self._timer is None:
            if self._seconds is None:
                self._seconds = float(settings.DS_USAGE_REQUESTS_FLUSH_SECONDS)
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        counts, self._counts = dict(self._counts), Counter()
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_flush, counts))
        self._flushes.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(self._flushes.discard)


tally = RequestTally()
