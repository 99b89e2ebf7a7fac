"""Email verification is mandatory for open sign-ups: no login until the link is followed."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from accounts.models import SignupMode
from accounts.services import signup_mode_set
from tests.accounts.conftest import link_in_last_mail, log_in, panel_client
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

DORA = "dora@example.com"


@pytest.fixture
def open_signup():
    signup_mode_set(mode=SignupMode.OPEN)


def test_it_verifies_the_address_end_to_end(panel, open_signup):
    response = panel.post(
        reverse("account_signup"), {"email": DORA, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert b"Check your email" in panel.get(response["Location"]).content
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [DORA]

    # Not logged in yet: the dashboard sends us to the login page.
    assert panel.get(reverse("dashboard"))["Location"].startswith(reverse("account_login"))
    assert not EmailAddress.objects.get(email=DORA).verified

    confirm_path = link_in_last_mail("/accounts/confirm-email/")
    page = panel.get(confirm_path)
    assert page.status_code == 200
    assert b"Confirm that <strong>dora@example.com</strong>" in page.content

    confirmed = panel.post(confirm_path)
    assert confirmed.status_code == 302
    assert EmailAddress.objects.get(email=DORA).verified
    assert panel.get(reverse("dashboard")).status_code == 200


def test_it_refuses_login_before_verification(panel, open_signup):
    panel.post(
        reverse("account_signup"), {"email": DORA, "password1": PASSWORD, "password2": PASSWORD}
    )
    other = panel_client()
    response = log_in(other, DORA, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert other.get(reverse("dashboard")).status_code == 302


def test_it_explains_a_bad_confirmation_link(panel):
    response = panel.get(reverse("account_confirm_email", args=["not-a-key"]))
    assert response.status_code == 200
    assert b"has expired or is not valid" in response.content
