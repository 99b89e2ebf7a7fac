"""The TLS settings in `manage.py check --deploy` (the combinations settings.py refuses outright
never get this far): what would only fail once the edge starts or a browser connects.

E010: DS_TLS is on and Caddy is missing. E011: DS_TLS=files and the certificate cannot be read,
has expired, or does not cover the panel host and the appspace hosts. W010: DS_TLS=off on a
public domain with no DS_BEHIND_PROXY: nothing terminates TLS. W011: DS_TLS=internal on a
public domain: browsers do not trust Caddy's local CA.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from dropserver_site.edge.caddy import caddy_available
from dropserver_site.hosts import is_dev_domain


def _covers(names: list[str], host: str) -> bool:
    for name in names:
        name = name.lower()
        if name == host or (
            name.startswith("*.") and host.count(".") == name.count(".") and host.endswith(name[1:])
        ):
            return True
    return False


def _files_problem() -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(Path(settings.DS_TLS_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        return f"DS_TLS_CERT ({settings.DS_TLS_CERT}) is not a readable PEM certificate: {exc}"
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        return f"DS_TLS_CERT expired on {cert.not_valid_after_utc:%Y-%m-%d}."
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = sans.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    for host in (settings.DS_PANEL_HOST, f"appspace.{settings.DS_DOMAIN}"):
        if not _covers(names, host):
            return (
                f"DS_TLS_CERT does not cover {host} (it names {', '.join(names) or 'nothing'}): "
                f"use a certificate for *.{settings.DS_DOMAIN}."
            )
    return None


@register(Tags.security, deploy=True)
def check_tls(app_configs=None, **kwargs):
    found = []
    public = not is_dev_domain(settings.DS_DOMAIN)
    if settings.DS_TLS_ON and (reason := caddy_available()):
        found.append(Error(reason, id="dropserver.E010"))
    if settings.DS_TLS == "files" and (problem := _files_problem()):
        found.append(Error(problem, id="dropserver.E011"))
    if settings.DS_TLS == "off" and public and not settings.DS_TRUST_PROXY_HEADERS:
        found.append(
            Warning(
                "DS_TLS=off on a public domain and no DS_BEHIND_PROXY: nothing serves https.",
                hint="Leave DS_TLS unset (acme), or set DS_BEHIND_PROXY=1 behind your own proxy.",
                id="dropserver.W010",
            )
        )
    if settings.DS_TLS == "internal" and public:
        found.append(
            Warning(
                "DS_TLS=internal on a public domain: browsers will not trust the local CA.",
                hint="Use DS_TLS=acme, or hand out DS_DATA_DIR/tls/internal-root.crt.",
                id="dropserver.W011",
            )
        )
    return found
