"""The first admin: a one-time setup link printed by `serve`, and `createsuperuser`."""

from __future__ import annotations

import os
from datetime import timedelta
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import SetupKey, User
from accounts.services import setup_link_issue
from tests.accounts.conftest import log_in, panel_client
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ROOT = "root@example.com"


def path_of(url: str) -> str:
    assert url.startswith(settings.DS_PANEL_URL + "/setup/")
    return url[len(settings.DS_PANEL_URL) :]


def create_admin(client, path: str, email: str = ROOT, password: str = PASSWORD):
    return client.post(path, {"email": email, "password1": password, "password2": password})


def test_it_issues_a_link_only_while_there_is_no_active_admin(admin_user):
    assert setup_link_issue() is None
    admin_user.is_active = False
    admin_user.save()
    assert setup_link_issue() is not None


def test_it_keeps_only_a_hash_and_an_expiry(settings):
    settings.DS_SETUP_LINK_HOURS = 2
    url = setup_link_issue()
    key = url.rstrip("/").rsplit("/", 1)[-1]
    stored = SetupKey.objects.get()
    assert key not in stored.key_hash
    assert abs(stored.expires_at - (stored.created + timedelta(hours=2))) < timedelta(seconds=1)


def test_it_creates_the_first_admin_and_logs_them_in(panel):
    path = path_of(setup_link_issue())
    page = panel.get(path)
    assert page.status_code == 200
    assert b"Create the admin account" in page.content

    response = create_admin(panel, path)
    assert response.status_code == 302
    assert response["Location"] == reverse("account_overview")
    root = User.objects.get(email=ROOT)
    assert root.is_superuser and root.is_staff and root.is_active
    assert EmailAddress.objects.get(user=root).verified
    assert panel.get(reverse("admin:index")).status_code == 200


def test_it_works_only_once(panel):
    path = path_of(setup_link_issue())
    create_admin(panel, path)
    again = panel_client().get(path)
    assert again.status_code == 410
    assert b"already has an admin" in again.content
    assert User.objects.count() == 1


def test_it_refuses_a_used_key_when_no_admin_is_left(panel):
    path = path_of(setup_link_issue())
    create_admin(panel, path)
    User.objects.update(is_active=False)
    response = panel_client().get(path)
    assert response.status_code == 410
    assert b"already used" in response.content


def test_it_refuses_once_an_admin_exists(panel, admin_user):
    # A link issued before someone ran createsuperuser stops working.
    admin_user.delete()
    path = path_of(setup_link_issue())
    User.objects.create_superuser("ops@example.com", PASSWORD)
    response = create_admin(panel, path)
    assert response.status_code == 410
    assert not User.objects.filter(email=ROOT).exists()


def test_it_refuses_an_expired_key(panel):
    path = path_of(setup_link_issue())
    SetupKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = panel.get(path)
    assert response.status_code == 410
    assert b"has expired" in response.content
    assert create_admin(panel, path).status_code == 410
    assert not User.objects.exists()


def test_it_invalidates_earlier_keys(panel):
    old = path_of(setup_link_issue())
    new = path_of(setup_link_issue())
    assert panel.get(old).status_code == 404
    assert b"not valid" in panel.get(old).content
    assert panel.get(new).status_code == 200


def test_it_refuses_an_unknown_key(panel):
    setup_link_issue()
    response = panel.get(reverse("setup", args=["x" * 43]))
    assert response.status_code == 404


def test_it_validates_the_password(panel):
    path = path_of(setup_link_issue())
    weak = create_admin(panel, path, password="password")
    assert weak.status_code == 200
    assert b"This password is too common." in weak.content
    differ = panel.post(path, {"email": ROOT, "password1": PASSWORD, "password2": PASSWORD + "x"})
    assert b"The two passwords differ." in differ.content
    assert not User.objects.exists()
    assert SetupKey.objects.get().used_at is None  # a failed form does not spend the key


def test_it_refuses_an_address_that_has_an_account(panel, alice):
    path = path_of(setup_link_issue())
    response = create_admin(panel, path, email=alice.email)
    assert b"An account with this address exists already" in response.content
    alice.refresh_from_db()
    assert not alice.is_superuser
    assert alice.check_password(PASSWORD)


def test_the_command_prints_a_working_link(panel):
    out = StringIO()
    call_command("setup_link", stdout=out)
    url = out.getvalue().strip()
    assert panel.get(path_of(url)).status_code == 200


def test_the_command_refuses_once_an_admin_exists(admin_user):
    with pytest.raises(CommandError, match="already has an active admin"):
        call_command("setup_link")


def test_createsuperuser_makes_an_admin_who_can_log_in(monkeypatch):
    monkeypatch.setitem(os.environ, "DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", interactive=False, email="Ops@Example.com", stdout=StringIO())
    ops = User.objects.get(email="ops@example.com")
    assert ops.is_superuser and ops.is_staff
    client = panel_client()
    assert log_in(client, "ops@example.com", PASSWORD)["Location"] == "/"
    assert client.get(reverse("admin:index")).status_code == 200
    assert setup_link_issue() is None
