"""Health endpoints: /healthz (liveness) and /readyz (readiness), JSON, no authentication.

/healthz answers 200 whenever the process answers. /readyz checks what a request needs:
the database, the Celery broker, the sandbox supervisor, free disk under DS_DATA_DIR
(DS_READY_MIN_FREE_MB) and, with DS_TLS on, the panel host's certificate; 200 when all pass,
503 otherwise. Bodies name each check and say ok or not, never an address, a URL or an error
text (those go to the log), so they tell a stranger nothing about the instance.

Served on the panel host (Django views, exempt from the https redirect) and on Daphne's
loopback address for local probes (edge/ask.py).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from dropserver_site.edge.certs import panel_certificate_state

log = logging.getLogger(__name__)


def liveness() -> dict:
    return {"status": "ok"}


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def check_broker() -> dict:
    from kombu import Connection

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=options,
        connect_timeout=settings.DS_READY_TIMEOUT,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.DS_READY_TIMEOUT)
        _ = conn.default_channel  # the transport's own round trip (Redis: PING)
    return {"ok": True}


def check_supervisor() -> dict:
    from sandbox.client import SandboxClient

    with SandboxClient(timeout=settings.DS_READY_TIMEOUT) as client:
        client.ping()
    return {"ok": True}


def check_disk() -> dict:
    settings.DS_DATA_DIR.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(settings.DS_DATA_DIR).free // (1024 * 1024)
    return {"ok": free_mb >= settings.DS_READY_MIN_FREE_MB}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": check_database,
    "broker": check_broker,
    "supervisor": check_supervisor,
    "disk": check_disk,
    "certificate": panel_certificate_state,
}


def readiness() -> tuple[int, dict]:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception:  # any failure is "not ready"; the details go to the log only
            log.warning("readiness check %s failed", name, exc_info=True)
            results[name] = {"ok": False}
    ready = all(r["ok"] for r in results.values())
    return (200 if ready else 503), {"status": "ok" if ready else "fail", "checks": results}


@never_cache
@require_safe
def healthz(request):
    return JsonResponse(liveness())


@never_cache
@require_safe
def readyz(request):
    status, body = readiness()
    return JsonResponse(body, status=status)
