"""The Django admin for instance admins: users, invitations and the sign-up mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.admin import NEW_INVITATION_SESSION_KEY
from accounts.models import InstanceSettings, Invitation, InvitationState, SignupMode, User
from accounts.services import invitation_create, signup_mode_get
from tests.accounts.conftest import link_in_last_mail, log_in, panel_client
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db

USERS = reverse("admin:accounts_user_changelist")
INVITATIONS = reverse("admin:accounts_invitation_changelist")


@pytest.fixture
def admin_client(admin_user):
    client = panel_client()
    client.force_login(admin_user)
    return client


def act(client, url: str, action: str, objs) -> object:
    return client.post(
        url, {"action": action, "_selected_action": [o.pk for o in objs]}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- Who sees the admin ---------------------------------------------------------------------


def test_the_outsider_cannot_see_the_admin(charlie):
    client = panel_client()
    client.force_login(charlie)
    for url in (reverse("admin:index"), USERS, INVITATIONS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert b"Admin" not in client.get(reverse("dashboard")).content.split(b"<main")[0]


def test_the_anonymous_visitor_cannot_see_the_admin(panel):
    assert panel.get(USERS)["Location"].startswith(reverse("admin:login"))


def test_the_admin_sees_the_admin(admin_client):
    assert admin_client.get(reverse("admin:index")).status_code == 200
    assert b'href="/admin/"' in admin_client.get(reverse("dashboard")).content


# --- Users ----------------------------------------------------------------------------------


def test_it_lists_users_with_their_flags(admin_client, alice, bob):
    html = admin_client.get(USERS).content.decode()
    for text in ("alice@example.com", "Alice", "bob@example.com", "date joined", "staff status"):
        assert text.lower() in html.lower()


def test_it_deactivates_users(admin_client, alice, bob):
    bob_client = panel_client()
    bob_client.force_login(bob)
    act(admin_client, USERS, "deactivate", [alice, bob])
    assert not User.objects.get(pk=alice.pk).is_active
    assert not User.objects.get(pk=bob.pk).is_active
    assert bob_client.get(reverse("dashboard")).status_code == 302  # his session is over


def test_a_deactivated_user_cannot_log_in(admin_client, bob):
    act(admin_client, USERS, "deactivate", [bob])
    client = panel_client()
    response = log_in(client, bob.email, PASSWORD)
    assert response["Location"] == reverse("account_inactive")
    assert b"This account has been deactivated" in client.get(response["Location"]).content
    assert client.get(reverse("dashboard")).status_code == 302


def test_it_makes_and_removes_admins(admin_client, alice):
    act(admin_client, USERS, "make_admin", [alice])
    alice.refresh_from_db()
    assert alice.is_superuser and alice.is_staff

    act(admin_client, USERS, "remove_admin", [alice])
    alice.refresh_from_db()
    assert not alice.is_superuser and not alice.is_staff


def test_it_lets_an_admin_step_down_when_another_remains(admin_client, admin_user):
    other = make_user("other-admin@example.com", staff=True)
    act(admin_client, USERS, "remove_admin", [admin_user])
    admin_user.refresh_from_db()
    assert not admin_user.is_superuser
    assert User.objects.get(pk=other.pk).is_superuser


@pytest.mark.parametrize("action", ["remove_admin", "deactivate"])
def test_it_never_leaves_the_instance_without_an_active_admin(admin_client, admin_user, action):
    response = act(admin_client, USERS, action, [admin_user])
    assert any("without any active admin" in m for m in messages_of(response))
    admin_user.refresh_from_db()
    assert admin_user.is_superuser and admin_user.is_active


def test_it_refuses_demoting_all_admins_at_once(admin_client, admin_user):
    other = make_user("other-admin@example.com", staff=True)
    act(admin_client, USERS, "remove_admin", [admin_user, other])
    assert User.objects.filter(is_superuser=True, is_active=True).count() == 2


def test_it_refuses_demoting_the_last_admin_on_the_change_form(admin_client, admin_user):
    url = reverse("admin:accounts_user_change", args=[admin_user.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    data = {
        "email": admin_user.email,
        "display_name": "Admin",
        "is_active": "on",
        "is_staff": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert b"without any active admin" in response.content
    assert User.objects.get(pk=admin_user.pk).is_superuser


def test_it_does_not_offer_to_delete_the_last_admin(admin_client, admin_user, alice):
    def delete_page(user):
        return admin_client.get(reverse("admin:accounts_user_delete", args=[user.pk]))

    assert delete_page(admin_user).status_code == 403
    assert delete_page(alice).status_code == 200


def test_it_adds_a_user_by_email(admin_client):
    response = admin_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "Eve@Example.com",
            "usable_password": "true",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 302
    assert User.objects.get(email="eve@example.com").check_password(PASSWORD)


# --- Invitations ----------------------------------------------------------------------------


def test_it_creates_an_invitation_and_shows_its_link_once(admin_client, admin_user):
    add = reverse("admin:accounts_invitation_add")
    response = admin_client.post(add, {"email": "dora@example.com"})
    invitation = Invitation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:accounts_invitation_change", args=[invitation.pk])
    assert invitation.inviter == admin_user

    page = admin_client.get(response["Location"])
    html = page.content.decode()
    assert "Send this link to dora@example.com" in html
    assert len(mail.outbox) == 1
    link = link_in_last_mail("/accounts/invitation/")
    assert f'value="{settings.DS_PANEL_URL}{link}"' in html
    assert NEW_INVITATION_SESSION_KEY not in admin_client.session
    assert "Send this link" not in admin_client.get(response["Location"]).content.decode()

    # The link works for the invited person.
    visitor = panel_client()
    assert visitor.get(link)["Location"] == reverse("account_signup")


def test_it_still_shows_the_link_when_the_mail_fails(admin_client, monkeypatch):
    def broken_send_mail(*args, **kwargs):
        raise ConnectionRefusedError("no SMTP server")

    monkeypatch.setattr("accounts.services.send_mail", broken_send_mail)
    add = reverse("admin:accounts_invitation_add")
    response = admin_client.post(add, {"email": "dora@example.com"}, follow=True)
    assert response.status_code == 200
    assert any("could not be emailed" in m for m in messages_of(response))
    assert b"Send this link to dora@example.com" in response.content
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_it_refuses_to_invite_an_existing_user(admin_client, alice):
    response = admin_client.post(
        reverse("admin:accounts_invitation_add"), {"email": "Alice@example.com"}
    )
    assert response.status_code == 200
    assert b"already has an account" in response.content
    assert not Invitation.objects.exists()


def test_it_lists_invitation_states(admin_client, admin_user):
    pending, _ = invitation_create(inviter=admin_user, email="p@example.com", send_email=False)
    expired, _ = invitation_create(inviter=admin_user, email="e@example.com", send_email=False)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    revoked, _ = invitation_create(inviter=admin_user, email="r@example.com", send_email=False)
    act(admin_client, INVITATIONS, "revoke", [revoked])

    html = admin_client.get(INVITATIONS).content.decode()
    for label in ("Pending", "Expired", "Revoked"):
        assert f'<td class="field-state_label">{label}</td>' in html
    for state, email in (("pending", "p@"), ("expired", "e@"), ("revoked", "r@")):
        filtered = admin_client.get(INVITATIONS, {"state": state}).content.decode()
        assert email in filtered
        assert sum(e in filtered for e in ("p@example", "e@example", "r@example")) == 1


def test_it_revokes_only_pending_invitations(admin_client, admin_user, alice):
    pending, url = invitation_create(inviter=admin_user, email="p@example.com", send_email=False)
    accepted, _ = invitation_create(inviter=admin_user, email="a@example.com", send_email=False)
    Invitation.objects.filter(pk=accepted.pk).update(accepted_at=timezone.now(), accepted_by=alice)

    response = act(admin_client, INVITATIONS, "revoke", [pending, accepted])
    assert "Revoked 1 pending invitation(s)." in messages_of(response)
    assert Invitation.objects.get(pk=pending.pk).state == InvitationState.REVOKED
    assert Invitation.objects.get(pk=accepted.pk).state == InvitationState.ACCEPTED
    assert panel_client().get(url).status_code == 410


def test_it_shows_an_issued_invitation_read_only(admin_client, admin_user):
    invitation, _ = invitation_create(inviter=admin_user, email="p@example.com", send_email=False)
    url = reverse("admin:accounts_invitation_change", args=[invitation.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b'name="email"' not in page.content
    admin_client.post(url, {"email": "mallory@example.com"})
    assert Invitation.objects.get().email == "p@example.com"


# --- Sign-up mode ---------------------------------------------------------------------------


def test_it_switches_the_sign_up_mode(admin_client):
    changelist = admin_client.get(reverse("admin:accounts_instancesettings_changelist"))
    assert changelist.status_code == 302
    page = admin_client.get(changelist["Location"])
    assert b"By invitation" in page.content

    response = admin_client.post(changelist["Location"], {"signup_mode": "open"})
    assert response.status_code == 302
    assert signup_mode_get() == SignupMode.OPEN
    assert InstanceSettings.objects.count() == 1
    assert admin_client.get(reverse("admin:accounts_instancesettings_add")).status_code == 403
