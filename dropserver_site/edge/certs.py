"""The state of the panel host's certificate, as /readyz reports it.

`pending` (no certificate yet: on-demand TLS obtains it at the first visit) does not fail
readiness, or a load balancer that waits for ready would never send the visit that gets it;
an expired certificate (or one within DS_READY_CERT_DAYS of expiring) and one that cannot be
read do.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from django.conf import settings

from dropserver_site.edge.caddy import storage_dir


def _panel_certificate_file() -> Path | None:
    if settings.DS_TLS == "files":
        return Path(settings.DS_TLS_CERT)
    host = settings.DS_PANEL_HOST
    found = sorted((storage_dir() / "certificates").glob(f"*/{host}/{host}.crt"))
    return found[0] if found else None


def panel_certificate_state(now: dt.datetime | None = None) -> dict:
    """{"ok": bool, "state": "off" | "pending" | "valid" | "expiring" | "expired" | "unreadable",
    and "not_after" when a certificate was read}."""
    if not settings.DS_TLS_ON:
        return {"ok": True, "state": "off"}
    path = _panel_certificate_file()
    if path is None:
        return {"ok": True, "state": "pending"}
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return {"ok": False, "state": "unreadable"}
    now = now or dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    margin = dt.timedelta(days=settings.DS_READY_CERT_DAYS)
    if not_after <= now:
        state = "expired"
    elif not_after <= now + margin:
        state = "expiring"
    else:
        state = "valid"
    return {"ok": state == "valid", "state": state, "not_after": not_after.isoformat()}
