"""Sign-up modes: open lets anyone in, invite only people with an invitation, closed nobody."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import InstanceSettings, SignupMode, User
from accounts.services import invitation_create, signup_mode_get, signup_mode_set
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def signup(client, email: str):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": PASSWORD, "password2": PASSWORD},
    )


def test_it_defaults_to_invite():
    assert signup_mode_get() == SignupMode.INVITE
    assert InstanceSettings.objects.count() == 1


def test_it_keeps_a_single_settings_row():
    signup_mode_set(mode="open")
    InstanceSettings(signup_mode=SignupMode.CLOSED).save()
    assert InstanceSettings.objects.count() == 1
    assert signup_mode_get() == SignupMode.CLOSED


def test_it_lets_anyone_sign_up_when_open(panel):
    signup_mode_set(mode=SignupMode.OPEN)
    page = panel.get(reverse("account_signup"))
    assert page.status_code == 200
    assert b"Create your account" in page.content

    response = signup(panel, "dora@example.com")
    assert response.status_code == 302
    assert User.objects.filter(email="dora@example.com").exists()


def test_it_refuses_sign_up_without_invitation_in_invite_mode(panel):
    page = panel.get(reverse("account_signup"))
    assert b"Sign-up is by invitation" in page.content
    assert b'name="password1"' not in page.content

    response = signup(panel, "dora@example.com")
    assert b"Sign-up is by invitation" in response.content
    assert not User.objects.filter(email="dora@example.com").exists()


def test_it_allows_sign_up_with_an_invitation_in_invite_mode(panel, admin_user):
    _, url = invitation_create(inviter=admin_user, email="dora@example.com")
    panel.get(url)
    response = signup(panel, "dora@example.com")
    assert response.status_code == 302
    assert User.objects.filter(email="dora@example.com").exists()


def test_it_refuses_everyone_when_closed_even_with_an_invitation(panel, admin_user):
    _, url = invitation_create(inviter=admin_user, email="dora@example.com")
    signup_mode_set(mode=SignupMode.CLOSED)

    opened = panel.get(url)
    assert opened.status_code == 403
    assert b"Sign-up is closed" in opened.content

    response = signup(panel, "dora@example.com")
    assert b"Sign-up is closed" in response.content
    assert not User.objects.filter(email="dora@example.com").exists()


def test_it_closes_sign_up_for_an_invitation_opened_before_closing(panel, admin_user):
    _, url = invitation_create(inviter=admin_user, email="dora@example.com")
    panel.get(url)
    signup_mode_set(mode=SignupMode.CLOSED)
    signup(panel, "dora@example.com")
    assert not User.objects.filter(email="dora@example.com").exists()


def test_it_only_offers_the_sign_up_link_when_open(panel):
    login_page = panel.get(reverse("account_login"))
    assert reverse("account_signup").encode() not in login_page.content
    assert b"by invitation" in login_page.content

    signup_mode_set(mode=SignupMode.OPEN)
    login_page = panel.get(reverse("account_login"))
    assert reverse("account_signup").encode() in login_page.content
