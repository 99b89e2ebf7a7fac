"""Each kind of notice raised from real state and resolved when that state clears: the disk
quota as the usage task applies it, network requests as the gateway and the supervisor record
them, a listing's newer version and an installed one, off-site and instance backup failures,
free disk under DS_DATA_DIR, the panel certificate as Caddy stores it, and a crash loop in a
real supervisor (which, when it does not answer, changes nothing)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.notices.models import Notice
from appspaces.models import App, Appspace, AppVersion, NetworkRequest
from appspaces.network.blocked import blocked_connection_dismiss, blocked_connections_record
from appspaces.network.requests import (
    app_request_record,
    browser_report_record,
    network_request_dismiss,
)
from appspaces.sandboxes import appspace_spec
from appspaces.usage.quota import appspace_disk_measure
from backups.models import Backup, InstanceBackup, OffsiteCheck
from backups.services import backup_create
from backups.store import backup_policy
from backups.verification import backup_verify
from dropserver_site.edge.caddy import storage_dir
from tests.appspaces.appspace_fixtures import make_appspace, make_version, own_uids  # noqa: F401
from tests.notices.conftest import evaluate, make_space, page
from tests.sandbox.fixtures import poll
from tests.site.tls import self_signed

pytestmark = pytest.mark.django_db


def open_notices(user, kind: str) -> list[Notice]:
    return list(Notice.objects.open().filter(recipient=user, kind=kind).order_by("key"))


def test_overdue_backups_of_active_appspaces_with_backups_on(alice, admin_user):
    space = make_space(alice)
    paused = make_space(alice, status=Appspace.Status.PAUSED)
    switched_off = make_space(alice)
    policy = backup_policy(switched_off)
    policy.enabled = False
    policy.save()
    old = timezone.now() - dt.timedelta(days=3)
    Appspace.objects.filter(pk__in=[space.pk, paused.pk, switched_off.pk]).update(created=old)
    evaluate()
    (notice,) = open_notices(alice, "backup_failed")
    assert notice.key == f"appspace:{space.public_id}"
    assert notice.title == f"The backups of {space.subdomain} are overdue"
    assert "every 24 h; the last backup was never." in notice.detail
    assert not open_notices(admin_user, "admin_backups")  # overdue is not a failure

    backup = backup_create(appspace=space, kind=Backup.Kind.SCHEDULED)
    Backup.objects.filter(pk=backup.pk).update(created=old)
    evaluate()
    (same,) = open_notices(alice, "backup_failed")
    assert same.pk == notice.pk and f"made {old:%Y-%m-%d %H:%M} UTC" in same.detail
    backup_create(appspace=space, kind=Backup.Kind.SCHEDULED)
    evaluate()
    assert not open_notices(alice, "backup_failed")


def test_a_damaged_archive_found_by_verification(alice, admin_user):
    space = make_space(alice)
    backup = backup_create(appspace=space, kind=Backup.Kind.MANUAL)
    with open(backup.path, "r+b") as archive:  # a block the disk lost
        archive.seek(backup.path.stat().st_size // 2)
        archive.write(b"\0" * 64)
    assert backup_verify(backup=backup)
    evaluate()
    (notice,) = open_notices(alice, "backup_failed")
    assert notice.title == f"A backup of {space.subdomain} is damaged"
    (admin,) = open_notices(admin_user, "admin_backups")
    assert "1 damaged archive(s)" in admin.title
    backup_create(appspace=space, kind=Backup.Kind.MANUAL)
    backup.path.unlink()
    backup.delete()
    evaluate()
    assert not open_notices(alice, "backup_failed")
    assert not open_notices(admin_user, "admin_backups")


def test_over_quota_from_the_measured_disk(alice, admin_user):
    space = make_space(alice, disk_mb=10)
    (space.data_path / "big.bin").write_bytes(b"\1" * (11 * 1024 * 1024))
    appspace_disk_measure(appspace=space)
    space.refresh_from_db()
    assert space.data_readonly
    evaluate()
    (notice,) = open_notices(alice, "over_quota")
    assert notice.key == f"appspace:{space.public_id}" and "read-only" in notice.title
    assert "of 10 MB" in notice.detail
    assert not open_notices(admin_user, "over_quota")
    assert [m.to for m in mail.outbox] == [[alice.email]]
    assert notice.title in page(alice, reverse("appspace_detail", args=[space.public_id]))

    (space.data_path / "big.bin").unlink()
    appspace_disk_measure(appspace=space)
    evaluate()
    assert not open_notices(alice, "over_quota")
    assert notice.title not in page(alice, reverse("appspace_detail", args=[space.public_id]))


def test_network_requests_waiting_server_and_browser(alice):
    space = make_space(alice)
    assert app_request_record(
        appspace=space, kind="server", value="api.example.com:443", reason="to sync"
    )
    evaluate()
    (notice,) = open_notices(alice, "network_requests")
    assert notice.detail.startswith("Waiting: 1 server-side.")
    assert browser_report_record(
        appspace_pk=space.pk, origin="https://cdn.example.net", directive="script-src", count=2
    )
    blocked_connections_record(
        appspace=space, reported=[{"host": "tracker.example.org", "port": 443, "count": 1}]
    )
    evaluate()
    (same,) = open_notices(alice, "network_requests")
    assert same.pk == notice.pk and "2 server-side and 1 browser-side" in same.detail
    assert len(mail.outbox) == 1  # more requests on the same appspace: the same notice

    for request in NetworkRequest.objects.filter(appspace=space):
        network_request_dismiss(request=request)
    evaluate()
    assert open_notices(alice, "network_requests")  # the refused connection still waits
    blocked_connection_dismiss(blocked=space.blocked.get())
    evaluate()
    assert not open_notices(alice, "network_requests")


def test_a_newer_version_in_the_listing_then_installed(alice, bob):
    space = make_space(alice)
    app = space.app
    # As the listings task leaves an app whose listing offers 2.0.0.
    App.objects.filter(pk=app.pk).update(
        listing_url="https://apps.example.org/notes.json", listing_latest_version="2.0.0"
    )
    evaluate()
    (listing,) = open_notices(alice, "app_update")
    assert listing.key == f"app:{app.public_id}:2.0.0"
    assert listing.title == "Notes 2.0.0 is available"
    assert listing.path == reverse("app_detail", args=[app.public_id])
    assert not open_notices(bob, "app_update")

    AppVersion.objects.create(app=app, version="2.0.0", version_key="2.0.0", entrypoint="app.ts")
    evaluate()
    (upgrade,) = open_notices(alice, "app_update")
    assert upgrade.key == f"appspace:{space.public_id}:upgrade:2.0.0"
    assert upgrade.title == f"{space.subdomain} can move to version 2.0.0"
    assert upgrade.title in page(alice, reverse("appspace_detail", args=[space.public_id]))
    App.objects.filter(pk=app.pk).update(listing_latest_version="2.1.0")
    evaluate()
    assert [n.key for n in open_notices(alice, "app_update")] == [
        f"app:{app.public_id}:2.1.0",
        f"appspace:{space.public_id}:upgrade:2.0.0",
    ]


def test_off_site_and_instance_backup_failures_go_to_admins(alice, admin_user, settings):
    space = make_space(alice)
    backup = backup_create(appspace=space, kind=Backup.Kind.MANUAL)
    # As offsite_job_run leaves a copy that failed its last attempt.
    Backup.objects.filter(pk=backup.pk).update(
        offsite_state=Backup.Offsite.FAILED, offsite_message="Fatal: wrong password"
    )
    OffsiteCheck.objects.create(ok=False, kind="wrong-password", output="...")
    InstanceBackup.objects.create(target="/srv/instance").fail("The target is not mounted.")
    evaluate()
    keys = [n.key for n in open_notices(admin_user, "admin_backups")]
    assert keys == [f"appspace:{space.public_id}", "instance-backup", "offsite-check"]
    assert not Notice.objects.filter(recipient=alice).exists()  # the owner's backup is fine
    (message,) = mail.outbox
    assert message.to == [admin_user.email]
    assert message.subject == "[Dropserver] 3 things need your attention"
    assert "1 off-site copy(ies) failed" in message.body and "(wrong-password)" in message.body
    assert "Fatal" not in message.body  # restic's output stays on the admin's health page

    OffsiteCheck.objects.create(ok=True)
    InstanceBackup.objects.create(target="/srv/instance").done(size=1, appspaces=1, warnings=[])
    Backup.objects.filter(pk=backup.pk).update(offsite_state=Backup.Offsite.COPIED)
    evaluate()
    assert not open_notices(admin_user, "admin_backups")


def test_low_free_disk_goes_to_admins(alice, admin_user, settings):
    settings.DS_NOTICE_MIN_FREE_MB = 10**9  # more than any disk here has free
    evaluate()
    (notice,) = open_notices(admin_user, "admin_disk")
    assert notice.title.startswith("Only ") and "MB free under the data directory" in notice.title
    assert not Notice.objects.filter(recipient=alice).exists()
    assert notice.title in page(admin_user, reverse("dashboard"))
    settings.DS_NOTICE_MIN_FREE_MB = 1
    evaluate()
    assert not open_notices(admin_user, "admin_disk")


def _caddy_certificate(tmp_path, *, issued_days_ago: float, valid_days: float) -> None:
    """A certificate where Caddy stores what it obtained (certificates/<issuer>/<host>/)."""
    now = dt.datetime.now(dt.UTC)
    host = settings.DS_PANEL_HOST
    cert, _ = self_signed(
        tmp_path,
        f"panel-{issued_days_ago}",
        dns=(host,),
        not_before=now - dt.timedelta(days=issued_days_ago),
        not_after=now - dt.timedelta(days=issued_days_ago) + dt.timedelta(days=valid_days),
    )
    folder = storage_dir() / "certificates" / "acme-v02" / host
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{host}.crt").write_bytes(cert.read_bytes())


def test_a_certificate_caddy_did_not_renew_goes_to_admins(admin_user, settings, tmp_path):
    settings.DS_TLS, settings.DS_TLS_ON = "acme", True
    evaluate()  # no certificate yet (on-demand): nothing to say
    assert not open_notices(admin_user, "admin_certificate")
    # 90-day certificates: renewed at 30 days left; 20 days left is still Caddy's business...
    _caddy_certificate(tmp_path, issued_days_ago=70, valid_days=90)
    evaluate()
    assert not open_notices(admin_user, "admin_certificate")
    # ...10 days left is past half the renewal window: renewal is failing.
    _caddy_certificate(tmp_path, issued_days_ago=80, valid_days=90)
    evaluate()
    (notice,) = open_notices(admin_user, "admin_certificate")
    assert f"The certificate of {settings.DS_PANEL_HOST} is overdue" in notice.title
    assert "renewal is failing" in notice.detail
    _caddy_certificate(tmp_path, issued_days_ago=0, valid_days=90)  # renewed
    evaluate()
    assert not open_notices(admin_user, "admin_certificate")


def test_a_certificate_file_about_to_expire_goes_to_admins(admin_user, settings, tmp_path):
    now = dt.datetime.now(dt.UTC)
    cert, key = self_signed(
        tmp_path, "files", dns=(settings.DS_PANEL_HOST,), not_after=now + dt.timedelta(days=5)
    )
    settings.DS_TLS, settings.DS_TLS_ON = "files", True
    settings.DS_TLS_CERT, settings.DS_TLS_KEY = str(cert), str(key)
    evaluate()
    (notice,) = open_notices(admin_user, "admin_certificate")
    assert "is expiring" in notice.title and "DS_TLS_CERT" in notice.detail
    cert.write_text("not a certificate")
    evaluate()
    (same,) = open_notices(admin_user, "admin_certificate")
    assert same.pk == notice.pk and same.title.endswith("is unreadable")


CRASHY_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("up") },
  { method: "GET", path: "/exit", auth: "public", handler: () => Deno.exit(3) },
] });
"""


