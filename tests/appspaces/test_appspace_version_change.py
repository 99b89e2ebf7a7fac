"""Changing an appspace's version with real sandboxes: an upgrade migrates the data with the
target's code, a downgrade with the current (higher) version's code; the appspace is offline
(MIGRATING) with its sandbox stopped meanwhile; a migration that throws half-way after changing
files leaves the data exactly as it was (hashes from the host) and the old version in place."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from appspaces.lifecycle.creation import appspace_create, appspace_create_run
from appspaces.lifecycle.version_change import (
    VersionChangeError,
    version_change_job_create,
    version_change_run,
)
from appspaces.models import Appspace, Job
from appspaces.sandboxes import appspace_data_held, appspace_spec
from backups.models import Backup
from sandbox.client import SandboxClient
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_version,
    notes_app,
    own_uids,
    tree_hashes,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]


def created(owner, version) -> Appspace:
    job = appspace_create(owner=owner, app_version=version, subdomain="notes", enqueue=False)
    appspace_create_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    return Appspace.objects.get()


def change(appspace, target) -> Job:
    job = version_change_job_create(appspace=appspace, target=target, enqueue=False)
    version_change_run(job_id=job.pk)
    job.refresh_from_db()
    appspace.refresh_from_db()
    return job


@pytest.fixture
def watch_migrations(monkeypatch):
    """What the appspace and its sandbox looked like whenever a migration ran."""
    seen = []
    original = SandboxClient.run_once

    def run_once(self, spec, mode, args=None, timeout=None):
        if mode == "migrate":
            appspace = Appspace.objects.get(public_id=spec.id)
            state = {e["id"]: e["state"] for e in self.list()}.get(spec.id, "absent")
            seen.append({"status": appspace.status, "sandbox": state, "app": spec.app_dir})
        return original(self, spec, mode, args, timeout)

    monkeypatch.setattr(SandboxClient, "run_once", run_once)
    return seen


def test_an_upgrade_migrates_the_data_with_the_new_code_and_a_downgrade_with_the_old(
    alice, supervisor, watch_migrations
):
    v1 = make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    v2 = make_version(
        alice, {"app.ts": notes_app(2)}, schema=2, app=v1.app, version="2.0.0",
        changelog="2.0.0\n- Notes can be done.",
    )  # fmt: skip
    appspace = created(alice, v1)
    watch_migrations.clear()

    job = change(appspace, v2)
    assert job.state == Job.State.SUCCEEDED, job.message
    assert (appspace.app_version, appspace.data_schema, appspace.status) == (
        v2, 2, Appspace.Status.ACTIVE,
    )  # fmt: skip
    assert json.loads((appspace.data_path / "notes.json").read_text()) == [
        {"text": "first", "done": False}
    ]
    # While it migrated: offline, sandbox stopped, the target version's code.
    [seen] = watch_migrations
    assert seen["status"] == Appspace.Status.MIGRATING and seen["sandbox"] == "stopped"
    assert seen["app"].endswith("/2.0.0/files")
    assert Backup.objects.get(appspace=appspace).kind == Backup.Kind.PRE_MIGRATION
    running = {e["id"]: e["state"] for e in supervisor.client.list()}
    assert running[str(appspace.public_id)] == "running"

    watch_migrations.clear()
    job = change(appspace, v1)
    assert job.state == Job.State.SUCCEEDED, job.message
    assert (appspace.app_version, appspace.data_schema) == (v1, 1)
    assert json.loads((appspace.data_path / "notes.json").read_text()) == [{"text": "first"}]
    assert not (appspace.data_path / "tags.json").exists()
    assert watch_migrations[0]["app"].endswith("/2.0.0/files")  # down() of 2 is 2.0.0's code


def test_a_failed_migration_keeps_the_data_exactly_and_the_old_version(
    alice, supervisor, watch_migrations
):
    v1 = make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    broken = make_version(
        alice, {"app.ts": notes_app(2, fail=True)}, schema=2, app=v1.app, version="2.0.0"
    )
    appspace = created(alice, v1)
    (appspace.data_path / "photos").mkdir()
    (appspace.data_path / "photos" / "cat.jpg").write_bytes(bytes(range(256)) * 400)
    before = tree_hashes(appspace.data_path)

    job = change(appspace, broken)
    assert job.state == Job.State.FAILED
    assert "disk on fire halfway through" in job.message
    assert "back on version 1.0.0" in job.message and "exactly as it was" in job.message
    assert (
        tree_hashes(appspace.data_path) == before
    )  # notes.json rewritten, tags.json added: undone
    assert (appspace.app_version, appspace.data_schema, appspace.status) == (
        v1, 1, Appspace.Status.ACTIVE,
    )  # fmt: skip
    assert watch_migrations[-1]["status"] == Appspace.Status.MIGRATING
    # It runs again, on its old data.
    assert supervisor.client.ensure(appspace_spec(appspace))


def test_a_paused_appspace_stays_paused_and_a_same_schema_change_needs_no_backup(alice, supervisor):
    v1 = make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    v11 = make_version(alice, {"app.ts": notes_app(1)}, schema=1, app=v1.app, version="1.1.0")
    appspace = created(alice, v1)
    Appspace.objects.filter(pk=appspace.pk).update(status=Appspace.Status.PAUSED)
    appspace.refresh_from_db()
    with appspace_data_held(appspace):  # stopped, its data is in its image (if it has one)
        before = tree_hashes(appspace.data_path)
    job = change(appspace, v11)
    assert job.state == Job.State.SUCCEEDED, job.message
    assert (appspace.app_version, appspace.status) == (v11, Appspace.Status.PAUSED)
    with appspace_data_held(appspace):
        assert tree_hashes(appspace.data_path) == before
    assert not Backup.objects.exists()


def test_what_cannot_change(alice, bob):
    v1 = make_version(alice)
    v2 = make_version(alice, app=v1.app, version="2.0.0")
    other = make_version(alice, name="Other")
    from tests.appspaces.appspace_fixtures import make_appspace

    appspace = make_appspace(alice, v1)
    with pytest.raises(VersionChangeError, match="already runs"):
        version_change_job_create(appspace=appspace, target=v1, enqueue=False)
    with pytest.raises(VersionChangeError, match="another app"):
        version_change_job_create(appspace=appspace, target=other, enqueue=False)
    Appspace.objects.filter(pk=appspace.pk).update(status=Appspace.Status.MIGRATING)
    appspace.refresh_from_db()
    with pytest.raises(VersionChangeError, match="migrating"):
        version_change_job_create(appspace=appspace, target=v2, enqueue=False)


def test_the_panel_shows_the_changelog_and_the_schema_change_before_it_starts(alice, charlie):
    from tests.appspaces.appspace_fixtures import make_appspace

    v1 = make_version(alice, schema=1)
    v2 = make_version(
        alice, app=v1.app, version="2.0.0", schema=2, changelog="- Notes can be ticked off."
    )
    appspace = make_appspace(alice, v1)
    client = logged_in(alice)
    detail = client.get(reverse("appspace_detail", args=[appspace.public_id])).content.decode()
    assert "Version 2.0.0 is installed" in detail and "schema 1 → 2" in detail
    url = reverse("appspace_version", args=[appspace.public_id]) + f"?to={v2.public_id}"
    page = client.get(url).content.decode()
    assert "Notes can be ticked off." in page
    assert "from schema 1 to 2" in page and "A backup is made first" in page
    assert logged_in(charlie).get(url).status_code == 404
    response = client.post(
        reverse("appspace_version", args=[appspace.public_id]), {"to": v2.public_id}
    )
    job = Job.objects.get(kind=Job.Kind.MIGRATE)
    assert response["Location"] == reverse("job_detail", args=[job.public_id])
    assert logged_in(charlie).get(response["Location"]).status_code == 404
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "2.0.0 available" in dashboard
