"""An address identifies a person only once proven: typing someone's address into your own
account (unverified) gets you nothing of theirs, and never keeps them out.

B is the claimant, A the address's real owner; alice owns an appspace and shares it with A's
address. Everything goes through the panel's views as a browser would.
"""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.addresses import address_conflict, user_for_address
from accounts.models import Invitation, SignupMode, User
from accounts.services import invitation_create, signup_mode_set
from appspaces.models import AppspaceUser
from tests.accounts.conftest import clear_rate_limits, link_in_last_mail, panel_client
from tests.appspaces.appspace_fixtures import make_appspace, make_version
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db

A = "anna@example.com"


@pytest.fixture
def space(alice):
    return make_appspace(alice, make_version(alice), subdomain="notes")


@pytest.fixture
def claimant():
    """B, who typed A's address into their own account and never confirmed it."""
    b = make_user("bert@example.com", display_name="Bert")
    client = panel_client()
    client.force_login(b)
    response = client.post(reverse("account_email"), {"email": A, "action_add": ""})
    assert response.status_code == 302, response.content[:500]
    assert EmailAddress.objects.get(user=b, email=A).verified is False
    mail.outbox.clear()  # the confirmation went to A's mailbox, which B cannot read
    # allauth sends one confirmation per address per 3 minutes; A's own comes later in time.
    clear_rate_limits()
    return b


@pytest.fixture
def share(django_capture_on_commit_callbacks):
    def share(owner, space, email: str, permissions=("edit",)):
        client = panel_client()
        client.force_login(owner)
        with django_capture_on_commit_callbacks(execute=True):  # the invitation mail
            response = client.post(
                reverse("appspace_user_add", args=[space.public_id]),
                {"email": email, "display_name": "Anna", "permissions": list(permissions)},
            )
        assert response.status_code == 302, response.content[:1000]
        return response

    return share


def sign_up_from_invitation(email: str):
    client = panel_client()
    invitation_path = link_in_last_mail("/accounts/invitation/")
    assert client.get(invitation_path).status_code == 302
    response = client.post(
        reverse("account_signup"), {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302, response.content[:1000]
    return client


def test_only_a_verified_address_finds_its_account(claimant):
    assert user_for_address(A) is None
    a = make_user(A)
    assert user_for_address(f"  {A.upper()} ") == a
    assert user_for_address("bert@example.com") == claimant


def test_the_claimant_gets_nothing_and_the_owner_is_invited_and_joins(
    alice, space, claimant, share
):
    share(alice, space, A)

    assert not AppspaceUser.objects.filter(appspace=space).exists()  # not B
    assert [m.to for m in mail.outbox] == [[A]]  # the invitation goes to A's mailbox
    invitation = Invitation.objects.get(email=A)
    assert invitation.purpose["appspace"] == str(space.public_id)

    sign_up_from_invitation(A)
    anna = User.objects.get(email=A)
    member = AppspaceUser.objects.get(appspace=space)
    assert member.user == anna and member.permissions == ["edit"]
    assert EmailAddress.objects.get(user=anna, email=A).verified
    # B's claim is gone: it can never be confirmed, and it no longer stands in anyone's way.
    assert not EmailAddress.objects.filter(user=claimant, email=A).exists()
    assert not AppspaceUser.objects.filter(user=claimant).exists()


def test_an_unverified_claim_does_not_keep_the_owner_from_signing_up(alice, space, claimant, share):
    signup_mode_set(mode=SignupMode.OPEN)
    share(alice, space, A)
    mail.outbox.clear()
    client = panel_client()
    response = client.post(
        reverse("account_signup"), {"email": A, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    anna = User.objects.get(email=A)
    # Signed up, not yet proven: the share waits.
    assert not AppspaceUser.objects.filter(appspace=space).exists()
    client.post(link_in_last_mail("/accounts/confirm-email/"))
    assert EmailAddress.objects.get(user=anna, email=A).verified
    assert AppspaceUser.objects.get(appspace=space).user == anna
    assert Invitation.objects.get(email=A).accepted_by == anna
    assert not EmailAddress.objects.filter(user=claimant, email=A).exists()


def test_an_account_that_proves_an_added_address_gets_the_shares_to_it(
    alice, space, claimant, share
):
    anna = make_user("anna.work@example.com")
    share(alice, space, A)
    client = panel_client()
    client.force_login(anna)
    assert client.post(reverse("account_email"), {"email": A, "action_add": ""}).status_code == 302
    assert not AppspaceUser.objects.filter(appspace=space).exists()  # added is not proven
    client.post(link_in_last_mail("/accounts/confirm-email/"))
    assert AppspaceUser.objects.get(appspace=space).user == anna
    assert not AppspaceUser.objects.filter(user=claimant).exists()


def test_the_claimant_cannot_confirm_it_once_the_owner_has(alice, claimant):
    make_user(A)
    claim = EmailAddress.objects.filter(user=claimant, email=A).first()
    assert claim is None or not claim.set_verified()


def test_invitations_are_refused_only_for_a_proven_address(alice, claimant):
    invitation, _ = invitation_create(inviter=alice, email=A.upper(), send_email=False)
    assert invitation.email == A
    with pytest.raises(ValidationError):
        invitation_create(inviter=alice, email="bert@example.com", send_email=False)
    assert address_conflict("bert@example.com")
    assert not address_conflict(A)


def test_a_proven_address_shares_with_its_account_at_once(alice, space, bob, share):
    share(alice, space, bob.email.upper())
    assert AppspaceUser.objects.get(appspace=space).user == bob
    assert not Invitation.objects.exists()


def test_commands_find_owners_by_proven_address_only():
    """An account whose login address was never confirmed is nobody's by that address."""
    unproven = User.objects.create_user("unproven@example.com", PASSWORD)
    EmailAddress.objects.create(user=unproven, email=unproven.email, verified=False, primary=True)
    with pytest.raises(CommandError, match="No user"):
        call_command(
            "create_appspace",
            "--owner",
            unproven.email,
            "--app",
            "x",
            "--version",
            "1",
            "--subdomain",
            "x",
        )
