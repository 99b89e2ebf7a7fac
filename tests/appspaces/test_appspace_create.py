"""Creating an appspace with real sandboxes: the wizard reviews the app's suggested allowlist,
the job runs the app's migrations from schema 0 and starts it; a failure leaves nothing (no
row, no folders) and the name free; deleting removes the data and keeps or deletes backups."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from appspaces.lifecycle.creation import appspace_create, appspace_create_run
from appspaces.lifecycle.sweep import appspaces_sweep
from appspaces.models import Appspace, Job
from backups.models import Backup
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_version,
    notes_app,
    own_uids,
    tree_hashes,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]

NETWORK = {
    "server": ["api.example.com", "*.tiles.example.org:443"],
    "browser": ["https://cdn.example.net"],
}

# Migrates fine, then will not start: its top level throws once the migration left its mark.
NO_START = """
import { createApp } from "@dropserver/app";
try { Deno.statSync("/data/migrated"); } catch { createApp({ routes: [], migrations: [
  { schema: 1, up: () => Deno.writeTextFile("/data/migrated", "yes"), down() {} },
] }); }
if ((() => { try { Deno.statSync("/data/migrated"); return true; } catch { return false; } })()) {
  throw new Error("cannot start: the moon is in the wrong phase");
}
"""


def post(client, version, **fields):
    data = {"version": version.public_id, "memory_mb": 128, "cpu_percent": 25, "disk_mb": 50}
    return client.post(reverse("appspace_new"), {**data, **fields})


def nothing_left(settings, job: Job) -> None:
    job.refresh_from_db()
    assert job.appspace_id is None
    assert not Appspace.objects.exists()
    data = settings.DS_DATA_DIR
    assert not list((data / "appspaces").glob("*")) if (data / "appspaces").exists() else True
    assert not list((data / "logs").glob("*")) if (data / "logs").exists() else True


def test_the_wizard_reviews_the_suggestions_and_the_job_sets_the_appspace_up(
    alice, supervisor, eager, settings, django_capture_on_commit_callbacks
):
    version = make_version(alice, {"app.ts": notes_app(1)}, schema=1, network=NETWORK)
    client = logged_in(alice)
    step1 = client.get(reverse("appspace_new")).content.decode()
    assert f'value="{version.public_id}"' in step1
    page = client.get(reverse("appspace_new") + f"?version={version.public_id}").content.decode()
    # Server hosts and browser origins apart, each explained and ticked, removable.
    server, browser = page.split("Server side")[1].split("Browser side")
    assert "api.example.com" in server and "any name under tiles.example.org" in server
    assert "can carry data" in server  # the wildcard's warning
    assert "https://cdn.example.net" in browser and "Visitors&#x27; browsers" in browser
    assert page.count('name="server_suggested"') == 2 and page.count(" checked") == 3

    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client,
            version,
            subdomain="My-Notes",
            server_suggested=["api.example.com"],  # the wildcard was unticked
            browser_suggested=["https://cdn.example.net"],
            server_extra="data.example.com:8443",
        )
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.CREATE)
    assert response["Location"] == reverse("job_detail", args=[job.public_id])
    assert job.state == Job.State.SUCCEEDED, job.message
    appspace = Appspace.objects.get()
    assert (appspace.subdomain, appspace.status, appspace.data_schema) == (
        "my-notes", Appspace.Status.ACTIVE, 1,
    )  # fmt: skip
    assert (appspace.memory_mb, appspace.cpu_percent, appspace.disk_mb) == (128, 25, 50)
    assert sorted(appspace.allowlist.values_list("kind", "value")) == [
        ("browser", "https://cdn.example.net"),
        ("server", "api.example.com"),
        ("server", "data.example.com:8443"),
    ]
    assert json.loads((appspace.data_path / "notes.json").read_text()) == [{"text": "first"}]
    assert (appspace.data_path.stat().st_uid, appspace.data_path.stat().st_mode & 0o777) == (
        appspace.sandbox_uid, 0o700,
    )  # fmt: skip
    assert json.loads((appspace.meta_path / "users.json").read_text())[0]["displayName"] == "Alice"
    listed = {e["id"]: e for e in supervisor.client.list()}
    assert listed[str(appspace.public_id)]["state"] == "running"
    detail = client.get(job.params["next_url"]).content.decode()
    assert "running" in detail and "my-notes" in detail


@pytest.mark.parametrize(
    "subdomain,error",
    [
        ("dropid", "reserved"),
        ("www", "reserved"),
        ("notes.alice", "without dots"),
        ("-notes", "starting and ending"),
        ("xn--nxasmq6b", "two hyphens"),
        ("a" * 64, "at most 63"),
        ("taken", "is taken"),
    ],
)
def test_the_wizard_refuses_a_bad_or_taken_name_next_to_the_field(alice, subdomain, error):
    version = make_version(alice)
    from tests.appspaces.appspace_fixtures import make_appspace

    make_appspace(alice, version, subdomain="taken")
    response = post(logged_in(alice), version, subdomain=subdomain)
    assert response.status_code == 400
    html = response.content.decode()
    assert error in html.split('id="id_subdomain"')[0].rsplit("<fieldset", 1)[1]
    assert Appspace.objects.count() == 1 and not Job.objects.exists()


def test_the_wizard_says_when_a_recently_freed_name_is_available_again(alice, bob):
    from tests.appspaces.appspace_fixtures import make_appspace

    make_appspace(alice, make_version(alice), subdomain="notes").delete()
    response = post(logged_in(bob), make_version(bob), subdomain="notes")
    assert response.status_code == 400
    field = response.content.decode().split('id="id_subdomain"')[0].rsplit("<fieldset", 1)[1]
    assert "notes.localhost belonged to an appspace that was deleted recently" in field
    assert "kept free until" in field and " UTC" in field
    assert not Appspace.objects.exists() and not Job.objects.exists()


def test_another_users_version_is_404(alice, charlie):
    version = make_version(alice)
    response = logged_in(charlie).get(reverse("appspace_new") + f"?version={version.public_id}")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "files,message",
    [
        ({"app.ts": notes_app(2, fail=True)}, "disk on fire halfway through"),
        ({"app.ts": NO_START}, "The app did not start"),
    ],
)
def test_a_failed_creation_leaves_nothing_and_frees_the_name(
    alice, supervisor, settings, files, message
):
    broken = make_version(alice, files, schema=2 if "fire" in message else 1)
    job = appspace_create(owner=alice, app_version=broken, subdomain="notes", enqueue=False)
    assert Appspace.objects.get().status == Appspace.Status.CREATING
    appspace_create_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and message in job.message, job.message
    nothing_left(settings, job)
    assert str(job.params["subdomain"]) == "notes"  # the job page still says which

    good = make_version(alice, {"app.ts": notes_app(1)}, schema=1, name="Good")
    job = appspace_create(owner=alice, app_version=good, subdomain="notes", enqueue=False)
    appspace_create_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message


def test_a_creation_whose_worker_died_is_undone_by_the_sweep(alice, settings):
    version = make_version(alice)
    job = appspace_create(owner=alice, app_version=version, subdomain="notes", enqueue=False)
    appspace = Appspace.objects.get()
    from appspaces.lifecycle.creation import prepare_folders

    prepare_folders(appspace)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    assert appspaces_sweep()["creations"] == 0  # not stale yet
    settings.DS_APPSPACE_JOB_STALE_MINUTES = -1
    assert appspaces_sweep()["creations"] == 1
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "interrupted" in job.message
    nothing_left(settings, job)


def test_delete_keeps_backups_on_request_and_a_new_appspace_starts_from_one(
    alice, charlie, supervisor, eager, settings, django_capture_on_commit_callbacks
):
    from backups.services import backup_create

    version = make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    job = appspace_create(owner=alice, app_version=version, subdomain="notes", enqueue=False)
    appspace_create_run(job_id=job.pk)
    appspace = Appspace.objects.get()
    (appspace.data_path / "extra.txt").write_text("kept in the backup")
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    hashes = tree_hashes(appspace.data_path)
    client = logged_in(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("appspace_delete", args=[appspace.public_id]),
            {"confirm": "notes", "backups": "keep"},
        )
    assert response.status_code == 302
    assert not Appspace.objects.exists()
    assert not appspace.path.exists()
    assert not (settings.DS_DATA_DIR / "trash").exists() or not any(
        (settings.DS_DATA_DIR / "trash").iterdir()
    )
    assert str(appspace.public_id) not in {e["id"] for e in supervisor.client.list()} or (
        {e["id"]: e for e in supervisor.client.list()}[str(appspace.public_id)]["state"]
        == "stopped"
    )
    backup.refresh_from_db()
    assert (backup.appspace_id, backup.kept_owner, backup.kept_label) == (None, alice, "notes")
    assert backup.path.is_file()
    from backups.sweep import backups_sweep

    backups_sweep()
    assert backup.path.is_file()  # the sweep leaves kept backups alone
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "Backups of deleted appspaces" in dashboard
    download = reverse("kept_backup_download", args=[backup.public_id])
    assert download in dashboard
    assert client.get(download).status_code == 200
    assert logged_in(charlie).get(download).status_code == 404

    # The name is free, and a new appspace starts from the kept backup.
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, version, subdomain="notes", kept_backup=backup.public_id)
    assert response.status_code == 302, response.content.decode()[-3000:]
    again = Appspace.objects.get()
    assert again.status == Appspace.Status.ACTIVE
    assert tree_hashes(again.data_path) == hashes

    # Deleting with its backups: they go too.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("appspace_delete", args=[again.public_id]),
            {"confirm": "notes", "backups": "delete"},
        )
    assert not Backup.objects.filter(appspace__isnull=False).exists()
    assert not (settings.DS_DATA_DIR / "backups" / str(again.public_id)).exists()
    assert not again.path.exists()
    assert (
        logged_in(charlie).post(reverse("kept_backup_delete", args=[backup.public_id])).status_code
        == 404
    )
    client.post(reverse("kept_backup_delete", args=[backup.public_id]))
    assert not Backup.objects.exists() and not backup.path.exists()
