"""DS_TLS and its companions: defaults, and combinations refused with a readable message.

Settings are read once per process, so each case imports them in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.site.tls import self_signed

BASE_DIR = Path(__file__).resolve().parents[2]
SECRET = "s" * 60
PRINT = (
    "from django.conf import settings as s; "
    "print(s.DS_TLS, s.DS_PORT, s.DS_HTTPS_PORT, s.DS_WEB_PORT, s.DS_PANEL_URL, "
    "getattr(s, 'SECURE_PROXY_SSL_HEADER', None) is not None)"
)


def settings_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "SECRET_KEY"))}
    clean.update(DS_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="dropserver_site.settings")
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_localhost_keeps_tls_off_and_its_port(tmp_path):
    result = settings_with(tmp_path)
    assert result.stdout.split() == [
        "off",
        "8000",
        "443",
        "8000",
        "http://dropid.localhost:8000",
        "False",
    ], result.stderr


def test_a_public_domain_defaults_to_acme_on_80_and_443(tmp_path):
    result = settings_with(tmp_path, DS_DOMAIN="example.org", SECRET_KEY=SECRET)
    assert result.stdout.split() == [
        "acme",
        "80",
        "443",
        "8000",
        "https://dropid.example.org",
        "True",
    ], result.stderr


def test_an_operators_own_proxy_keeps_tls_off(tmp_path):
    result = settings_with(
        tmp_path, DS_DOMAIN="example.org", SECRET_KEY=SECRET, DS_BEHIND_PROXY="1"
    )
    assert result.stdout.split()[0] == "off", result.stderr


def test_internal_on_high_ports_puts_the_https_port_in_urls(tmp_path):
    result = settings_with(
        tmp_path, DS_TLS="internal", DS_PORT="18080", DS_HTTPS_PORT="18443", DS_WEB_PORT="18081"
    )
    assert result.stdout.split() == [
        "internal",
        "18080",
        "18443",
        "18081",
        "https://dropid.localhost:18443",
        "True",
    ], result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DS_TLS": "yes"}, "DS_TLS must be one of off, acme, internal, files"),
        ({"DS_TLS": "files"}, "DS_TLS=files needs DS_TLS_CERT"),
        ({"DS_TLS": "files", "DS_TLS_CERT": "/nonexistent.pem"}, "is not a readable file"),
        ({"DS_TLS_CERT": "/x.pem"}, "only used with DS_TLS=files"),
        ({"DS_TLS": "acme"}, "no public CA issues certificates for development names"),
        (
            {
                "DS_TLS": "acme",
                "DS_ACME_DIRECTORY": "https://127.0.0.1:1/dir",
                "DS_ACME_CA_ROOT": "/no",
            },
            "DS_ACME_CA_ROOT (/no) is not a readable file",
        ),
        ({"DS_TLS": "internal", "DS_PORT": "8000"}, "must differ"),
        ({"DS_TLS": "internal", "DS_SCHEME": "http"}, "DS_SCHEME must be https"),
    ],
    ids=[
        "bad-mode",
        "files-without-cert",
        "files-missing",
        "cert-without-files",
        "acme-on-localhost",
        "acme-root-missing",
        "ports-collide",
        "http-scheme",
    ],
)
def test_bad_combinations_are_refused_with_a_readable_message(tmp_path, env, message):
    result = settings_with(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr, result.stderr


def test_files_mode_needs_both_files_and_takes_them(tmp_path):
    cert, key = self_signed(tmp_path, "wild", dns=("*.localhost",))
    only_cert = settings_with(tmp_path, DS_TLS="files", DS_TLS_CERT=str(cert), DS_WEB_PORT="8001")
    assert "DS_TLS=files needs DS_TLS_KEY" in only_cert.stderr
    both = settings_with(
        tmp_path, DS_TLS="files", DS_TLS_CERT=str(cert), DS_TLS_KEY=str(key), DS_PORT="8080"
    )
    assert both.stdout.split()[0] == "files", both.stderr
