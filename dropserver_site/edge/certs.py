"""The state of the panel host's certificate, as /readyz reports it, and whether it is being
renewed (for the admins' notice).

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


def _panel_certificate() -> x509.Certificate | dict:
    """The certificate, or the state to report when there is none to read."""
    if not settings.DS_TLS_ON:
        return {"ok": True, "state": "off"}
    path = _panel_certificate_file()
    if path is None:
        return {"ok": True, "state": "pending"}
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return {"ok": False, "state": "unreadable"}


def panel_certificate_state(now: dt.datetime | None = None) -> dict:
    """{"ok": bool, "state": "off" | "pending" | "valid" | "expiring" | "expired" | "unreadable",
    and "not_after" when a certificate was read}."""
    cert = _panel_certificate()
    if isinstance(cert, dict):
        return cert
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


# Caddy renews a certificate it manages once a third of its lifetime is left (certmagic's
# default renewal window), retrying with backoff. Caddy exposes no renewal result that can be
# read reliably (its log is free text), but the certificate it serves can be: one with less than
# half that window left was due for renewal long enough ago that renewal is failing.
RENEWAL_OVERDUE_FRACTION = 1 / 6
FILES_WARN_DAYS = 14  # DS_TLS=files: the operator renews; warn this long before expiry


def panel_certificate_renewal(now: dt.datetime | None = None) -> dict:
    """{"ok": bool, "state": "off" | "pending" | "valid" | "overdue" | "expiring" | "expired" |
    "unreadable", and "not_after"}: "overdue" when Caddy should have renewed it by now,
    "expiring" when a certificate from DS_TLS_CERT expires within FILES_WARN_DAYS."""
    cert = _panel_certificate()
    if isinstance(cert, dict):
        return cert
    now = now or dt.datetime.now(dt.UTC)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = not_after - now
    if left <= dt.timedelta(0):
        state = "expired"
    elif settings.DS_TLS == "files":
        state = "expiring" if left <= dt.timedelta(days=FILES_WARN_DAYS) else "valid"
    else:
        overdue = left < (not_after - not_before) * RENEWAL_OVERDUE_FRACTION
        state = "overdue" if overdue else "valid"
    return {"ok": state == "valid", "state": state, "not_after": not_after.isoformat()}
