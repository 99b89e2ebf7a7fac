"""What the gateway records about each request: the appspace it was for, noted into the
request's log context as soon as the gateway knows it (dropserver_site/observe/access.py writes
the access line from that context), and once answered, the Prometheus counters
(appspaces/metrics.py) and the day's request count (appspaces/usage/requests.py).

Answers are added up in memory on the event loop and written to the Prometheus files once per
FLUSH_SECONDS, one update per (appspace, status) and per latency bucket: each update of a
multiprocess metric takes a lock and writes its file, three per request when done one by one,
which was a measurable share of a request's CPU (docs/benchmarks.md). A scrape sees a
request at most FLUSH_SECONDS after it was answered; a process killed in between loses that
second.
"""

from __future__ import annotations

import asyncio
import bisect

from appspaces.metrics import (
    REQUEST_BUCKETS,
    REQUEST_SECONDS,
    REQUESTS,
    UNKNOWN_APPSPACE,
    record,
)
from appspaces.usage.requests import tally
from packages.logcontext import request_context

FLUSH_SECONDS = 1.0
# The histogram's upper bounds, +Inf last: an answer of d seconds falls in the first bucket
# whose bound is >= d, as Histogram.observe places it.
_BOUNDS = (*REQUEST_BUCKETS, float("inf"))


def note(**fields) -> None:
    """Add to the current request's context (the gateway calls it once it knows which
    appspace, who and which route); a no-op outside a request."""
    context = request_context.get()
    if context is not None:
        context.update(fields)


def note_appspace(label: str | None, pk: int | None = None) -> None:
    """The request is for appspace `label` (None: a name no appspace holds)."""
    context = request_context.get()
    if context is not None:
        context["appspace"] = label if label is not None else UNKNOWN_APPSPACE
        context["appspace_pk"] = pk


class Answers:
    """Counts and latency buckets since the last flush (one per process: `answers`)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # bucket counts, then the sum of seconds
        self._timer: asyncio.TimerHandle | None = None

    def add(self, label: str, status: int, seconds: float) -> None:
        key = (label, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        row = self.latency.get(label)
        if row is None:
            row = self.latency[label] = [0] * len(_BOUNDS) + [0.0]
        row[bisect.bisect_left(_BOUNDS, seconds)] += 1
        row[-1] += seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write what was added to the metrics files (record(): a file that cannot be written
        is logged, never raised)."""
        self._timer = None
        counts, self.counts = self.counts, {}
        latency, self.latency = self.latency, {}
        for (label, status), n in counts.items():
            record(lambda label=label, status=status, n=n: REQUESTS.labels(label, status).inc(n))
        for label, row in latency.items():
            record(lambda label=label, row=row: _add_latency(REQUEST_SECONDS.labels(label), row))


def _add_latency(histogram, row: list[float]) -> None:
    # Histogram.observe() has no "n observations" form: add to its bucket and sum values,
    # as observe() does one at a time (tests/gateway/test_metrics.py compares the two).
    for bucket, n in zip(histogram._buckets, row[:-1], strict=True):
        if n:
            bucket.inc(n)
    histogram._sum.inc(row[-1])


answers = Answers()


def answered(context: dict, status: int, duration: float) -> None:
    """Count an answered request (dropserver_site/observe/access.py calls it for every
    request; those that never reached the gateway noted no appspace and are not counted)."""
    label = context.get("appspace")
    if label is None:
        return
    answers.add(label, status, duration)
    pk = context.get("appspace_pk")
    if pk is not None:
        tally.count(pk)  # the owner's requests-per-day chart
