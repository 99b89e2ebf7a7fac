"""The instance's conditions for admins: low free disk under DS_DATA_DIR (below
DS_NOTICE_MIN_FREE_MB) and a TLS certificate that is not being renewed.

The certificate is read from what Caddy stores (edge/certs.py): there is no renewal result to
read, so a certificate past the point where Caddy renews it (or expired, or unreadable) is the
signal. Only the panel host's certificate is watched; appspace hosts get theirs on demand.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

from django.conf import settings
from django.urls import reverse

from accounts.notices.kinds import ADMINS, Condition, register
from dropserver_site.edge.certs import panel_certificate_renewal

MB = 1024 * 1024


@register("admin_disk", "Free disk space under the data directory is low", ADMINS)
def disk_low() -> Iterator[Condition]:
    free_mb = shutil.disk_usage(settings.DS_DATA_DIR).free // MB
    if free_mb < settings.DS_NOTICE_MIN_FREE_MB:
        yield Condition(
            key="data-dir",
            title=f"Only {free_mb} MB free under the data directory",
            detail=f"Below {settings.DS_NOTICE_MIN_FREE_MB} MB. Appspace data, backups and "
            f"uploads share this disk; /readyz fails below {settings.DS_READY_MIN_FREE_MB} MB.",
            path=reverse("admin:index"),
        )


_WHY = {
    "overdue": "It should have been renewed by now: renewal is failing (see Caddy's log).",
    "expiring": "It comes from DS_TLS_CERT: replace the file and restart `serve`.",
    "expired": "Browsers refuse the panel now.",
    "unreadable": "The certificate file could not be read.",
}


@register("admin_certificate", "The TLS certificate is not being renewed", ADMINS)
def certificate() -> Iterator[Condition]:
    state = panel_certificate_renewal()
    if state["state"] in _WHY:
        until = f" (valid until {state['not_after'][:16]} UTC)" if "not_after" in state else ""
        yield Condition(
            key=f"certificate:{settings.DS_PANEL_HOST}",
            title=f"The certificate of {settings.DS_PANEL_HOST} is {state['state']}{until}",
            detail=_WHY[state["state"]],
            path=reverse("admin:index"),
        )
