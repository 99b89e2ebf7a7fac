"""One pass over every kind of notice: open what became true, refresh what still is, resolve
what no longer is, then email each person what is new or due a reminder (one message each).

Run by the `notices_evaluate` task on the housekeeping queue every DS_NOTICE_EVALUATE_SECONDS.
Two passes at once are harmless: an open notice is unique per (recipient, kind, key), and an
email is claimed by a conditional UPDATE of `emailed_at` before it is sent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.notices.kinds import ADMINS, CheckUnavailable, Condition, Kind, kinds
from accounts.notices.mail import send_digest
from accounts.notices.models import Notice, NoticePreference

log = logging.getLogger(__name__)


def _one_line(text: str, limit: int) -> str:
    """A title as an email subject can carry it: no control characters, no line breaks (an app
    name comes from its manifest), within the column's length."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _wanted(kind: Kind, conditions: list[Condition], staff: list[int]) -> dict:
    """(recipient id, key) -> condition; a condition for "every admin" fans out to staff."""
    wanted: dict[tuple[int, str], Condition] = {}
    for condition in conditions:
        if condition.recipient_id is None or kind.audience == ADMINS:
            recipients = staff
        else:
            recipients = [condition.recipient_id]
        for user_id in recipients:
            wanted.setdefault((user_id, condition.key), condition)
    return wanted


def _open(kind: str, user_id: int, condition: Condition, now: datetime) -> None:
    try:
        with transaction.atomic():
            Notice.objects.create(
                recipient_id=user_id,
                kind=kind,
                key=condition.key,
                title=_one_line(condition.title, 300),
                detail=condition.detail,
                path=condition.path,
                first_seen=now,
                last_seen=now,
            )
    except IntegrityError:
        pass  # another pass opened it a moment ago


def kind_apply(kind: Kind, conditions: list[Condition], now: datetime, staff: list[int]) -> dict:
    """Bring one kind's open notices in line with its conditions; counts of what changed."""
    wanted = _wanted(kind, conditions, staff)
    open_now = {(n.recipient_id, n.key): n for n in Notice.objects.open().filter(kind=kind.name)}
    opened = resolved = 0
    still: list[int] = []
    for (user_id, key), condition in wanted.items():
        notice = open_now.get((user_id, key))
        if notice is None:
            _open(kind.name, user_id, condition, now)
            opened += 1
            continue
        text = (_one_line(condition.title, 300), condition.detail, condition.path)
        if text == (notice.title, notice.detail, notice.path):
            still.append(notice.pk)
        else:  # the same condition, described anew (more requests waiting, less disk free)
            Notice.objects.filter(pk=notice.pk).update(
                last_seen=now, title=text[0], detail=text[1], path=text[2]
            )
    Notice.objects.filter(pk__in=still).update(last_seen=now)
    gone = [n.pk for pair, n in open_now.items() if pair not in wanted]
    if gone:
        resolved = Notice.objects.filter(pk__in=gone, resolved_at__isnull=True).update(
            resolved_at=now
        )
    return {"opened": opened, "resolved": resolved}


def _emails_due(now: datetime) -> dict[int, list[Notice]]:
    """Open, undismissed notices never emailed or last emailed a reminder interval ago, of kinds
    their recipients get by email, claimed for this pass; by recipient."""
    remind_before = now - timedelta(hours=settings.DS_NOTICE_REMIND_HOURS)
    off = set(NoticePreference.objects.filter(email=False).values_list("user_id", "kind"))
    candidates = (
        Notice.objects.shown()
        .filter(recipient__is_active=True)
        .filter(Q(emailed_at__isnull=True) | Q(emailed_at__lte=remind_before))
        .select_related("recipient")
        .order_by("recipient_id", "first_seen")
    )
    due: dict[int, list[Notice]] = {}
    for notice in candidates:
        if (notice.recipient_id, notice.kind) in off:
            continue
        claimed = Notice.objects.filter(pk=notice.pk, emailed_at=notice.emailed_at).update(
            emailed_at=now, email_count=F("email_count") + 1
        )
        if claimed:
            notice.previous_emailed_at = notice.emailed_at
            notice.emailed_at, notice.email_count = now, notice.email_count + 1
            due.setdefault(notice.recipient_id, []).append(notice)
    return due


def emails_send(now: datetime) -> int:
    """Send what is due, one message per person; a failed send is retried by the next pass."""
    sent = 0
    for notices in _emails_due(now).values():
        try:
            send_digest(notices[0].recipient, notices)
        except Exception:  # the transport is not ours: log it, retry on the next pass
            log.warning("notice email to user %s failed", notices[0].recipient_id, exc_info=True)
            for notice in notices:
                Notice.objects.filter(pk=notice.pk, emailed_at=now).update(
                    emailed_at=notice.previous_emailed_at, email_count=F("email_count") - 1
                )
        else:
            sent += 1
    return sent


def notices_evaluate(now: datetime | None = None) -> dict[str, int]:
    """The periodic pass. One check failing (or unable to tell) never stops the others."""
    now = now or timezone.now()
    staff = list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    totals = {"opened": 0, "resolved": 0, "skipped": 0}
    for kind in kinds():
        try:
            conditions = list(kind.check())
        except CheckUnavailable as exc:
            log.info("notices: %s left as they are: %s", kind.name, exc)
            totals["skipped"] += 1
            continue
        except Exception:
            log.exception("notices: the check of %s failed", kind.name)
            totals["skipped"] += 1
            continue
        for name, n in kind_apply(kind, conditions, now, staff).items():
            totals[name] += n
    totals["emails"] = emails_send(now)
    return totals
