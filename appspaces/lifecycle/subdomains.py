"""Appspace subdomains: which names an owner may choose for `<name>.<DS_DOMAIN>`.

One DNS label, lower-case (what people type is mapped as browsers map a host name, UTS #46:
upper case and full-width letters fold to a-z; DNS ignores case),
letters, digits and inner hyphens, at most 63 characters. No dots: every appspace is a single
label under DS_DOMAIN, so no name can sit under another appspace's (or the panel's). Refused:
names reserved by the instance (DS_RESERVED_SUBDOMAINS) and the label the panel lives under;
`xx--` names (punycode, "xn--", can spell look-alikes of other names); names already taken;
names freed recently by another owner's appspace (appspaces/lifecycle/quarantine.py).
"""

from __future__ import annotations

import re
from datetime import UTC

import idna
from django.conf import settings

from appspaces.lifecycle.quarantine import quarantined_until
from appspaces.models import Appspace

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class SubdomainError(ValueError):
    """A name that cannot be used; str() is the reason, for a human."""


def panel_label() -> str:
    """The label under DS_DOMAIN that the panel's host uses (`dropid` of dropid.example.com;
    `x` of panel.x.example.com)."""
    panel, domain = settings.DS_PANEL_HOST, settings.DS_DOMAIN
    inner = panel[: -len(domain) - 1] if panel.endswith("." + domain) else panel
    return inner.rsplit(".", 1)[-1]


def reserved_subdomains() -> set[str]:
    return {name.strip().lower() for name in settings.DS_RESERVED_SUBDOMAINS} | {panel_label()}


def subdomain_normalize(text: str) -> str:
    """The name as it will be stored, or SubdomainError saying why it cannot be one."""
    if not isinstance(text, str):
        raise SubdomainError("Choose a name.")
    try:
        name = idna.uts46_remap(text.strip(), std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError):
        name = text.strip().lower()  # refused below: not letters a-z, digits and hyphens
    suffix = "." + settings.DS_DOMAIN
    if name.endswith(suffix):  # people paste the whole address
        name = name[: -len(suffix)]
    if not name:
        raise SubdomainError("Choose a name.")
    if "." in name:
        raise SubdomainError(
            "Use a single name without dots: every appspace gets its own name directly under "
            f"{settings.DS_DOMAIN}."
        )
    if len(name) > 63:
        raise SubdomainError("Use at most 63 characters.")
    if not name.isascii() or not _LABEL.match(name):
        raise SubdomainError(
            "Use only letters a-z, digits and hyphens, starting and ending with a letter or "
            "a digit."
        )
    if name[2:4] == "--":
        raise SubdomainError("Names with two hyphens in the third and fourth place are reserved.")
    if name in reserved_subdomains():
        raise SubdomainError(f"“{name}” is reserved on this Dropserver; choose another name.")
    return name


def subdomain_check_available(text: str, *, owner=None, exclude_pk: int | None = None) -> str:
    """subdomain_normalize, and SubdomainError if an appspace already has the name, or if it
    is quarantined for `owner` (None: for anyone)."""
    name = subdomain_normalize(text)
    taken = Appspace.objects.filter(subdomain=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise SubdomainError(f"{name}.{settings.DS_DOMAIN} is taken; choose another name.")
    until = quarantined_until(name, owner=owner)
    if until is not None:
        raise SubdomainError(
            f"{name}.{settings.DS_DOMAIN} belonged to an appspace that was deleted recently, so "
            f"it is kept free until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC (its old visitors "
            "may still come to it); choose another name, or ask an administrator to release it."
        )
    return name
