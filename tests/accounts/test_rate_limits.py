"""allauth's login rate limits: repeated bad passwords lock the account's logins for a while."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.accounts.conftest import log_in, panel_client
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

TOO_MANY = b"Too many failed login attempts. Try again later."


def test_it_locks_logins_after_five_bad_passwords(panel, alice):
    for _ in range(5):
        response = log_in(panel, alice.email, "wrong password")
        assert response.status_code == 200
        assert b"The email address and/or password you specified are not correct." in (
            response.content
        )
    locked = log_in(panel, alice.email, "wrong password")
    assert TOO_MANY in locked.content

    # Even the right password is refused now, from any browser.
    other = panel_client()
    response = log_in(other, alice.email, PASSWORD)
    assert response.status_code == 200
    assert TOO_MANY in response.content
    assert other.get(reverse("dashboard")).status_code == 302


def test_it_counts_per_account(panel, alice, bob):
    for _ in range(6):
        log_in(panel, alice.email, "wrong password")
    response = log_in(panel_client(), bob.email, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_limits_bad_passwords_per_address(panel, alice, bob, charlie):
    # 10 failures a minute from one IP, whatever the accounts.
    for user in (alice, bob):
        for _ in range(5):
            log_in(panel, user.email, "wrong password")
    response = log_in(panel, charlie.email, "wrong password")
    assert TOO_MANY in response.content
