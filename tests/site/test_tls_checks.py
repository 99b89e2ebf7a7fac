"""dropserver_site/edge/checks.py: `check --deploy` on the TLS settings."""

from __future__ import annotations

import datetime as dt

import pytest

from dropserver_site.edge.checks import check_tls
from tests.site.tls import NOW, self_signed


def ids(settings) -> list[str]:
    return [found.id for found in check_tls()]


def tls(settings, mode: str, **extra) -> None:
    settings.DS_TLS, settings.DS_TLS_ON = mode, mode != "off"
    for name, value in extra.items():
        setattr(settings, name, value)


def test_nothing_to_say_on_localhost_or_with_acme(settings):
    assert ids(settings) == []
    tls(settings, "acme", DS_DOMAIN="example.org")
    assert ids(settings) == []


def test_a_missing_caddy_is_an_error(settings):
    tls(settings, "acme", DS_CADDY="/nonexistent/caddy")
    [error] = check_tls()
    assert error.id == "dropserver.E010" and "apt-get install -y caddy" in error.msg


@pytest.mark.parametrize(
    ("dns", "validity", "problem"),
    [
        (("*.localhost",), {}, None),
        (("dropid.localhost",), {}, "does not cover appspace.localhost"),
        (("*.other.test",), {}, "does not cover dropid.localhost"),
        (
            ("*.localhost",),
            {"not_before": NOW - dt.timedelta(days=9), "not_after": NOW - dt.timedelta(days=1)},
            "expired",
        ),
    ],
    ids=["wildcard", "panel-only", "other-domain", "expired"],
)
def test_files_mode_checks_what_the_certificate_covers(settings, tmp_path, dns, validity, problem):
    cert, key = self_signed(tmp_path, "brought", dns=dns, **validity)
    tls(settings, "files", DS_TLS_CERT=str(cert), DS_TLS_KEY=str(key))
    found = check_tls()
    if problem is None:
        assert found == []
    else:
        [error] = found
        assert error.id == "dropserver.E011" and problem in error.msg


def test_public_domains_warn_without_tls_or_with_the_internal_ca(settings):
    tls(settings, "off", DS_DOMAIN="example.org", DS_TRUST_PROXY_HEADERS=False)
    assert ids(settings) == ["dropserver.W010"]
    settings.DS_TRUST_PROXY_HEADERS = True  # DS_BEHIND_PROXY with https
    assert ids(settings) == []
    tls(settings, "internal", DS_DOMAIN="example.org")
    assert ids(settings) == ["dropserver.W011"]
