"""Every account page renders in the panel layout and works under the strict CSP.

The CSP has no 'unsafe-inline', so an inline script, style element, style attribute or
event-handler attribute would silently break in browsers: none may appear.
"""

from __future__ import annotations

import re

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY
from django.urls import reverse

from accounts.models import SignupMode
from accounts.services import invitation_create, setup_link_issue, signup_mode_set
from tests.accounts.conftest import activate_totp, log_in, open_activation, panel_client
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def assert_csp_safe(response, *, status: int = 200) -> None:
    assert response.status_code == status, (response.request["PATH_INFO"], response.status_code)
    html = response.content.decode()
    where = response.request["PATH_INFO"]
    assert not INLINE_SCRIPT.search(html), f"inline <script> on {where}"
    assert not INLINE_STYLE.search(html), f"inline style on {where}"
    assert not EVENT_HANDLER.search(html), f"event-handler attribute on {where}"
    assert "/static/css/panel.css" in html or "/static/admin/" in html, where
    assert "unsafe-inline" not in response["Content-Security-Policy"]


def test_visitor_pages_are_csp_safe(panel, admin_user):
    for name in (
        "account_login",
        "account_signup",
        "account_reset_password",
        "account_reset_password_done",
        "account_email_verification_sent",
    ):
        assert_csp_safe(panel.get(reverse(name)))
    assert_csp_safe(panel.get(reverse("account_confirm_email", args=["bad"])))
    assert_csp_safe(panel.get(reverse("invitation_open", args=["bad"])), status=404)
    signup_mode_set(mode=SignupMode.OPEN)
    assert_csp_safe(panel.get(reverse("account_signup")))
    _, url = invitation_create(inviter=admin_user, email="dora@example.com", send_email=False)
    assert_csp_safe(panel.get(url, follow=True))


def test_setup_pages_are_csp_safe(panel):
    url = setup_link_issue()
    path = url[url.index("/setup/") :]
    assert_csp_safe(panel.get(path))
    assert_csp_safe(panel.get(reverse("setup", args=["bad"])), status=404)


def test_account_pages_are_csp_safe(panel, alice):
    log_in(panel, alice.email, PASSWORD)
    for name in (
        "account_overview",
        "account_email",
        "account_change_password",
        "mfa_index",
        "account_logout",
    ):
        assert_csp_safe(panel.get(reverse(name)))
    assert_csp_safe(panel.get(reverse("account_reauthenticate")))
    assert_csp_safe(open_activation(panel))
    activate_totp(panel)
    for name in (
        "mfa_view_recovery_codes",
        "mfa_generate_recovery_codes",
        "mfa_index",
        "mfa_deactivate_totp",
    ):
        assert_csp_safe(panel.get(reverse(name)))


def test_the_two_factor_step_is_csp_safe(alice):
    client = panel_client()
    log_in(client, alice.email, PASSWORD)
    activate_totp(client)
    assert SECRET_SESSION_KEY not in client.session  # the pending secret is gone once active
    second = panel_client()
    log_in(second, alice.email, PASSWORD)
    assert_csp_safe(second.get(reverse("mfa_authenticate")))


def test_admin_pages_are_csp_safe(admin_user, alice):
    client = panel_client()
    client.force_login(admin_user)
    for url in (
        reverse("admin:index"),
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_user_change", args=[alice.pk]),
        reverse("admin:accounts_invitation_changelist"),
        reverse("admin:accounts_invitation_add"),
    ):
        assert_csp_safe(client.get(url))


def test_the_account_page_saves_the_display_name(panel, alice):
    panel.force_login(alice)
    page = panel.get(reverse("account_overview"))
    assert b"You log in as <strong>alice@example.com</strong>" in page.content
    for name in ("account_email", "account_change_password", "mfa_index"):
        assert reverse(name).encode() in page.content
    response = panel.post(reverse("account_overview"), {"display_name": "Alice L."})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.display_name == "Alice L."


def test_the_account_page_needs_a_login(panel):
    response = panel.get(reverse("account_overview"))
    assert response["Location"].startswith(reverse("account_login"))
