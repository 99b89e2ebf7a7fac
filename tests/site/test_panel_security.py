"""The panel's security baseline: headers, cookies, CSRF, and the https production settings.

Settings are computed at import, so the https variant runs in subprocesses with a
production environment (DS_DOMAIN=example.com, DS_SCHEME=https).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD

BASE_DIR = Path(__file__).resolve().parents[2]
PRODUCTION_KEY = secrets.token_urlsafe(64)


def panel_client(**kwargs) -> Client:
    return Client(HTTP_HOST=settings.DS_PANEL_HOST, **kwargs)


def log_in(client: Client, email: str = "alice@example.com"):
    return client.post(reverse("account_login"), {"login": email, "password": PASSWORD})


def csp(response) -> dict[str, str]:
    directives = (d.strip() for d in response["Content-Security-Policy"].split(";"))
    return {d.split()[0]: d for d in directives if d}


# --- Headers --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("logged_in", [False, True])
def test_it_sends_the_security_headers(alice, logged_in):
    client = panel_client()
    if logged_in:
        client.force_login(alice)
    for url in (reverse("account_login"), reverse("dashboard"), "/no/such/page/"):
        response = client.get(url)
        policy = csp(response)
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        assert "unsafe-eval" not in response["Content-Security-Policy"]
        assert policy["script-src"] == "script-src 'self'"
        assert policy["style-src"] == "style-src 'self'"
        assert policy["object-src"] == "object-src 'none'"
        assert policy["frame-ancestors"] == "frame-ancestors 'none'"
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response["X-DNS-Prefetch-Control"] == "off"
        assert "Strict-Transport-Security" not in response  # plain http in development


@pytest.mark.django_db
def test_it_sends_no_cors_headers(alice):
    client = panel_client()
    client.force_login(alice)
    for method in (client.get, client.options):
        response = method(reverse("dashboard"), HTTP_ORIGIN="http://evil.example")
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


# --- Cookies --------------------------------------------------------------------------------


def assert_host_only_cookie(cookie, *, secure: bool = False) -> None:
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["domain"] == ""  # host-only: appspace subdomains never receive it
    assert cookie["path"] == "/"
    assert bool(cookie["secure"]) is secure


@pytest.mark.django_db
def test_it_sets_host_only_http_only_lax_cookies(alice):
    client = panel_client()
    page = client.get(reverse("account_login"))
    assert set(page.cookies) == {"ds_csrf"}
    assert_host_only_cookie(page.cookies["ds_csrf"])

    response = log_in(client)
    assert response.status_code == 302
    assert "ds_panel" in response.cookies
    assert_host_only_cookie(response.cookies["ds_panel"])


# --- CSRF -----------------------------------------------------------------------------------


def csrf_token(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies[settings.CSRF_COOKIE_NAME].value


@pytest.mark.django_db
def test_it_rejects_a_login_post_without_csrf_token(alice):
    client = panel_client(enforce_csrf_checks=True)
    response = log_in(client)
    assert response.status_code == 403
    assert client.get(reverse("dashboard")).status_code == 302  # not logged in

    token = csrf_token(client, reverse("account_login"))
    response = client.post(
        reverse("account_login"),
        {"login": alice.email, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200


@pytest.mark.django_db
def test_it_rejects_a_state_change_without_csrf_token(alice):
    client = panel_client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = reverse("account_overview")
    assert client.post(url, {"display_name": "Mallory"}).status_code == 403
    assert client.post(reverse("account_logout")).status_code == 403
    alice.refresh_from_db()
    assert alice.display_name == "Alice"

    token = csrf_token(client, url)
    assert client.post(url, {"display_name": "Al", "csrfmiddlewaretoken": token}).status_code == 302
    alice.refresh_from_db()
    assert alice.display_name == "Al"


@pytest.mark.django_db
def test_it_rejects_posts_from_an_appspace_origin_even_with_a_token(alice):
    # Appspaces are same-site subdomains, so SameSite=Lax does not stop their forms:
    # Django's Origin check does (and their cookies can never reach the panel).
    client = panel_client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = reverse("account_overview")
    token = csrf_token(client, url)
    appspace_origin = f"http://notes.{settings.DS_DOMAIN}:{settings.DS_PUBLIC_PORT}"
    response = client.post(
        url, {"display_name": "Pwned", "csrfmiddlewaretoken": token}, HTTP_ORIGIN=appspace_origin
    )
    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.display_name == "Alice"


# --- Production (https) in subprocesses -----------------------------------------------------


def production_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    drop = ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "DATABASE_URL", "REDIS_URL", "CACHE_URL")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DS_")}
    env.update(
        DS_DATA_DIR=str(data_dir),
        DS_DOMAIN="example.com",
        DS_SCHEME="https",
        SECRET_KEY=PRODUCTION_KEY,
        DJANGO_SETTINGS_MODULE="dropserver_site.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production_on_a_public_suffix(ds_data_dir):
    # sandcats.io is on the Public Suffix List (Sandstorm's public host): apps' cookies for
    # the parent domain are refused by browsers, so nothing is left to warn about.
    env = production_env(ds_data_dir, DS_DOMAIN="sandcats.io")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output
    assert "WARNINGS" not in output and "ERRORS" not in output


def test_check_deploy_says_a_public_domain_off_the_suffix_list_shares_cookies(ds_data_dir):
    result = manage(production_env(ds_data_dir), "check", "--deploy")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output  # a warning: the operator decides
    assert "dropserver.W001" in output
    assert "example.com) is not on the Public Suffix List" in output
    assert "publicsuffix.org" in output
    assert output.count("WARNINGS") == 1 and "ERRORS" not in output


REQUEST_SCRIPT = """
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from allauth.account.models import EmailAddress
from django.test import Client
from accounts.models import User
user = User.objects.create_user("alice@example.com", PASSWORD)
EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)

