"""Connections an appspace's sandbox refused, shown to its owner for approval.

Each outbound attempt the sandbox blocks is recorded by the supervisor (per host:port: count,
first and last time), pulled here into BlockedConnection rows (every minute by Celery beat, and
when the owner opens the appspace's page) together with what the app asked for (requests.py),
and shown to the owner, who approves it (an allowlist entry `host:port` through approvals.py;
the sandbox restarts with it) or dismisses it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.utils import timezone

from appspaces.models import AllowlistEntry, Appspace, BlockedConnection
from appspaces.network.approvals import (
    allowlist_entry_add,
    covered_by,
    server_entries,
    server_entry_warnings,
)
from appspaces.network.requests import app_requests_pull
from appspaces.sandboxes import parse_server_entry
from packages.allowlist import AllowlistError, ServerEntry
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound

log = logging.getLogger(__name__)


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
    allowed = server_entries(appspace)
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
        if covered_by(probe, allowed):
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
