"""An appspace's network allowlist as its owner manages it, and the approvals of connections its
sandbox refused.

Nothing reaches the network without the owner: the allowlist starts with what they accepted of
the app's suggestions at creation; each outbound attempt the sandbox blocks is recorded by the
supervisor (per host:port: count, first and last time), pulled here into BlockedConnection rows
(every minute by Celery beat, and when the owner opens the appspace's page), and shown to the
owner, who approves it (an allowlist entry `host:port`; the sandbox restarts with it) or
dismisses it. Every entry, typed or approved, goes through the allowlist's one validator.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import uuid

from django.db import IntegrityError, transaction
from django.utils import timezone

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
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound

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
            pk__in=[b.pk for b in appspace.blocked.all() if _covered_by(b, [parsed])]
        ).delete()
        _refresh_sandbox(appspace)
    return entry


def allowlist_entry_remove(*, entry: AllowlistEntry) -> None:
    appspace, kind = entry.appspace, entry.kind
    entry.delete()
    appspace.touch_config()
    if kind == AllowlistEntry.Kind.SERVER:
        _refresh_sandbox(appspace)


# --- Blocked connections --------------------------------------------------------------------


def _canonical_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        pass
    try:
        return normalize_hostname(host)
    except AllowlistError:
        return host.strip().lower()


def _covered_by(blocked: BlockedConnection, entries: list) -> bool:
    host = _canonical_host(blocked.host)
    return any(e.matches(host, blocked.port or 0) for e in entries)


def _server_entries(appspace: Appspace) -> list[ServerEntry]:
    out = []
    for value in appspace.allowlist.filter(kind=AllowlistEntry.Kind.SERVER).values_list(
        "value", flat=True
    ):
        try:
            out.append(parse_server_entry(value))
        except AllowlistError:
            continue
    return out


def _when(value) -> dt.datetime | None:
    """The supervisor's times: ISO 8601 strings (Unix times are accepted too)."""
    try:
        if isinstance(value, str):
            when = dt.datetime.fromisoformat(value)
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def blocked_connections_record(*, appspace: Appspace, reported: list[dict]) -> int:
    """Merge the supervisor's table into the appspace's rows. Its counts run since it started
    (`first` marks that run), so only what happened since the last pull is added; what the
    allowlist now covers is dropped. -> how many rows changed."""
    allowed = _server_entries(appspace)
    existing = {(b.host, b.port): b for b in appspace.blocked.all()}
    changed = 0
    for item in reported[:500]:
        host = str(item.get("host") or "")[:255].lower()
        port = item.get("port")
        port = port if isinstance(port, int) and 0 < port < 65536 else None
        count = item.get("count")
        count = count if isinstance(count, int) and count > 0 else 1
        first_seen = _when(item.get("first")) or timezone.now()
        last_seen = _when(item.get("last")) or first_seen
        # Marks the supervisor's run: its `first` of an entry never changes within one run.
        first = first_seen.timestamp() if _when(item.get("first")) else None
        if not host:
            continue
        row = existing.get((host, port))
        probe = row or BlockedConnection(appspace=appspace, host=host, port=port)
        if _covered_by(probe, allowed):
            if row is not None:
                row.delete()
            continue
        if row is None:
            BlockedConnection.objects.get_or_create(
                appspace=appspace,
                host=host,
                port=port,
                defaults={
                    "count": count,
                    "first_seen": first_seen,
                    "last_seen": last_seen,
                    "source_first": first,
                    "source_count": count,
                },
            )
            changed += 1
            continue
        same_run = row.source_first is not None and first == row.source_first
        added = count - row.source_count if same_run else count
        if added <= 0 and same_run:
            continue
        row.count += max(added, 0)
        row.last_seen = max(row.last_seen, last_seen)
        row.source_first, row.source_count = first, count
        row.save(update_fields=["count", "last_seen", "source_first", "source_count"])
        changed += 1
    return changed


def blocked_connections_pull(*, appspace: Appspace, client: SandboxClient | None = None) -> int:
    """Ask the supervisor what the appspace's sandbox was refused, and what the app asked for
    (requests.app_requests_pull); 0 if it knows nothing
    (never started since the supervisor started) or does not answer."""
    from appspaces.network.requests import app_requests_pull  # it builds on this module

    own = client is None
    client = client or SandboxClient(timeout=5)
    try:
        reported = client.blocked(str(appspace.public_id))
        asked = app_requests_pull(appspace=appspace, client=client)
    except SandboxNotFound:
        return 0
    except SandboxError as exc:
        log.info("blocked connections of %s not pulled: %s", appspace, exc)
        return 0
    finally:
        if own:
            client.close()
    return asked + blocked_connections_record(appspace=appspace, reported=reported or [])


def blocked_connections_collect() -> int:
    """For Celery beat: pull the table of every sandbox the supervisor knows."""
    client = SandboxClient(timeout=10)
    try:
        try:
            known = {entry["id"] for entry in client.list()}
        except SandboxError:
            return 0
        changed = 0
        for appspace in Appspace.objects.filter(
            public_id__in=[i for i in known if _is_uuid(i)]
        ).exclude(status=Appspace.Status.CREATING):
            changed += blocked_connections_pull(appspace=appspace, client=client)
        return changed
    finally:
        client.close()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except (TypeError, ValueError):
        return False


def blocked_entry_text(blocked: BlockedConnection) -> str:
    """The allowlist entry approving it: `host:port` (`[v6]:port`)."""
    host = blocked.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{blocked.port}" if blocked.port else host


def blocked_connection_check(blocked: BlockedConnection) -> tuple[ServerEntry | None, str]:
    """(the entry approving it, "") or (None, why it cannot be allowed)."""
    try:
        return parse_server_entry(blocked_entry_text(blocked)), ""
    except AllowlistError as exc:
        return None, str(exc)


def blocked_connection_approve(
    *, blocked: BlockedConnection, confirm_risky: bool = False
) -> AllowlistEntry:
    """Allow what was refused (this host, this port); raises AllowlistError if it can never be
    allowed (a private address...), RiskyEntry unless confirmed. The sandbox restarts with it."""
    return allowlist_entry_add(
        appspace=blocked.appspace,
        kind=AllowlistEntry.Kind.SERVER,
        value=blocked_entry_text(blocked),
        confirm_risky=confirm_risky,
    )


def blocked_connection_dismiss(*, blocked: BlockedConnection) -> None:
    """Hide it from the list of things to decide on; it stays refused."""
    blocked.dismissed = True
    blocked.save(update_fields=["dismissed"])


def blocked_rows(appspace: Appspace) -> list[dict]:
    rows = []
    for blocked in appspace.blocked.all():
        entry, reason = blocked_connection_check(blocked)
        rows.append(
            {
                "blocked": blocked,
                "entry": str(entry) if entry else "",
                "refused": reason,
                "warnings": server_entry_warnings(entry) if entry else [],
            }
        )
    return rows
