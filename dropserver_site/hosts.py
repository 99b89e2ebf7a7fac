"""Host names: the one normalisation of a typed or configured host name (UTS #46 / IDNA 2008, as
browsers and Deno do), what counts as a development domain, and which site a Host header
belongs to."""

from __future__ import annotations

import enum
import re

import idna

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Site(enum.Enum):
    PANEL = "panel"
    APPSPACE = "appspace"
    UNKNOWN = "unknown"


class HostnameError(ValueError):
    """A host name that is not one; str() is a sentence for the user."""


def idna_hostname(text: str) -> str:
    """A host name as browsers (the WHATWG URL parser) and Deno reach it: UTS #46 mapping
    (case, full-width forms, the ideographic full stop), then IDNA 2008 (the `idna` package),
    so `faß.de` is `xn--fa-hia.de` and not IDNA 2003's `fass.de`, a final sigma stays a final
    sigma, and joiners outside their context are refused rather than dropped. No trailing dot.
    Plain ASCII names are only lower-cased here; callers check their labels."""
    host = text.strip()
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise HostnameError(f"{host[:100]!r} is not a valid host name: {exc}") from None
    mapped = mapped.rstrip(".")
    if not mapped:
        raise HostnameError("the host name is empty")
    if mapped.isascii() and "xn--" not in mapped:
        return mapped
    try:
        return idna.encode(mapped, uts46=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise HostnameError(
            f"{host[:100]!r} is not a valid international domain name: {exc}"
        ) from None


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
