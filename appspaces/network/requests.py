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
    _server_entries,
    allowlist_entry_add,
    browser_origin_warnings,
    describe_browser_origin,
    describe_server_entry,
    server_entry_warnings,
)
from packages.allowlist import AllowlistError, parse_browser_origin, parse_server_entry

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


def app_request_record(*, appspace: Appspace, server: object, browser: object, reason: object):
    """The app's requestNetwork() call: each entry validated; -> (accepted entries, refused
    [(what was asked, why)]). Accepted ones wait for the owner with the app's reason."""
    reason_text = clean_reason(reason)
    accepted: list[str] = []
    refused: list[tuple[str, str]] = []
    asked = [
        (kind, value)
        for kind, values in (("server", server), ("browser", browser))
        for value in (values if isinstance(values, list) else [])
    ]
    if len(asked) > MAX_ASKED:
        refused.append(("", f"at most {MAX_ASKED} entries per request"))
        asked = asked[:MAX_ASKED]
    allowed = set(appspace.allowlist.values_list("kind", "value"))
    now = timezone.now()
    for kind, value in asked:
        shown = clean_reason(value) if isinstance(value, str) else repr(value)[:80]
        try:
            parse = parse_server_entry if kind == "server" else parse_browser_origin
            text = str(parse(value))
        except AllowlistError as exc:
            refused.append((shown, str(exc)))
            continue
        if (kind, text) in allowed:
            accepted.append(text)
            continue
        pending = NetworkRequest.objects.filter(appspace=appspace, dismissed=False).count()
        row, created = NetworkRequest.objects.get_or_create(
            appspace=appspace,
            kind=kind,
            value=text,
            defaults={"source": NetworkRequest.Source.APP, "reason": reason_text},
        )
        if created and pending >= MAX_PENDING:
            row.delete()
            refused.append((text, "too many requests are waiting for the owner"))
            continue
        if not created:  # asked again: the newest reason, still waiting (even if dismissed)
            row.reason = reason_text or row.reason
            row.last_seen = now
            row.count += 1
            row.save(update_fields=["reason", "last_seen", "count"])
        accepted.append(text)
    return accepted, refused


def request_rows(appspace: Appspace, *, dismissed: bool = False) -> list[dict]:
    """Pending (or dismissed) requests, explained, with why one cannot be allowed."""
    rows = []
    server = _server_entries(appspace)
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
