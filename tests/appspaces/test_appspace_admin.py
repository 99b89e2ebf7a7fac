"""Appspaces in the Django admin: staff see them with their users and allowlist, change their
status and limits; allowlist entries pass the same validator; creating and deleting go through
the panel."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from appspaces.lifecycle.subdomains import SubdomainError, subdomain_check_available
from appspaces.models import Appspace, AppspaceUser, FreedSubdomain
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    make_appspace,
    make_version,
    own_uids,
)

pytestmark = pytest.mark.django_db


def admin_client(user) -> Client:
    from django.conf import settings

    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(user)
    return client


def test_staff_see_and_pause_an_appspace_but_cannot_add_or_delete_one(admin_user, alice, bob):
    appspace = make_appspace(alice, make_version(alice), subdomain="notes", folders=True)
    AppspaceUser.objects.create(appspace=appspace, user=bob, display_name="Bob", permissions=[])
    client = admin_client(admin_user)
    listing = client.get(reverse("admin:appspaces_appspace_changelist")).content.decode()
    assert "notes" in listing and "alice@example.com" in listing
    url = reverse("admin:appspaces_appspace_change", args=[appspace.pk])
    page = client.get(url).content.decode()
    assert "Bob" in page
    assert client.get(reverse("admin:appspaces_appspace_add")).status_code == 403
    assert (
        client.get(reverse("admin:appspaces_appspace_delete", args=[appspace.pk])).status_code
        == 403
    )

    def post(**extra):
        data = {
            "status": "paused", "status_reason": "Paused by the admin.", "memory_mb": 256,
            "cpu_percent": 50, "disk_mb": 100,
            "users-TOTAL_FORMS": 1, "users-INITIAL_FORMS": 1,
            "users-0-id": appspace.users.get().pk, "users-0-appspace": appspace.pk,
            "users-0-user": bob.pk, "users-0-display_name": "Bob",
            "users-0-permissions": "[]",
            "allowlist-TOTAL_FORMS": 1, "allowlist-INITIAL_FORMS": 0,
            "allowlist-0-kind": "server", "allowlist-0-value": "10.1.2.3",
        }  # fmt: skip
        return client.post(url, {**data, **extra})

    refused = post()
    assert refused.status_code == 200 and "private" in refused.content.decode()
    assert not appspace.allowlist.exists()
    assert post(**{"allowlist-0-value": "API.example.com"}).status_code == 302
    appspace.refresh_from_db()
    assert appspace.status == Appspace.Status.PAUSED
    assert list(appspace.allowlist.values_list("value", flat=True)) == ["api.example.com"]


def test_other_users_cannot_reach_the_admin(alice):
    client = admin_client(alice)
    response = client.get(reverse("admin:appspaces_appspace_changelist"))
    assert response.status_code == 302


def test_staff_release_a_quarantined_name(admin_user, alice, bob):
    make_appspace(alice, make_version(alice), subdomain="notes").delete()
    with pytest.raises(SubdomainError):
        subdomain_check_available("notes", owner=bob)
    client = admin_client(admin_user)
    url = reverse("admin:appspaces_freedsubdomain_changelist")
    listing = client.get(url).content.decode()
    assert "notes" in listing and "alice@example.com" in listing and " UTC" in listing
    freed = FreedSubdomain.objects.get(name="notes")
    response = client.post(url, {"action": "release", "_selected_action": [freed.pk]})
    assert response.status_code == 302
    freed.refresh_from_db()
    assert freed.released_at is not None
    assert subdomain_check_available("notes", owner=bob) == "notes"
    # Never deleted there: the gateway still needs to know the name was used.
    delete = reverse("admin:appspaces_freedsubdomain_delete", args=[freed.pk])
    assert client.get(delete).status_code == 403


def test_the_appspace_list_shows_what_an_admin_acts_on(admin_user, alice, bob):
    from appspaces.usage.counters import today
    from backups.models import Backup

    notes = make_appspace(alice, make_version(alice), subdomain="notes", folders=True)
    other = make_appspace(bob, make_version(bob), subdomain="other", folders=True)
    Appspace.objects.filter(pk=notes.pk).update(disk_bytes=60 * 2**20, disk_mb=50)
    notes.usage_days.create(day=today(), cpu_seconds=12.5)
    for n in range(2):  # two backups: CPU today must not be counted once per backup
        Backup.objects.create(appspace=notes, kind="manual", state="ready", file_name=f"{n}.zst")
    client = admin_client(admin_user)
    url = reverse("admin:appspaces_appspace_changelist")
    listing = client.get(url).content.decode()
    assert "12.5 s" in listing and "never" in listing  # CPU today; bob's has no backup
    assert "over quota" in listing and "60.0" in listing
    assert "last backup" in listing.lower() and "cpu today" in listing.lower()
    mine = client.get(url, {"owner__id__exact": alice.pk}).content.decode()
    assert "notes" in mine and ">other<" not in mine

    client.post(url, {"action": "pause", "_selected_action": [other.pk]})
    assert Appspace.objects.get(pk=other.pk).status == Appspace.Status.PAUSED
    client.post(url, {"action": "back_up_now", "_selected_action": [notes.pk]})
    from appspaces.models import Job

    assert Job.objects.filter(kind=Job.Kind.BACKUP, appspace=notes).exists()


def test_the_admin_index_links_the_dropserver_pages(admin_user):
    page = admin_client(admin_user).get(reverse("admin:index")).content.decode()
    assert reverse("admin:backup_health") in page and reverse("instance_usage") in page
    health = admin_client(admin_user).get(reverse("admin:backup_health")).content.decode()
    assert 'class="breadcrumbs"' in health and "Backup health" in health  # the admin's look


def test_the_admin_index_says_when_disk_quotas_are_only_measured(admin_user, settings, monkeypatch):
    from sandbox.walls import diskimage

    client = admin_client(admin_user)
    monkeypatch.setattr(diskimage, "available", lambda: (True, ""))
    settings.DS_SANDBOX_DISK_IMAGES = None  # the default, on a host that can loop-mount
    assert 'id="disk-quota-fallback"' not in client.get(reverse("admin:index")).content.decode()
    monkeypatch.setattr(diskimage, "available", lambda: (False, "no /dev/loop-control"))
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="disk-quota-fallback"' in page and "no /dev/loop-control" in page
    monkeypatch.setattr(diskimage, "available", lambda: (True, ""))
    settings.DS_SANDBOX_DISK_IMAGES = False
    page = client.get(reverse("admin:index")).content.decode()
    assert "switched off (DS_SANDBOX_DISK_IMAGES=0)" in page
