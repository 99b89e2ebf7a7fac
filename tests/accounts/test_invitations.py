"""Invitations: a single-use, expiring link that pre-fills and locks the invited address."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, InvitationState, SignupMode, User, secret_hash
from accounts.services import (
    InvitationUnavailable,
    invitation_accept,
    invitation_create,
    invitations_revoke,
    signup_mode_set,
)
from accounts.signals import invitation_accepted
from tests.accounts.conftest import link_in_last_mail, panel_client
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

DORA = "dora@example.com"


def signup(client, email: str = DORA):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": PASSWORD, "password2": PASSWORD},
    )


@pytest.fixture
def invitation(admin_user):
    return invitation_create(inviter=admin_user, email=DORA, send_email=False)


def test_it_stores_only_a_hash_of_the_token(invitation):
    obj, url = invitation
    token = url.rstrip("/").rsplit("/", 1)[-1]
    assert len(token) >= 40
    assert obj.token_hash == secret_hash(token)
    assert token not in str(Invitation.objects.values().get(pk=obj.pk))


def test_it_expires_after_the_configured_days(settings, admin_user):
    settings.DS_INVITATION_DAYS = 3
    obj, _ = invitation_create(inviter=admin_user, email=DORA, send_email=False)
    assert abs(obj.expires_at - (obj.created + timedelta(days=3))) < timedelta(seconds=1)
    assert obj.state == InvitationState.PENDING


def test_it_mails_the_link_once_committed(admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _, url = invitation_create(inviter=admin_user, email="Dora@Example.com")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [DORA]
    assert url in mail.outbox[0].body
    assert "Admin invites you" in mail.outbox[0].subject


def test_it_refuses_to_invite_an_existing_account(admin_user, alice):
    with pytest.raises(ValidationError):
        invitation_create(inviter=admin_user, email="ALICE@example.com")
    with pytest.raises(ValidationError):
        invitation_create(inviter=admin_user, email="not an address")
    assert not Invitation.objects.exists()


def test_it_prefills_and_locks_the_invited_email(panel, invitation):
    _, url = invitation
    opened = panel.get(url)
    assert opened.status_code == 302
    assert opened["Location"] == reverse("account_signup")

    page = panel.get(reverse("account_signup"))
    assert page.status_code == 200
    html = page.content.decode()
    email_input = re.search(r'<input[^>]*name="email"[^>]*>', html).group(0)
    assert f'value="{DORA}"' in email_input
    assert "readonly" in email_input
    assert "You were invited by Admin" in html


def test_it_refuses_another_address_than_the_invited_one(panel, invitation):
    panel.get(invitation[1])
    response = signup(panel, "mallory@example.com")
    assert response.status_code == 200
    assert b"This invitation is for dora@example.com" in response.content
    assert not User.objects.filter(email="mallory@example.com").exists()
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_it_signs_up_with_a_verified_address_and_no_confirmation_mail(panel, invitation):
    obj, url = invitation
    panel.get(url)
    response = signup(panel)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")  # logged in straight away

    user = User.objects.get(email=DORA)
    assert EmailAddress.objects.get(user=user).verified
    assert mail.outbox == []
    obj.refresh_from_db()
    assert obj.state == InvitationState.ACCEPTED
    assert obj.accepted_by == user
    assert panel.get(reverse("dashboard")).status_code == 200


def test_it_also_verifies_invited_addresses_when_sign_up_is_open(panel, invitation):
    signup_mode_set(mode=SignupMode.OPEN)
    panel.get(invitation[1])
    assert b"This invitation is for" in signup(panel, "mallory@example.com").content
    assert signup(panel).status_code == 302
    assert EmailAddress.objects.get(email=DORA).verified
    assert Invitation.objects.get().state == InvitationState.ACCEPTED


def test_it_works_only_once(panel, invitation):
    _, url = invitation
    panel.get(url)
    signup(panel)
    panel.post(reverse("account_logout"))

    again = panel_client().get(url)
    assert again.status_code == 410
    assert b"already used" in again.content


def test_it_refuses_a_second_submit_of_the_same_invitation(invitation):
    # Two tabs opened the link; the second submits after the first signed up.
    _, url = invitation
    first, second = panel_client(), panel_client()
    first.get(url)
    second.get(url)
    assert signup(first).status_code == 302

    response = signup(second, DORA)
    assert b"This invitation was already used" in response.content
    assert User.objects.filter(email=DORA).count() == 1


def test_it_lets_only_one_of_two_racing_accepts_create_a_user(invitation):
    # Both requests checked the invitation before either claimed it: the conditional
    # UPDATE must still let only one through.
    obj, _ = invitation
    stale = Invitation.objects.get(pk=obj.pk)
    created = invitation_accept(
        invitation=obj, create_user=lambda: User.objects.create_user(DORA, PASSWORD)
    )
    assert created is not None
    with pytest.raises(InvitationUnavailable) as e:
        invitation_accept(
            invitation=stale,
            create_user=lambda: User.objects.create_user("other@example.com", PASSWORD),
        )
    assert e.value.state == InvitationState.ACCEPTED
    assert not User.objects.filter(email="other@example.com").exists()


@pytest.mark.django_db(transaction=True)
def test_it_survives_two_concurrent_sign_ups_with_one_user(admin_user):
    _, url = invitation_create(inviter=admin_user, email=DORA, send_email=False)
    clients = [panel_client(), panel_client()]
    for client in clients:
        client.get(url)
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def submit(i: int) -> None:
        barrier.wait()
        try:
            results[i] = signup(clients[i]).status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert User.objects.filter(email=DORA).count() == 1
    # One signs up. The other is told the invitation is used (410), that sign-up needs an
    # invitation (200), or, when its form passed validation just as the first committed, gets
    # allauth's enumeration-safe "check your email" redirect (302) without a second account.
    # Never a 500.
    assert 302 in results, results
    assert all(code in (200, 302, 410) for code in results), results
    assert Invitation.objects.get().accepted_by == User.objects.get(email=DORA)


def test_it_explains_an_expired_invitation(panel, invitation):
    obj, url = invitation
    Invitation.objects.filter(pk=obj.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = panel.get(url)
    assert response.status_code == 410
    assert b"This invitation has expired" in response.content
    assert b"Ask Admin for a new one" in response.content


def test_it_refuses_an_invitation_that_expired_after_it_was_opened(panel, invitation):
    obj, url = invitation
    panel.get(url)
    Invitation.objects.filter(pk=obj.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = signup(panel)
    assert b"This invitation has expired" in response.content
    assert not User.objects.filter(email=DORA).exists()


def test_it_explains_a_revoked_invitation(panel, invitation):
    obj, url = invitation
    assert invitations_revoke(invitations=[obj]) == 1
    response = panel.get(url)
    assert response.status_code == 410
    assert b"withdrawn" in response.content


def test_it_explains_an_unknown_token(panel, invitation):
    response = panel.get(reverse("invitation_open", args=["nope" * 10]))
    assert response.status_code == 404
    assert b"This invitation link is not valid" in response.content


def test_it_tells_a_logged_in_user_to_log_out_first(panel, invitation, alice):
    panel.force_login(alice)
    response = panel.get(invitation[1])
    assert response.status_code == 200
    assert b"You are already logged in" in response.content


def test_it_sends_invitation_accepted_with_the_purpose(panel, admin_user):
    received = []

    def receiver(sender, invitation, user, **kwargs):
        received.append((invitation.purpose, user.email, invitation.accepted_by_id == user.pk))

    _, url = invitation_create(
        inviter=admin_user, email=DORA, purpose={"appspace": "1234"}, send_email=False
    )
    invitation_accepted.connect(receiver)
    try:
        panel.get(url)
        signup(panel)
    finally:
        invitation_accepted.disconnect(receiver)
    assert received == [({"appspace": "1234"}, DORA, True)]


def test_it_rolls_the_sign_up_back_when_a_receiver_fails(admin_user):
    def receiver(**kwargs):
        raise RuntimeError("attaching failed")

    _, url = invitation_create(inviter=admin_user, email=DORA, send_email=False)
    client = panel_client(raise_request_exception=False)
    invitation_accepted.connect(receiver)
    try:
        client.get(url)
        assert signup(client).status_code == 500
    finally:
        invitation_accepted.disconnect(receiver)
    assert not User.objects.filter(email=DORA).exists()
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_it_lets_non_admin_owners_invite(panel, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _, url = invitation_create(inviter=alice, email=DORA, purpose={"appspace": "x"})
    assert "Alice invites you" in mail.outbox[0].subject
    panel.get(link_in_last_mail("/accounts/invitation/"))
    assert signup(panel).status_code == 302
    assert Invitation.objects.get().inviter == alice
