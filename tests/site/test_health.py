"""/healthz and /readyz on the panel host (and the ask decision), each check failing for real:
no supervisor on this DS_DATA_DIR, a broker nobody listens on, a disk threshold above what is
free, an expired certificate. The all-green answer is asserted live through the TLS edge
(tests/gateway/test_tls_edge.py), where a real supervisor runs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.conf import settings
from django.test import Client

from dropserver_site.edge.ask import may_have_certificate
from dropserver_site.edge.caddy import storage_dir
from tests.appspaces.appspace_fixtures import make_appspace, make_version
from tests.site.tls import NOW, self_signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def panel(panel_host) -> Client:
    return Client(HTTP_HOST=panel_host)


def ready(panel: Client) -> tuple[int, dict]:
    response = panel.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    return response.status_code, json.loads(response.content)


def test_liveness_answers_whatever_else_is_down(panel, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = panel.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
    assert panel.post("/healthz").status_code == 405


def test_no_supervisor_means_not_ready(panel):
    # This test's DS_DATA_DIR has no supervisor socket.
    status, body = ready(panel)
    assert status == 503 and body["status"] == "fail"
    assert body["checks"]["supervisor"] == {"ok": False}
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["disk"] == {"ok": True}
    assert body["checks"]["certificate"] == {"ok": True, "state": "off"}


def test_an_unreachable_broker_fails_and_its_url_is_not_shown(panel, settings):
    settings.CELERY_BROKER_URL = "redis://:hunter2secret@127.0.0.1:1/0"
    status, body = ready(panel)
    assert status == 503 and body["checks"]["broker"] == {"ok": False}
    text = json.dumps(body)
    assert "hunter2secret" not in text and "127.0.0.1" not in text
    assert str(settings.DS_DATA_DIR) not in text


def test_too_little_free_disk_fails(panel, settings):
    settings.DS_READY_MIN_FREE_MB = 10**12
    status, body = ready(panel)
    assert status == 503 and body["checks"]["disk"] == {"ok": False}


def _tls_files(settings, tmp_path, **validity):
    cert, key = self_signed(tmp_path, "panel", dns=(settings.DS_PANEL_HOST,), **validity)
    settings.DS_TLS, settings.DS_TLS_ON = "files", True
    settings.DS_TLS_CERT, settings.DS_TLS_KEY = str(cert), str(key)


def test_an_expired_certificate_fails(panel, settings, tmp_path):
    _tls_files(
        settings,
        tmp_path,
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW - dt.timedelta(days=1),
    )
    status, body = ready(panel)
    assert status == 503 and body["checks"]["certificate"]["state"] == "expired"


def test_a_certificate_about_to_expire_fails_within_the_margin(panel, settings, tmp_path):
    _tls_files(settings, tmp_path, not_after=NOW + dt.timedelta(days=2))
    assert ready(panel)[1]["checks"]["certificate"]["state"] == "valid"
    settings.DS_READY_CERT_DAYS = 7
    assert ready(panel)[1]["checks"]["certificate"] == {
        "ok": False,
        "state": "expiring",
        "not_after": ready(panel)[1]["checks"]["certificate"]["not_after"],
    }


def test_on_demand_before_the_first_visit_is_pending_not_failing(settings, tmp_path):
    from dropserver_site.edge.certs import panel_certificate_state

    settings.DS_TLS, settings.DS_TLS_ON = "internal", True
    assert panel_certificate_state() == {"ok": True, "state": "pending"}
    # Where Caddy keeps what it obtained: certificates/<issuer>/<host>/<host>.crt
    folder = storage_dir() / "certificates" / "local" / settings.DS_PANEL_HOST
    folder.mkdir(parents=True)
    cert, _ = self_signed(tmp_path, "panel", dns=(settings.DS_PANEL_HOST,))
    (folder / f"{settings.DS_PANEL_HOST}.crt").write_bytes(cert.read_bytes())
    assert panel_certificate_state()["state"] == "valid"


def test_health_is_not_redirected_to_https(panel, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert panel.get("/healthz").status_code == 200
    assert panel.get("/accounts/login/").status_code == 301


def test_only_the_panel_and_existing_appspaces_may_get_certificates(alice):
    appspace = make_appspace(alice, make_version(alice))
    host = f"{appspace.subdomain}.{settings.DS_DOMAIN}"
    assert may_have_certificate(settings.DS_PANEL_HOST)
    assert may_have_certificate(host)
    assert may_have_certificate(host.upper() + ".")  # the same name, as DNS allows it
    for name in (
        f"nosuch.{settings.DS_DOMAIN}",
        f"a.{host}",  # nested under an appspace
        settings.DS_DOMAIN,
        "example.com",
        f"{host}:443",
        "",
        "[::1]",
        "xn--e1afmkfd.localhost",
    ):
        assert not may_have_certificate(name), name
