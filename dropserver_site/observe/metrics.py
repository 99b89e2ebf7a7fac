"""`/metrics` on the panel host: the Prometheus exposition of this instance.

Two sources: what processes recorded as it happened (appspaces/metrics.py, summed over the
multiprocess files), and `StateCollector`, which reads the current state at scrape time —
appspaces by status and quota state, disk, today's CPU and memory peak, the age of each
appspace's last good backup, jobs waiting or running by kind, sandboxes by supervisor state.

Access: a client whose socket peer is loopback and whose request no proxy forwarded (no
X-Forwarded-For or Forwarded header: the TLS edge adds one to everything it proxies; and not at
all when DS_BEHIND_PROXY says a proxy of the operator's on this host forwards everyone), or one
presenting `Authorization: Bearer <DS_METRICS_TOKEN>` (compared in constant time). Anyone else
gets the same 404 as an unknown page.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
import uuid

from django.conf import settings
from django.db.models import Count, Max
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from appspaces.models import Appspace, AppspaceUsageDay, Job
from backups.models import Backup
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError

log = logging.getLogger(__name__)

SUPERVISOR_TIMEOUT = 2.0


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"dropserver_{name}", doc, labels=labels)


class StateCollector:
    """Figures read at scrape time (one process answers, so no multiprocess files)."""

    def collect(self):
        appspaces = list(
            Appspace.objects.values(
                "pk", "public_id", "subdomain", "status", "disk_bytes", "disk_mb", "data_readonly"
            )
        )
        names = {a["pk"]: a["subdomain"] for a in appspaces}
        by_id = {str(a["public_id"]): a["subdomain"] for a in appspaces}

        status = _gauge("appspaces", "Appspaces by status.", ["status"])
        counts = {s: 0 for s in Appspace.Status.values}
        for a in appspaces:
            counts[a["status"]] = counts.get(a["status"], 0) + 1
        for name, n in sorted(counts.items()):
            status.add_metric([name], n)
        yield status

        disk = _gauge("appspace_disk_bytes", "Disk used by an appspace's data.", ["appspace"])
        quota = _gauge("appspace_disk_quota_bytes", "An appspace's disk quota.", ["appspace"])
        readonly = _gauge(
            "appspace_over_quota", "1 while an appspace's data is read-only (over quota).",
            ["appspace"],
        )  # fmt: skip
        for a in appspaces:
            disk.add_metric([a["subdomain"]], a["disk_bytes"])
            quota.add_metric([a["subdomain"]], a["disk_mb"] * 1024 * 1024)
            readonly.add_metric([a["subdomain"]], int(a["data_readonly"]))
        yield from (disk, quota, readonly)

        cpu = _gauge("appspace_cpu_seconds_today", "CPU time used today (UTC).", ["appspace"])
        memory = _gauge(
            "appspace_memory_peak_bytes_today", "Highest memory use today (UTC).", ["appspace"]
        )
        for row in AppspaceUsageDay.objects.filter(day=timezone.now().date()).values(
            "appspace_id", "cpu_seconds", "memory_peak_bytes"
        ):
            if name := names.get(row["appspace_id"]):
                cpu.add_metric([name], row["cpu_seconds"])
                memory.add_metric([name], row["memory_peak_bytes"])
        yield from (cpu, memory)

        backup_age = _gauge(
            "appspace_last_backup_age_seconds",
            "Seconds since an appspace's last successful backup (absent: never backed up).",
            ["appspace"],
        )
        now = timezone.now()
        for row in (
            Backup.objects.filter(state=Backup.State.READY, appspace__isnull=False)
            .values("appspace_id")
            .annotate(last=Max("finished"))
        ):
            if (name := names.get(row["appspace_id"])) and row["last"]:
                backup_age.add_metric([name], (now - row["last"]).total_seconds())
        yield backup_age

        jobs = _gauge("jobs", "Jobs not yet finished, by kind and state.", ["kind", "state"])
        waiting = {(k, s): 0 for k in Job.Kind.values for s in ("queued", "running")}
        for row in (
            Job.objects.filter(state__in=[Job.State.QUEUED, Job.State.RUNNING])
            .values("kind", "state")
            .annotate(n=Count("pk"))
        ):
            waiting[(row["kind"], row["state"])] = row["n"]
        for (kind, state), n in sorted(waiting.items()):
            jobs.add_metric([kind, state], n)
        yield jobs

        yield from self._sandboxes(by_id)

    def _sandboxes(self, by_id: dict[str, str]):
        up = _gauge("supervisor_up", "1 when the sandbox supervisor answered.", [])
        try:
            with SandboxClient(timeout=SUPERVISOR_TIMEOUT) as client:
                listing = client.list()
        except (OSError, SandboxError) as exc:
            log.info("metrics: the supervisor did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = _gauge("sandboxes", "Appspace sandboxes by supervisor state.", ["state"])
        crashes = _gauge(
            "appspace_sandbox_crashes", "Recent crashes of an appspace's sandbox.", ["appspace"]
        )
        counts: dict[str, int] = {}
        for entry in listing:
            try:
                name = by_id.get(str(uuid.UUID(str(entry.get("id")))))
            except ValueError:
                continue  # an install job's one-shot sandbox
            state = str(entry.get("state"))
            counts[state] = counts.get(state, 0) + 1
            if name:
                crashes.add_metric([name], int(entry.get("crashes") or 0))
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        yield from (states, crashes)


def allowed(peer: str, authorization: str, forwarded: bool = False) -> bool:
    """May this client read /metrics? `peer` is the socket's address as Daphne saw it;
    `forwarded`: the request carries a proxy's forwarding header."""
    token = settings.DS_METRICS_TOKEN
    offered = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
    if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    if forwarded or not settings.DS_METRICS_LOOPBACK:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    reg.register(StateCollector())
    return reg


@require_GET
def metrics_view(request):
    forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    authorization = request.headers.get("Authorization", "")
    if not allowed(request.META.get("REMOTE_ADDR", ""), authorization, forwarded):
        raise Http404()
    start = time.perf_counter()
    body = generate_latest(registry())
    log.debug("metrics: %d bytes in %.3fs", len(body), time.perf_counter() - start)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
