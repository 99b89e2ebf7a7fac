"""An appspace's network allowlist as its owner manages it: adding and removing entries, how
each is described and what it risks.

Nothing reaches the network without the owner: the allowlist starts with what they accepted of
the app's suggestions at creation, then grows by what the owner types or approves (refused
connections: blocked.py; what the app asked for: requests.py). Every entry, typed or approved,
goes through the allowlist's one validator here, and a change of the server side restarts the
sandbox with it.
"""

from __future__ import annotations

import ipaddress
import logging

from django.db import IntegrityError, transaction

from appspaces.jobs import enqueue_on_commit
from appspaces.models import AllowlistEntry, Appspace, BlockedConnection
from appspaces.sandboxes import parse_server_entry
from packages.allowlist import (
    AllowlistError,
    BrowserOrigin,
    ServerEntry,
    normalize_hostname,
    parse_browser_origin,
)

log = logging.getLogger(__name__)

DNS_PORT = 53


class RiskyEntry(AllowlistError):
    """An entry the owner must confirm knowing what it allows (`warnings`)."""

    def __init__(self, warnings: list[str]):
        super().__init__(" ".join(warnings))
        self.warnings = warnings


# --- Plain words ----------------------------------------------------------------------------


def describe_server_entry(entry: ServerEntry) -> str:
    if entry.instance:
        return (
            f"The app's server code may send requests to the appspace at {entry.host}, through "
            "this server's gateway, as an anonymous visitor: that appspace's own access rules "
            "apply (its public pages, or a credential its app gives out)."
        )
    if entry.is_ip:
        where = f"the address {entry.host}"
    elif entry.wildcard:
        where = f"{entry.host} and any name under it (such as www.{entry.host})"
    else:
        where = entry.host
    port = f", on port {entry.port} only" if entry.port else ", on any port"
    return f"The app's server code may connect to {where}{port}."


def describe_browser_origin(origin: BrowserOrigin) -> str:
    site = (
        f"any site under {origin.host} (not {origin.host} itself)"
        if origin.wildcard
        else str(origin)
    )
    return (
        f"Pages of this appspace may load scripts, styles, images and fonts from {site}, and "
        "send it requests. Visitors' browsers contact it directly, so it sees their address and "
        "which pages they open."
    )


def server_entry_warnings(entry: ServerEntry) -> list[str]:
    """What the owner should know before allowing this entry (see docs/sandbox.md, DNS)."""
    warnings = []
    if entry.port == DNS_PORT or (entry.is_ip and entry.port is None):
        warnings.append(
            f"Port {DNS_PORT} is DNS: allowing {entry} lets the app ask that server about any "
            "name, which can carry data out to any domain's name servers."
        )
    if entry.wildcard:
        warnings.append(
            f"{entry} lets the app pick any name under {entry.host}: its DNS look-ups can carry "
            f"data to {entry.host}'s name servers. Allow single names where you can."
        )
    return warnings


def browser_origin_warnings(origin: BrowserOrigin) -> list[str]:
    if origin.wildcard:
        return [f"{origin} covers every site under {origin.host}, including ones made later."]
    return []


def allowlist_rows(appspace: Appspace) -> dict[str, list[dict]]:
    """The appspace's entries, each with its explanation, server and browser apart."""
    rows: dict[str, list[dict]] = {"server": [], "browser": []}
    for entry in appspace.allowlist.all():
        row = {"entry": entry, "description": "", "warnings": []}
        try:
            if entry.kind == AllowlistEntry.Kind.SERVER:
                parsed = parse_server_entry(entry.value)
                row["description"] = describe_server_entry(parsed)
                row["warnings"] = server_entry_warnings(parsed)
            else:
                origin = parse_browser_origin(entry.value)
                row["description"] = describe_browser_origin(origin)
                row["warnings"] = browser_origin_warnings(origin)
        except AllowlistError as exc:
            row["description"] = f"Not applied: {exc}."
        rows.setdefault(entry.kind, []).append(row)
    return rows


def suggestion_rows(suggested: dict) -> dict[str, list[dict]]:
    """An app version's suggested entries, explained; ones the validator refuses say why."""
    rows: dict[str, list[dict]] = {"server": [], "browser": []}
    for kind, parse, describe, warn in (
        ("server", parse_server_entry, describe_server_entry, server_entry_warnings),
        ("browser", parse_browser_origin, describe_browser_origin, browser_origin_warnings),
    ):
        for value in suggested.get(kind) or []:
            try:
                parsed = parse(value)
            except AllowlistError as exc:
                rows[kind].append({"value": str(value), "error": str(exc)})
                continue
            rows[kind].append(
                {
                    "value": str(parsed),
                    "description": describe(parsed),
                    "warnings": warn(parsed),
                }
            )
    return rows


# --- The owner's edits ----------------------------------------------------------------------


def _refresh_sandbox(appspace: Appspace) -> None:
    enqueue_on_commit("appspaces.tasks.appspace_sandbox_refresh", appspace.pk, robust=True)


def allowlist_entry_add(
    *, appspace: Appspace, kind: str, value: str, confirm_risky: bool = False
) -> AllowlistEntry:
    """Allow one more host (server) or origin (browser). Raises AllowlistError saying why not,
    or RiskyEntry unless `confirm_risky`. A server entry restarts a running sandbox."""
    if kind == AllowlistEntry.Kind.SERVER:
        parsed: ServerEntry | BrowserOrigin = parse_server_entry(value)
        warnings = server_entry_warnings(parsed)
    elif kind == AllowlistEntry.Kind.BROWSER:
        parsed = parse_browser_origin(value)
        warnings = browser_origin_warnings(parsed)
    else:
        raise AllowlistError("Choose server or browser.")
    if warnings and not confirm_risky:
        raise RiskyEntry(warnings)
    text = str(parsed)
    try:
        with transaction.atomic():
            entry = AllowlistEntry.objects.create(appspace=appspace, kind=kind, value=text)
    except IntegrityError:
        raise AllowlistError(f"{text} is already allowed.") from None
    appspace.touch_config()  # other processes' gateways (CSP) and the sandbox spec's generation
    if kind == AllowlistEntry.Kind.SERVER:
        BlockedConnection.objects.filter(
            pk__in=[b.pk for b in appspace.blocked.all() if covered_by(b, [parsed])]
        ).delete()
        _refresh_sandbox(appspace)
    return entry


def allowlist_entry_remove(*, entry: AllowlistEntry) -> None:
    appspace, kind = entry.appspace, entry.kind
    entry.delete()
    appspace.touch_config()
    if kind == AllowlistEntry.Kind.SERVER:
        _refresh_sandbox(appspace)


def server_entries(appspace: Appspace) -> list[ServerEntry]:
    """The appspace's server entries as parsed allowlist entries (unparseable rows skipped)."""
    out = []
    for value in appspace.allowlist.filter(kind=AllowlistEntry.Kind.SERVER).values_list(
        "value", flat=True
    ):
        try:
            out.append(parse_server_entry(value))
        except AllowlistError:
            continue
    return out


def _canonical_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        pass
    try:
        return normalize_hostname(host)
    except AllowlistError:
        return host.strip().lower()


def covered_by(blocked: BlockedConnection, entries: list) -> bool:
    """Whether one of these server entries allows what was refused."""
    host = _canonical_host(blocked.host)
    return any(e.matches(host, blocked.port or 0) for e in entries)