@pytest.mark.sandbox
def test_a_crash_loop_in_the_supervisor(alice, start_supervisor, http_request):
    space = make_appspace(alice, make_version(alice, {"app.ts": CRASHY_APP}), folders=True)
    sup = start_supervisor(DS_SANDBOX_CRASH_LIMIT=1, DS_SANDBOX_CRASH_WINDOW=60)
    spec = appspace_spec(space)
    with pytest.raises(Exception):  # noqa: B017 (the connection drops as the app exits)
        http_request(sup.client.ensure(spec), "GET", "/exit", headers={"X-Dropserver-Route": "1"})
    poll(lambda: sup.client.usage(spec.id)["state"] == "problem")
    evaluate()
    (notice,) = open_notices(alice, "crash_loop")
    assert notice.title == f"{space.subdomain} keeps crashing" and "status 3" in notice.detail
    assert [m.to for m in mail.outbox] == [[alice.email]]

    # No supervisor: nothing can be said, so nothing is resolved (or raised).
    sup.stop()
    evaluate()
    assert open_notices(alice, "crash_loop") == [notice]
    # A new supervisor has no crash history: resolved.
    start_supervisor()
    evaluate()
    assert not open_notices(alice, "crash_loop")


def test_an_app_name_cannot_add_mail_headers(alice):
    space = make_space(alice)
    App.objects.filter(pk=space.app_id).update(
        name="Notes\r\nBcc: mallory@example.com\x07",
        listing_url="https://apps.example.org/notes.json",
        listing_latest_version="2.0.0",
    )
    evaluate()
    (message,) = mail.outbox
    assert message.to == [alice.email] and not message.bcc
    assert message.subject == "[Dropserver] Notes Bcc: mallory@example.com 2.0.0 is available"
    assert "Bcc" not in str(message.message()).split("\n\n", 1)[0].replace(message.subject, "")
