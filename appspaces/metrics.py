"""The Prometheus metrics that processes record as things happen (prometheus-client in
multiprocess mode: each process writes its own files under PROMETHEUS_MULTIPROC_DIR, set from
DS_DATA_DIR by settings.py, and /metrics sums them; dropserver_site/observe/metrics.py serves
them with the figures read from the database and the supervisor at scrape time).

Labels stay bounded: an appspace is its subdomain (or "-" for names that are no appspace),
a status is the HTTP code, a job kind is one of Job.Kind; never a user id or a path.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from sandbox.metrics import record

__all__ = [
    "JOB_SECONDS",
    "REQUESTS",
    "REQUEST_BUCKETS",
    "REQUEST_SECONDS",
    "UNKNOWN_APPSPACE",
    "record",
]

UNKNOWN_APPSPACE = "-"

REQUESTS = Counter(
    "dropserver_appspace_requests",
    "Requests to appspace hosts, by appspace and response status (0: no response sent).",
    ["appspace", "status"],
)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
REQUEST_SECONDS = Histogram(
    "dropserver_appspace_request_duration_seconds",
    "Time from a request's arrival at the gateway to the end of its response.",
    ["appspace"],
    buckets=REQUEST_BUCKETS,
)
JOB_SECONDS = Histogram(
    "dropserver_job_duration_seconds",
    "Jobs (installs, creations, migrations, backups, restores) from creation to their end.",
    ["kind", "state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
