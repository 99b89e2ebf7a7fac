"""Password reset by email link (allauth)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from tests.accounts.conftest import link_in_last_mail, log_in, panel_client

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a different long passphrase 99"


def test_it_resets_the_password_by_email(panel, alice):
    response = panel.post(reverse("account_reset_password"), {"email": "alice@example.com"})
    assert response.status_code == 302
    assert b"Check your email" in panel.get(response["Location"]).content
    assert mail.outbox[-1].to == ["alice@example.com"]

    link = link_in_last_mail("/accounts/password/reset/key/")
    form_page = panel.get(link, follow=True)
    assert b"Choose a new password" in form_page.content
    action = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link
    done = panel.post(action, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert done.status_code == 302

    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert log_in(panel_client(), "alice@example.com", NEW_PASSWORD)["Location"] == "/"

    # The link works once.
    reused = panel_client().get(link, follow=True)
    assert b"This link does not work" in reused.content


def test_it_does_not_reveal_unknown_addresses(panel, alice):
    response = panel.post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert response["Location"] == reverse("account_reset_password_done")
    assert all(m.to == ["nobody@example.com"] for m in mail.outbox)
