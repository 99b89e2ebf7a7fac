"""The email of one person's notices: plain text, each with a link to the panel page to act
from (absolute, on DS_PANEL_URL). Titles and details are written by the checks for their
recipient and hold no secrets; nothing else goes in."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage
from django.urls import reverse

from accounts.notices.models import Notice

PREFIX = "[Dropserver] "


def _subject(notices: list[Notice]) -> str:
    if len(notices) == 1:
        notice = notices[0]
        return PREFIX + ("Reminder: " if notice.email_count > 1 else "") + notice.title
    return PREFIX + f"{len(notices)} things need your attention"


def _body(user, notices: list[Notice]) -> str:
    lines = [f"Hello {user.name}," if getattr(user, "name", "") else "Hello,", ""]
    lines.append(
        "This needs your attention on Dropserver:"
        if len(notices) == 1
        else "These need your attention on Dropserver:"
    )
    for notice in notices:
        lines += ["", f"* {notice.title}"]
        if notice.email_count > 1:
            lines.append(f"  (a reminder: true since {notice.first_seen:%Y-%m-%d %H:%M} UTC)")
        if notice.detail:
            lines.append(f"  {notice.detail}")
        lines.append(f"  {notice.url}")
    lines += [
        "",
        "Each stays on your dashboard until it is resolved. While it stays true you get a "
        f"reminder every {settings.DS_NOTICE_REMIND_HOURS:g} hours, unless you dismiss it.",
        "Choose which notices you get by email: "
        f"{settings.DS_PANEL_URL}{reverse('notice_settings')}",
    ]
    return "\n".join(lines) + "\n"


def send_digest(user, notices: list[Notice]) -> None:
    # email_count counts this email too (raised when the notice was claimed): 1 is the first.
    EmailMessage(
        subject=_subject(notices),
        body=_body(user, notices),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[user.email],
    ).send(fail_silently=False)
