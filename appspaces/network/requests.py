"""Pending network requests other than refused server connections (approvals.py has those):
origins an appspace's pages were refused by its CSP (reported by browsers to the gateway's
/.dropserver/csp-report) and hosts or origins the app asked for with `requestNetwork()`.

Nothing here grants anything: a request waits for the owner, who allows it (it becomes an
allowlist entry through approvals.allowlist_entry_add, the one validator) or dismisses it.
Entries that can never be allowed (private ranges, this machine's names) are refused when
asked for, with the validator's reason. An app's reason is untrusted text: capped, stripped of
control characters, and only ever shown escaped.
"""

from __future__ import annotations

import unicodedata

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from appspaces.models import AllowlistEntry, Appspace, NetworkRequest
from appspaces.network.approvals import (
    allowlist_entry_add,
    browser_origin_warnings,
    describe_browser_origin,
    describe_server_entry,
    server_entries,
    server_entry_warnings,
)
from appspaces.sandboxes import parse_server_entry
from packages.allowlist import AllowlistError, parse_browser_origin
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError

MAX_REASON = 300
MAX_PENDING = 100  # pending requests per appspace; more are dropped until the owner decides
MAX_ASKED = 20  # entries per requestNetwork() call
DIRECTIVES_FIELD = 200


def clean_reason(text: object) -> str:
    """The app's reason as one line of printable text, at most MAX_REASON characters."""
    if not isinstance(text, str):
        return ""
    out = []
    for ch in text[: MAX_REASON * 4]:
        if ch in "\t\n\r":
            out.append(" ")
        elif unicodedata.category(ch)[0] != "C":  # no control, format (bidi), private use
            out.append(ch)
    return " ".join("".join(out).split())[:MAX_REASON]


def _browser_allowed(appspace_pk: int, origin: str) -> bool:
    return AllowlistEntry.objects.filter(
        appspace_id=appspace_pk, kind=AllowlistEntry.Kind.BROWSER, value=origin
    ).exists()


def browser_report_record(*, appspace_pk: int, origin: str, directive: str, count: int) -> bool:
    """Count `count` reports of `origin` (already canonical) blocked under `directive`.
    -> whether a row was written. Dropped when already allowed or over MAX_PENDING."""
    now = timezone.now()
    if _browser_allowed(appspace_pk, origin):
        return False
    updated = NetworkRequest.objects.filter(
        appspace_id=appspace_pk, kind=NetworkRequest.Kind.BROWSER, value=origin
    )
    row = updated.only("pk", "directives").first()
    if row is not None:
        directives = row.directives
        if directive not in directives.split(","):
            directives = ",".join(filter(None, [directives, directive]))[:DIRECTIVES_FIELD]
        updated.update(count=F("count") + count, last_seen=now, directives=directives)
        return True
    if NetworkRequest.objects.filter(appspace_id=appspace_pk, dismissed=False).count() >= (
        MAX_PENDING
    ):
        return False
    try:
        with transaction.atomic():
            NetworkRequest.objects.create(
                appspace_id=appspace_pk,
                kind=NetworkRequest.Kind.BROWSER,
                value=origin,
                source=NetworkRequest.Source.REPORT,
                directives=directive,
                count=count,
                first_seen=now,
                last_seen=now,
            )
    except IntegrityError:  # another process created it meanwhile
        updated.update(count=F("count") + count, last_seen=now)
    return True


def app_request_record(*, appspace: Appspace, kind: str, value: object, reason: object) -> bool:
    """One entry the app asked for (the supervisor's table, pulled again and again: recording
    is idempotent; a dismissed request stays dismissed). Entries the validator refuses are kept
    too, as they were written (cleaned), so the owner sees what was asked and why it cannot be.
    -> whether a row was created or changed."""
    if kind not in NetworkRequest.Kind.values or not isinstance(value, str):
        return False
    try:
        parse = parse_server_entry if kind == NetworkRequest.Kind.SERVER else parse_browser_origin
        text = str(parse(value))
    except AllowlistError:
        text = clean_reason(value)[:300]
    if not text or appspace.allowlist.filter(kind=kind, value=text).exists():
        return False
    reason_text = clean_reason(reason)
    row = NetworkRequest.objects.filter(appspace=appspace, kind=kind, value=text).first()
    if row is not None:
        if reason_text and (row.reason != reason_text or row.source != NetworkRequest.Source.APP):
            row.reason, row.source, row.last_seen = (
                reason_text,
                NetworkRequest.Source.APP,
                (timezone.now()),
            )
            row.save(update_fields=["reason", "source", "last_seen"])
            return True
        return False
    if NetworkRequest.objects.filter(appspace=appspace, dismissed=False).count() >= MAX_PENDING:
        return False
    try:
        with transaction.atomic():
            NetworkRequest.objects.create(
                appspace=appspace,
                kind=kind,
                value=text,
                source=NetworkRequest.Source.APP,
                reason=reason_text,
            )
    except IntegrityError:
        return False
    return True


def app_requests_pull(*, appspace: Appspace, client: SandboxClient) -> int:
    """Record what the app asked for since the supervisor started it; 0 if it knows nothing."""
    try:
        asked = client.network_requests(str(appspace.public_id))
    except SandboxError:
        return 0
    changed = 0
    for item in (asked or [])[: MAX_ASKED * 3]:
        if isinstance(item, dict):
            changed += app_request_record(
                appspace=appspace,
                kind=item.get("kind"),
                value=item.get("value"),
                reason=item.get("reason"),
            )
    return changed


def request_rows(appspace: Appspace, *, dismissed: bool = False) -> list[dict]:
    """Pending (or dismissed) requests, explained, with why one cannot be allowed."""
    rows = []
    server = server_entries(appspace)
    for req in appspace.network_requests.filter(dismissed=dismissed):
        row = {"request": req, "description": "", "warnings": [], "refused": ""}
        try:
            if req.kind == NetworkRequest.Kind.SERVER:
                parsed = parse_server_entry(req.value)
                if parsed in server:
                    continue
                row["description"] = describe_server_entry(parsed)
                row["warnings"] = server_entry_warnings(parsed)
            else:
                origin = parse_browser_origin(req.value)
                row["description"] = describe_browser_origin(origin)
                row["warnings"] = browser_origin_warnings(origin)
        except AllowlistError as exc:
            row["refused"] = str(exc)
        rows.append(row)
    return rows


def network_request_allow(*, request: NetworkRequest, confirm_risky: bool = False):
    """Allow it: an allowlist entry (the CSP changes at once; a server entry restarts the
    sandbox). Raises AllowlistError / RiskyEntry as allowlist_entry_add does."""
    try:
        entry = allowlist_entry_add(
            appspace=request.appspace,
            kind=request.kind,
            value=request.value,
            confirm_risky=confirm_risky,
        )
    except AllowlistError as exc:
        if str(exc).endswith("is already allowed."):
            request.delete()
        raise
    request.delete()
    return entry


def network_request_dismiss(*, request: NetworkRequest) -> None:
    request.dismissed = True
    request.save(update_fields=["dismissed"])
