"""Two-factor login with an authenticator app (allauth.mfa TOTP) and recovery codes."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY
from django.urls import reverse

from tests.accounts.conftest import (
    activate_totp,
    log_in,
    open_activation,
    panel_client,
    stored_secret,
    totp_code,
)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_with_totp(alice):
    client = panel_client()
    log_in(client, alice.email, PASSWORD)
    activate_totp(client)
    return alice


def test_it_shows_the_qr_code_as_an_image_the_csp_allows(panel, alice):
    log_in(panel, alice.email, PASSWORD)
    page = open_activation(panel)
    html = page.content.decode()
    assert '<img src="data:image/svg+xml;base64,' in html
    assert panel.session[SECRET_SESSION_KEY] in html  # the secret, for manual entry
    assert "data:" in page["Content-Security-Policy"].split("img-src", 1)[1].split(";")[0]


def test_it_refuses_a_wrong_code_when_activating(panel, alice):
    log_in(panel, alice.email, PASSWORD)
    open_activation(panel)
    secret = panel.session[SECRET_SESSION_KEY]
    wrong = totp_code(secret, offset=5)
    response = panel.post(reverse("mfa_activate_totp"), {"code": wrong})
    assert response.status_code == 200
    assert b"Incorrect code" in response.content
    assert not Authenticator.objects.filter(user=alice).exists()


def test_it_enables_totp_and_recovery_codes(panel, alice):
    log_in(panel, alice.email, PASSWORD)
    activate_totp(panel)
    types = set(Authenticator.objects.filter(user=alice).values_list("type", flat=True))
    assert types == {Authenticator.Type.TOTP, Authenticator.Type.RECOVERY_CODES}
    codes = panel.get(reverse("mfa_view_recovery_codes"))
    assert codes.status_code == 200
    assert b'id="recovery_codes"' in codes.content
    overview = panel.get(reverse("account_overview"))
    assert b'<span class="status running">On</span>' in overview.content


def test_it_asks_for_the_code_after_the_password(panel, alice_with_totp):
    response = log_in(panel, "alice@example.com", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert panel.get(reverse("dashboard")).status_code == 302  # not logged in yet

    page = panel.get(reverse("mfa_authenticate"))
    assert b"Two-factor authentication" in page.content

    code = totp_code(stored_secret(alice_with_totp))
    done = panel.post(reverse("mfa_authenticate"), {"code": code})
    assert done.status_code == 302
    assert panel.get(reverse("dashboard")).status_code == 200


def test_it_refuses_a_wrong_code_at_login(panel, alice_with_totp):
    log_in(panel, "alice@example.com", PASSWORD)
    wrong = totp_code(stored_secret(alice_with_totp), offset=7)
    response = panel.post(reverse("mfa_authenticate"), {"code": wrong})
    assert response.status_code == 200
    assert b"Incorrect code" in response.content
    assert panel.get(reverse("dashboard")).status_code == 302


def test_it_refuses_a_replayed_code(alice_with_totp):
    code = totp_code(stored_secret(alice_with_totp))
    first, second = panel_client(), panel_client()
    log_in(first, "alice@example.com", PASSWORD)
    assert first.post(reverse("mfa_authenticate"), {"code": code}).status_code == 302
    log_in(second, "alice@example.com", PASSWORD)
    response = second.post(reverse("mfa_authenticate"), {"code": code})
    assert b"Incorrect code" in response.content
    assert second.get(reverse("dashboard")).status_code == 302


def test_it_accepts_a_recovery_code_once(alice_with_totp):
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    rc = Authenticator.objects.get(user=alice_with_totp, type=Authenticator.Type.RECOVERY_CODES)
    code = RecoveryCodes(rc).get_unused_codes()[0]
    client = panel_client()
    log_in(client, "alice@example.com", PASSWORD)
    assert client.post(reverse("mfa_authenticate"), {"code": code}).status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200

    again = panel_client()
    log_in(again, "alice@example.com", PASSWORD)
    assert b"Incorrect code" in again.post(reverse("mfa_authenticate"), {"code": code}).content
