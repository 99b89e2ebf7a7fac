"""Notices end to end on the real database: a failed backup (a real failing backup Job) emails
its owner and the admins once, a second pass does not, a reminder comes after the interval, a
good backup resolves it (the panel notice goes) and a new failure notifies again; preferences
turn the email off but never the panel notice; nobody sees or dismisses another's notice.

Email through Django's locmem backend here; tests/notices/test_smtp.py goes through SMTP."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.notices.models import Notice, NoticePreference
from tests.notices.conftest import evaluate, failing_backup, good_backup, make_space, page

pytestmark = pytest.mark.django_db


def sent_to(email: str) -> list:
    return [m for m in mail.outbox if m.to == [email]]


def test_a_failed_backup_is_emailed_once_reminded_once_resolved_and_raised_again(
    alice, admin_user, settings
):
    space = make_space(alice)
    job = failing_backup(space, settings)
    assert "over the 1.0 MB" in job.message

    evaluate()
    assert len(sent_to(alice.email)) == 1 and len(sent_to(admin_user.email)) == 1
    assert len(mail.outbox) == 2
    owner_mail = sent_to(alice.email)[0]
    assert owner_mail.subject == f"[Dropserver] The last backup of {space.subdomain} failed"
    link = f"{settings.DS_PANEL_URL}/appspaces/{space.public_id}/backups/"
    assert link in owner_mail.body and "over the 1.0 MB" in owner_mail.body
    assert f"{settings.DS_PANEL_URL}/accounts/notices/" in owner_mail.body
    admin_mail = sent_to(admin_user.email)[0]
    assert space.subdomain in admin_mail.subject and alice.email in admin_mail.subject
    assert f"{settings.DS_PANEL_URL}/admin/backups/backup/health/" in admin_mail.body
    for message in mail.outbox:
        assert message.content_subtype == "plain" and not getattr(message, "alternatives", [])
        assert settings.SECRET_KEY not in message.body

    # The dashboard and the appspace's page show it.
    dashboard = page(alice, reverse("dashboard"))
    assert f"The last backup of {space.subdomain} failed" in dashboard
    detail = page(alice, reverse("appspace_detail", args=[space.public_id]))
    assert f"The last backup of {space.subdomain} failed" in detail

    # Still true a few passes later: no new email, until the reminder interval has passed.
    evaluate(hours=1)
    evaluate(hours=23)
    assert len(mail.outbox) == 2
    evaluate(hours=24.1)
    reminders = mail.outbox[2:]
    assert sorted(m.to[0] for m in reminders) == sorted([alice.email, admin_user.email])
    assert sent_to(alice.email)[1].subject.startswith("[Dropserver] Reminder: The last backup")
    assert "a reminder: true since" in sent_to(alice.email)[1].body
    evaluate(hours=25)
    assert len(mail.outbox) == 4

    # A good backup resolves it: the notice leaves the panel, and nothing more is sent.
    good_backup(space, settings)
    evaluate(hours=50)
    assert len(mail.outbox) == 4
    assert not Notice.objects.open().exists()
    assert Notice.objects.filter(resolved_at__isnull=False).count() == 2
    assert "The last backup of" not in page(alice, reverse("dashboard"))

    # It fails again: a new notice, emailed again at once.
    failing_backup(space, settings)
    evaluate(hours=51)
    assert len(sent_to(alice.email)) == 3 and len(sent_to(admin_user.email)) == 3
    assert sent_to(alice.email)[2].subject == owner_mail.subject  # new, not a reminder
    assert Notice.objects.filter(recipient=alice, kind="backup_failed").count() == 2


def test_email_preference_off_sends_nothing_but_the_panel_shows_it(alice, admin_user, settings):
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(alice)
    form = client.get(reverse("notice_settings")).content.decode()
    assert 'name="backup_failed"' in form and 'name="admin_backups"' not in form  # not staff
    # Everything on but backups (unchecked boxes are not sent).
    response = client.post(
        reverse("notice_settings"),
        {"over_quota": "on", "network_requests": "on", "app_update": "on", "crash_loop": "on"},
    )
    assert response.status_code == 302
    assert NoticePreference.objects.get(user=alice, kind="backup_failed").email is False
    assert NoticePreference.objects.get(user=alice, kind="over_quota").email is True

    space = make_space(alice)
    failing_backup(space, settings)
    evaluate()
    assert sent_to(alice.email) == []
    assert len(sent_to(admin_user.email)) == 1  # the admins' own preference is theirs
    assert f"The last backup of {space.subdomain} failed" in page(alice, reverse("dashboard"))
    evaluate(hours=30)
    assert sent_to(alice.email) == []
    settings_page = page(alice, reverse("notice_settings"))
    assert f"The last backup of {space.subdomain} failed" in settings_page


def test_nobody_sees_or_dismisses_anothers_notice(alice, charlie, admin_user, settings):
    space = make_space(alice)
    failing_backup(space, settings)
    evaluate()
    notice = Notice.objects.get(recipient=alice)
    title = notice.title

    outsider = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    outsider.force_login(charlie)
    assert title not in page(charlie, reverse("dashboard"))
    assert title not in page(charlie, reverse("notice_settings"))
    dismiss = reverse("notice_dismiss", args=[notice.public_id])
    assert outsider.post(dismiss).status_code == 404
    # The admin's copy of it is theirs; Alice's is not theirs to dismiss either.
    staff = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    staff.force_login(admin_user)
    assert staff.post(dismiss).status_code == 404
    notice.refresh_from_db()
    assert notice.dismissed_at is None
    assert Client(HTTP_HOST=settings.DS_PANEL_HOST).post(dismiss).status_code == 302  # login

    owner = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    owner.force_login(alice)
    assert owner.get(dismiss).status_code == 405
    response = owner.post(dismiss, {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    assert title not in page(alice, reverse("dashboard"))
    # Dismissed: no reminders; it stays open (so no new email) while the backup keeps failing.
    before = len(mail.outbox)
    evaluate(hours=30)
    assert len(sent_to(alice.email)) == 1 and len(mail.outbox) == before + 1  # admin reminder
    assert Notice.objects.open().filter(recipient=alice).count() == 1
    # A resolved notice cannot be dismissed any more (404, not a 500).
    good_backup(space, settings)
    evaluate(hours=31)
    assert owner.post(dismiss).status_code == 404


def test_a_failed_email_is_sent_by_the_next_pass(alice, settings):
    space = make_space(alice)
    failing_backup(space, settings)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    assert evaluate()["emails"] == 0  # nothing listens on port 9: logged, not raised
    notice = Notice.objects.get(recipient=alice)
    assert notice.emailed_at is None and notice.email_count == 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert evaluate()["emails"] == 1
    assert len(sent_to(alice.email)) == 1


def test_the_task_runs_a_pass_and_admins_see_every_notice(alice, admin_user, settings):
    from accounts.tasks import notices_evaluate

    space = make_space(alice)
    failing_backup(space, settings)
    result = notices_evaluate.apply().get()
    assert result["opened"] == 2 and result["emails"] == 2
    listing = page(admin_user, "/admin/accounts/notice/")
    assert f"The last backup of {space.subdomain} failed" in listing
    staff = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    staff.force_login(admin_user)
    assert staff.get("/admin/accounts/notice/add/").status_code == 403
