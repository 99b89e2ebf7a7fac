"""Network approvals: what the sandbox refused reaches the owner (host, port, count, first and
last time); one click allows it (the sandbox restarts with it) or dismisses it; nothing is
allowed without the owner, what can never be allowed says why, and DNS or wildcards need a
second confirmation. No test sends traffic anywhere: approved hosts are never contacted."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from appspaces.lifecycle.creation import appspace_create, appspace_create_run
from appspaces.models import AllowlistEntry, Appspace, BlockedConnection, Job
from appspaces.network.blocked import blocked_connections_collect, blocked_connections_record
from appspaces.sandboxes import appspace_spec
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_appspace,
    make_version,
    own_uids,
)
from tests.sandbox.fixtures import poll, send_request

# Fetches the host named in the query; the sandbox refuses it (nothing is allowed).
FETCHER = """
import { createApp } from "@dropserver/app";
createApp({ routes: [{ method: "GET", path: "/", auth: "public", handler: async (ctx) => {
  const host = new URL(ctx.request.url).searchParams.get("host");
  try { await fetch(`https://${host}/`); return new Response("reached"); }
  catch (e) { return new Response(String(e)); }
} }] });
"""


@pytest.mark.sandbox
@pytest.mark.django_db
def test_a_refused_connection_is_shown_and_one_click_allows_it_with_a_restart(
    alice, charlie, supervisor, eager, django_capture_on_commit_callbacks
):
    version = make_version(alice, {"app.ts": FETCHER})
    job = appspace_create(owner=alice, app_version=version, subdomain="fetcher", enqueue=False)
    appspace_create_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    appspace = Appspace.objects.get()
    socket = supervisor.client.ensure(appspace_spec(appspace))
    for host in ("api.example.com", "tracker.example.net"):
        status, _, body = send_request(socket, path=f"/?host={host}")
        assert b"NotCapable" in body and b"reached" not in body

    client = logged_in(alice)
    page = client.get(reverse("appspace_detail", args=[appspace.public_id])).content.decode()
    assert "The app tried to reach" in page
    assert "Allow api.example.com:443" in page and "Allow tracker.example.net:443" in page
    row = appspace.blocked.get(host="api.example.com")
    assert (row.port, row.count, row.dismissed) == (443, 1, False)
    assert not appspace.allowlist.exists()  # nothing without the owner

    # The Celery beat task pulls it too, and counts only what is new.
    send_request(socket, path="/?host=tracker.example.net")  # within the harness's 10 s dedupe
    blocked_connections_collect()
    assert appspace.blocked.get(host="tracker.example.net").count == 1

    assert (
        logged_in(charlie)
        .post(
            reverse("appspace_blocked_approve", args=[appspace.public_id]),
            {"host": "api.example.com", "port": "443"},
        )
        .status_code
        == 404
    )
    before = supervisor.deno_pid(str(appspace.public_id))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("appspace_blocked_approve", args=[appspace.public_id]),
            {"host": "api.example.com", "port": "443"},
        )
    assert response.status_code == 302
    assert list(appspace.allowlist.values_list("kind", "value")) == [
        ("server", "api.example.com:443")
    ]
    assert not appspace.blocked.filter(host="api.example.com").exists()
    # Restarted with the new allowlist: another process, running with the entry in its spec.
    poll(lambda: supervisor.sandbox_pids(str(appspace.public_id)) and before not in
         supervisor.sandbox_pids(str(appspace.public_id)), timeout=15)  # fmt: skip
    assert "api.example.com:443" in appspace_spec(appspace).allow_net

    client.post(
        reverse("appspace_blocked_dismiss", args=[appspace.public_id]),
        {"host": "tracker.example.net", "port": "443"},
    )
    assert appspace.blocked.get(host="tracker.example.net").dismissed
    page = client.get(reverse("appspace_detail", args=[appspace.public_id])).content.decode()
    assert "The app tried to reach" not in page and "Dismissed connections (1)" in page
    # Pulling again does not bring the approved one back.
    assert not appspace.blocked.filter(host="api.example.com").exists()


NOW = 1_800_000_000.0


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW + seconds, tz=dt.UTC)


def iso(seconds: float) -> str:
    return at(seconds).isoformat()


@pytest.mark.django_db
def test_counts_add_up_across_pulls_and_supervisor_restarts(alice):
    appspace = make_appspace(alice, make_version(alice))
    # As the supervisor reports them: ISO times, counts since it started.
    report = [{"host": "API.example.com", "port": 443, "count": 2, "first": iso(0), "last": iso(5)}]
    blocked_connections_record(appspace=appspace, reported=report)
    row = BlockedConnection.objects.get()
    assert (row.host, row.count, row.first_seen, row.last_seen) == (
        "api.example.com", 2, at(0), at(5),
    )  # fmt: skip
    report[0].update(count=5, last=iso(60))
    blocked_connections_record(appspace=appspace, reported=report)  # same run: +3
    blocked_connections_record(appspace=appspace, reported=report)  # nothing new
    row.refresh_from_db()
    assert (row.count, row.last_seen) == (5, at(60))
    restarted = [{"host": "api.example.com", "port": 443, "count": 1, "first": iso(900),
                  "last": iso(900)}]  # fmt: skip
    blocked_connections_record(appspace=appspace, reported=restarted)
    row.refresh_from_db()
    assert (row.count, row.first_seen, row.last_seen) == (6, at(0), at(900))
    # Once allowed (here with a wildcard), it is not listed again.
    AllowlistEntry.objects.create(appspace=appspace, kind="server", value="*.example.com")
    blocked_connections_record(appspace=appspace, reported=restarted)
    assert not BlockedConnection.objects.exists()


@pytest.mark.django_db
def test_what_can_never_be_allowed_says_why_and_dns_needs_a_confirmation(alice):
    appspace = make_appspace(alice, make_version(alice))
    blocked_connections_record(
        appspace=appspace,
        reported=[
            {"host": "169.254.169.254", "port": 80, "count": 1, "first": NOW, "last": NOW},
            {"host": "8.8.8.8", "port": 53, "count": 3, "first": NOW, "last": NOW},
        ],
    )
    client = logged_in(alice)
    page = client.get(reverse("appspace_detail", args=[appspace.public_id])).content.decode()
    assert "It cannot be allowed" in page and "Allow 169.254.169.254:80" not in page
    url = reverse("appspace_blocked_approve", args=[appspace.public_id])
    refused = client.post(url, {"host": "169.254.169.254", "port": "80"}, follow=True)
    assert "cannot be allowed" in refused.content.decode()
    confirm = client.post(url, {"host": "8.8.8.8", "port": "53"})
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Port 53 is DNS" in html and 'name="confirm" value="yes"' in html
    assert not appspace.allowlist.exists()
    client.post(url, {"host": "8.8.8.8", "port": "53", "confirm": "yes"})
    assert list(appspace.allowlist.values_list("value", flat=True)) == ["8.8.8.8:53"]


@pytest.mark.django_db
def test_every_allowlist_change_makes_a_newer_sandbox_spec(alice):
    # The generation is what lets the supervisor ignore a gateway's cached, older spec.
    from appspaces.network.approvals import allowlist_entry_add, allowlist_entry_remove

    appspace = make_appspace(alice, make_version(alice))
    before = appspace_spec(appspace).generation
    entry = allowlist_entry_add(appspace=appspace, kind="server", value="api.example.com")
    added = appspace_spec(Appspace.objects.get(pk=appspace.pk))
    assert added.generation > before and "api.example.com" in added.allow_net
    allowlist_entry_add(appspace=appspace, kind="browser", value="https://tiles.example.com")
    browser = appspace_spec(Appspace.objects.get(pk=appspace.pk)).generation
    assert browser > added.generation
    allowlist_entry_remove(entry=entry)
    removed = appspace_spec(Appspace.objects.get(pk=appspace.pk))
    assert removed.generation > browser and removed.allow_net == ()
