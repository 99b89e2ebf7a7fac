"""Apps that ask: requestNetwork() in a real sandbox reaches the owner through the supervisor,
with its reason cleaned and shown escaped, never granted by itself; never-allowable targets
are shown as refused. And the operator's CLI: network_requests / network_allow /
network_dismiss."""

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from appspaces.models import AllowlistEntry, BlockedConnection, NetworkRequest
from appspaces.network.blocked import blocked_connections_pull
from tests.gateway.conftest import _database_url
from tests.sandbox.fixtures import REPO

pytestmark = pytest.mark.sandbox

REASON = "Map tiles\x07 for the <b>trip</b> page\u202e\n" + "x" * 400


def ask(stack, appspace, request) -> dict:
    response = stack.browser().request(
        "POST",
        stack.url(appspace, "/ask"),
        headers={"Content-Type": "application/json"},
        body=json.dumps(request).encode(),
    )
    return response.status, response.json()


def cli(*args) -> tuple[dict, bool]:
    out = StringIO()
    try:
        call_command(*args, "--json", stdout=out)
        failed = False
    except CommandError:
        failed = True
    return json.loads(out.getvalue()), failed


@pytest.fixture
def asked(stack):
    appspace = stack.appspace()
    status, body = ask(
        stack,
        appspace,
        {
            "server": ["api.example.com:443", "10.0.0.1", "localhost"],
            "browser": ["https://tiles.example.com"],
            "reason": REASON,
        },
    )
    assert (status, body) == (200, {"asked": True})
    blocked_connections_pull(appspace=appspace)
    return appspace


def test_an_apps_request_waits_for_the_owner_with_its_reason(stack, asked):
    rows = {r.value: r for r in NetworkRequest.objects.filter(appspace=asked)}
    assert set(rows) == {
        "api.example.com:443",
        "10.0.0.1",
        "localhost",
        "https://tiles.example.com",
    }
    reason = rows["api.example.com:443"].reason
    assert reason.startswith("Map tiles for the <b>trip</b> page x")
    assert len(reason) == 300
    assert not any(ord(c) < 32 or c == "\u202e" for c in reason)
    assert {r.source for r in rows.values()} == {"app"}
    assert not AllowlistEntry.objects.filter(appspace=asked).exists()  # never granted by asking

    page = stack.browser(stack.alice).get(
        stack.panel_url(reverse("appspace_detail", kwargs={"appspace_id": asked.public_id}))
    )
    assert page.status == 200
    assert "Map tiles for the &lt;b&gt;trip&lt;/b&gt; page" in page.text
    assert "<b>trip</b>" not in page.text
    assert "Allow api.example.com:443" in page.text
    assert "Allow https://tiles.example.com" in page.text
    assert "Allow 10.0.0.1" not in page.text and "Allow localhost" not in page.text
    assert "10.0.0.1 is a loopback, private, link-local or reserved address" in page.text

    # Pulling again changes nothing (the supervisor's table is the app's whole history).
    assert blocked_connections_pull(appspace=asked) == 0
    # Another owner's panel cannot see or act on it.
    other = stack.browser(stack.carol).get(
        stack.panel_url(reverse("appspace_detail", kwargs={"appspace_id": asked.public_id}))
    )
    assert other.status == 404


@pytest.mark.parametrize(
    "request_body",
    [{"server": "api.example.com"}, {"server": [1]}, {}, {"browser": ["https://a.example"] * 21}],
)
def test_a_malformed_request_throws_in_the_app_and_records_nothing(stack, request_body):
    appspace = stack.appspace()
    status, body = ask(stack, appspace, request_body)
    assert status == 400 and body["error"].startswith("TypeError: requestNetwork:")
    blocked_connections_pull(appspace=appspace)
    assert not NetworkRequest.objects.filter(appspace=appspace).exists()


def test_the_cli_lists_allows_and_dismisses(stack, asked):
    BlockedConnection.objects.create(
        appspace=asked,
        host="db.example.net",
        port=5432,
        count=3,
        first_seen="2026-01-01T00:00:00Z",
        last_seen="2026-01-01T00:00:00Z",
    )
    listed, failed = cli("network_requests", asked.subdomain)
    assert not failed
    by_entry = {i["entry"]: i for i in listed["requests"]}
    assert by_entry["db.example.net:5432"]["source"] == "refused"
    assert by_entry["api.example.com:443"]["reason"].startswith("Map tiles")
    assert by_entry["10.0.0.1"]["refused"]
    assert by_entry["https://tiles.example.com"]["kind"] == "browser"

    allowed, failed = cli("network_allow", asked.subdomain, "api.example.com:443")
    assert (allowed["allowed"], failed) == ("api.example.com:443", False)
    assert AllowlistEntry.objects.filter(
        appspace=asked, kind="server", value="api.example.com:443"
    ).exists()
    allowed, failed = cli("network_allow", asked.subdomain, "db.example.net:5432")
    assert (allowed["allowed"], failed) == ("db.example.net:5432", False)

    dismissed, failed = cli("network_dismiss", asked.subdomain, "https://tiles.example.com")
    assert not failed
    assert NetworkRequest.objects.get(appspace=asked, value="https://tiles.example.com").dismissed

    refused, failed = cli("network_allow", asked.subdomain, "10.0.0.1")
    assert failed and "private" in refused["error"]
    missing, failed = cli("network_allow", asked.subdomain, "nothing.example.com")
    assert failed and "no pending request" in missing["error"]
    unknown, failed = cli("network_requests", "nosuchappspace")
    assert failed and unknown == {"error": "No appspace has the subdomain 'nosuchappspace'."}
    remaining = {i["entry"] for i in cli("network_requests", asked.subdomain)[0]["requests"]}
    assert "api.example.com:443" not in remaining and "db.example.net:5432" not in remaining


def test_cli_errors_exit_non_zero_with_one_readable_line(stack, gateway_dir):
    env = dict(os.environ, DATABASE_URL=_database_url(), DS_DATA_DIR=str(gateway_dir))
    result = subprocess.run(
        [sys.executable, "manage.py", "network_dismiss", "nosuchappspace", "a.example.com"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("No appspace has the subdomain 'nosuchappspace'.")


def panel_post(stack, user, appspace, name: str, value: str):
    from tests.gateway.browser import csrf_token

    browser = stack.browser(user)
    page = browser.get(stack.panel_url(reverse("dashboard")))
    return browser.request(
        "POST",
        stack.panel_url(reverse(name, kwargs={"appspace_id": appspace.public_id})),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=f"csrfmiddlewaretoken={csrf_token(page.text)}&kind=browser&value={value}".encode(),
    )


def test_only_the_owner_decides_in_the_panel(stack, asked):
    value = "https://tiles.example.com"
    for name in ("appspace_request_allow", "appspace_request_dismiss"):
        assert panel_post(stack, stack.carol, asked, name, value).status == 404
    assert not NetworkRequest.objects.get(appspace=asked, value=value).dismissed
    assert panel_post(stack, stack.alice, asked, "appspace_request_dismiss", value).status == 302
    assert NetworkRequest.objects.get(appspace=asked, value=value).dismissed
    assert not AllowlistEntry.objects.filter(appspace=asked).exists()
    missing = panel_post(stack, stack.alice, asked, "appspace_request_allow", "https://x.example")
    assert missing.status == 404
