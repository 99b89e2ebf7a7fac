"""Sharing an appspace with an address, through the panel and the real gateway: someone who
typed that address into their own account (unverified) is refused at the appspace, and the
address's owner gets the invitation, signs up and is let in."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import User
from appspaces.models import AppspaceUser
from tests.accounts.conftest import clear_rate_limits, link_in_last_mail
from tests.conftest import PASSWORD, make_user
from tests.gateway.conftest import wait_for

pytestmark = pytest.mark.sandbox

A = "shares-anna@example.com"


def panel(user=None) -> Client:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    if user is not None:
        client.force_login(user)
    return client


def test_an_unverified_claim_gets_nothing_and_the_owner_joins(stack):
    bert = make_user("shares-bert@example.com", display_name="Bert")
    added = panel(bert).post(reverse("account_email"), {"email": A, "action_add": ""})
    assert added.status_code == 302
    assert not EmailAddress.objects.get(user=bert, email=A).verified
    clear_rate_limits()  # allauth's one confirmation mail per address per 3 minutes
    mail.outbox.clear()

    space = stack.appspace()
    shared = panel(stack.alice).post(
        reverse("appspace_user_add", args=[space.public_id]),
        {"email": A, "display_name": "Anna", "permissions": ["edit"]},
    )
    assert shared.status_code == 302
    assert not AppspaceUser.objects.filter(appspace=space).exists()

    # Bert, through the real panel and gateway: refused, and no session for the appspace.
    browser = stack.browser(bert)
    refused = browser.get(stack.url(space, "/user"), follow=True)
    assert refused.status == 403, refused.text[:500]
    assert not browser.cookies.get(stack.host(space), {}).get("ds_appspace")

    # Anna reads the invitation in her mailbox, signs up, and uses the appspace as "edit".
    assert [m.to for m in mail.outbox] == [[A]]
    anna_panel = panel()
    assert anna_panel.get(link_in_last_mail("/accounts/invitation/")).status_code == 302
    signed_up = anna_panel.post(
        reverse("account_signup"), {"email": A, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert signed_up.status_code == 302
    anna = User.objects.get(email=A)
    browser = stack.enter(space, anna)
    # Daphne is another process: it may serve the appspace's users as it read them a moment
    # ago (when Bert was refused) for up to DS_GATEWAY_CACHE_TTL.
    wait_for(lambda: browser.get(stack.url(space, "/edit")).status == 200, timeout=5)
    seen = browser.get(stack.url(space, "/edit"))
    assert seen.status == 200, seen.text[:500]
    assert seen.json()["user"] == {
        "id": str(anna.public_id),
        "displayName": "Anna",
        "permissions": ["edit"],
    }
    # and Bert still cannot get in
    assert stack.browser(bert).get(stack.url(space, "/user"), follow=True).status == 403
