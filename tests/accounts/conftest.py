"""Account test helpers: a panel client, clean rate-limit counters, mail links, TOTP codes."""

from __future__ import annotations

import re
import time

import pytest
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD


def clear_rate_limits() -> None:
    """Drop allauth's counters (and used-TOTP marks) without flushing a shared Redis."""
    client_of = getattr(cache, "_cache", None)
    if client_of is not None and hasattr(client_of, "get_client"):
        redis = client_of.get_client(write=True)
        own = cache.make_key("")  # this worker's keys only: KEY_PREFIX:VERSION:
        for pattern in ("*allauth:rl:*", "*allauth.mfa.totp.used*"):
            for key in redis.scan_iter(match=own + pattern):
                redis.delete(key)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _clean_rate_limits():
    clear_rate_limits()
    yield
    clear_rate_limits()


def panel_client(**kwargs) -> Client:
    return Client(HTTP_HOST=settings.DS_PANEL_HOST, **kwargs)


@pytest.fixture
def panel() -> Client:
    return panel_client()


def log_in(client: Client, email: str, password: str):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def link_in_last_mail(path_fragment: str) -> str:
    """The first URL in the newest mail whose path contains `path_fragment`, as a path."""
    assert mail.outbox, "no mail was sent"
    body = mail.outbox[-1].body
    for url in re.findall(r"https?://\S+", body):
        if path_fragment in url:
            return re.sub(r"^https?://[^/]+", "", url)
    raise AssertionError(f"no link with {path_fragment!r} in:\n{body}")


# --- Two-factor: codes computed with allauth's own TOTP helpers ---------------------------

PERIOD = mfa_settings.TOTP_PERIOD


def totp_code(secret: str, *, offset: int = 0) -> str:
    """The code an authenticator app shows now; waits out the last seconds of a period."""
    if time.time() % PERIOD > PERIOD - 3:
        time.sleep(PERIOD - time.time() % PERIOD + 0.1)
    return format_hotp_value(hotp_value(secret, int(time.time()) // PERIOD + offset))


def stored_secret(user) -> str:
    totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    return decrypt(totp.data["secret"])


def open_activation(client):
    """The activation page; like allauth, it first asks for the password again."""
    url = reverse("mfa_activate_totp")
    response = client.get(url)
    if response.status_code == 302:  # not within the last few minutes
        assert response["Location"].startswith(reverse("account_reauthenticate"))
        assert b"Confirm it is you" in client.get(response["Location"]).content
        back = client.post(response["Location"], {"password": PASSWORD, "next": url})
        assert back["Location"] == url
        response = client.get(url)
    assert response.status_code == 200
    return response


def activate_totp(client) -> None:
    open_activation(client)
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302, response.content
