"""Host names: the one normalisation of a typed or configured host name (UTS #46 / IDNA 2008, as
browsers and Deno do), what counts as a development domain, and which site a Host header
belongs to."""

from __future__ import annotations

import enum
import re

from packages.hostnames import idna_hostname

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Site(enum.Enum):
    PANEL = "panel"
    APPSPACE = "appspace"
    UNKNOWN = "unknown"


def normalize_host(host: str) -> str:
    """A configured host name (DS_DOMAIN, DS_PANEL_HOST) in its ASCII form; HostnameError if
    it is not one. Ports are not part of a host name here."""
    host = host.strip()
    if host.isascii() and "xn--" not in host.lower():
        return host.lower().rstrip(".")  # the common case, without the IDNA tables
    return idna_hostname(host)


def is_dev_domain(domain: str) -> bool:
    """Development domains resolve to loopback in browsers and never get certificates."""
    return domain == "localhost" or domain.endswith(".localhost")


def is_dns_label(label: str) -> bool:
    return bool(_LABEL.match(label))


def split_host_header(value: str) -> str:
    """The host name from a Host header value ("Name:8000" -> "name"), or "" if malformed."""
    value = value.strip()
    if value.startswith("["):  # IPv6 literals are never ours
        return ""
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return ""
    if not name.isascii():  # browsers send the ASCII (punycode) form; anything else is not ours
        return ""
    return name.lower().rstrip(".")


def classify_host(host: str, *, domain: str, panel_host: str) -> tuple[Site, str]:
    """Which site a host name is for, and for appspaces the subdomain label.

    Only a single label directly under the domain is an appspace; nested names
    (a.b.<domain>) are unknown, so an appspace can never shadow another's cookies.
    """
    if host == panel_host:
        return Site.PANEL, ""
    suffix = "." + domain
    if host.endswith(suffix):
        label = host[: -len(suffix)]
        if is_dns_label(label):
            return Site.APPSPACE, label
    return Site.UNKNOWN, ""