def cookies(response):
    return {n: {k: m[k] for k in ("secure", "httponly", "samesite", "domain", "path")}
            for n, m in response.cookies.items()}

client = Client(HTTP_HOST="dropid.example.com")
plain = client.get("/accounts/login/")
page = client.get("/accounts/login/", secure=True)
login = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD}, secure=True)
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "page": [page.status_code, dict(page.headers), cookies(page)],
    "login": [login.status_code, cookies(login)],
}))
"""


def test_it_serves_only_https_with_hsts_and_host_prefixed_secure_cookies(ds_data_dir):
    env = production_env(ds_data_dir)
    script = f"PASSWORD = {PASSWORD!r}\n" + REQUEST_SCRIPT
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    assert out["plain"] == [301, "https://dropid.example.com/accounts/login/"]

    status, headers, page_cookies = out["page"]
    assert status == 200
    hsts = headers["Strict-Transport-Security"]
    assert "max-age=31536000" in hsts and "includeSubDomains" in hsts
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert set(page_cookies) == {"__Host-ds_csrf"}

    status, login_cookies = out["login"]
    assert status == 302
    for cookie in (page_cookies["__Host-ds_csrf"], login_cookies["__Host-ds_panel"]):
        assert cookie["secure"] is True
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Lax"
        assert cookie["domain"] == ""
        assert cookie["path"] == "/"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DEBUG": "1"}, "DEBUG must be off"),
        ({"SECRET_KEY": None}, "Set SECRET_KEY"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 50}, "looks like a default"),
        ({"SECRET_KEY": "short"}, "too short"),
        ({"DS_SCHEME": "http"}, "must be served over https"),
    ],
)
def test_production_refuses_to_start_unsafely(ds_data_dir, overrides, message):
    result = manage(production_env(ds_data_dir, **overrides), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_development_starts_without_a_secret_key(ds_data_dir):
    env = production_env(ds_data_dir, DS_DOMAIN="localhost", DS_SCHEME=None, SECRET_KEY=None)
    result = manage(env, "check")
    assert result.returncode == 0, result.stderr
    assert (ds_data_dir / "secret_key").stat().st_mode & 0o077 == 0
