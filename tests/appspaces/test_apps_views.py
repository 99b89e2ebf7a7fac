"""The panel's app pages: my apps, install (upload or URL) with clear form errors, the install's
progress page with accept/cancel, an app's versions and changelogs, deletes refused while an
appspace uses them, newer listed versions, the dashboard, the admin, and outsiders' 404s."""

from __future__ import annotations

import os
import re
import uuid

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from appspaces.installs.service import install_job_create
from appspaces.installs.versions import version_sort_key
from appspaces.models import App, Appspace, AppVersion, Job
from tests.appspaces.conftest import logged_in, uploads_dir

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def page(response, status: int = 200) -> str:
    assert response.status_code == status, (response.status_code, response.content[:500])
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html), "inline <script>"
    assert not INLINE_STYLE.search(html), "inline style"
    assert not EVENT_HANDLER.search(html), "event-handler attribute"
    return html


def installed(owner, name="Notes", versions=(("1.0.0", 1),), *, listing_url="", latest=""):
    """An app with versions as an install leaves them (rows and a files folder each)."""
    app = App.objects.create(
        owner=owner, name=name, listing_url=listing_url, listing_latest_version=latest
    )
    for version, schema in versions:
        v = AppVersion.objects.create(
            app=app,
            version=version,
            version_key=version_sort_key(version),
            schema=schema,
            manifest={"name": name, "version": version, "short-description": f"{name} app"},
            routes=[],
            migrations=list(range(1, schema + 1)),
            entrypoint="app.ts",
            changelog=f"{version}\n- changes of {version}",
        )
        v.files_dir.mkdir(parents=True)
        (v.files_dir / "app.ts").write_text("// app")
    return app


def appspace_on(version: AppVersion, subdomain="notes") -> Appspace:
    return Appspace.objects.create(
        owner=version.app.owner,
        app=version.app,
        app_version=version,
        subdomain=subdomain,
        memory_mb=256,
        cpu_percent=50,
        disk_mb=100,
    )


# --- Pages ----------------------------------------------------------------------------------


def test_it_lists_my_apps_on_the_dashboard_and_apps_page(alice, bob):
    installed(alice, "Notes", [("1.0.0", 1), ("2.0.0", 2)])
    installed(bob, "Bob's secret app")
    client = logged_in(alice)
    for url in (reverse("dashboard"), reverse("app_list")):
        html = page(client.get(url))
        assert "My apps" in html
        assert "Notes" in html and "2.0.0" in html and "Notes app" in html
        assert "secret" not in html
        assert reverse("app_install") in html


def test_it_shows_an_app_with_its_versions_and_changelogs(alice):
    app = installed(alice, "Notes", [("1.0.0", 1), ("1.10.0", 2), ("1.2.0", 1)])
    html = page(logged_in(alice).get(reverse("app_detail", args=[app.public_id])))
    # Newest first, by semver (1.10.0 > 1.2.0), each with its changelog.
    positions = [html.index(f"<strong>{v}</strong>") for v in ("1.10.0", "1.2.0", "1.0.0")]
    assert positions == sorted(positions)
    assert "changes of 1.2.0" in html
    assert reverse("app_install_version", args=[app.public_id]) in html


def test_it_shows_when_the_listing_has_a_newer_version(
    alice, eager, django_capture_on_commit_callbacks
):
    app = installed(alice, listing_url="https://apps.example/notes.json", latest="1.5.0")
    client = logged_in(alice)
    html = page(client.get(reverse("app_detail", args=[app.public_id])))
    assert "Version 1.5.0 is available" in html
    assert "Version 1.5.0 available" in page(client.get(reverse("app_list")))

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("app_update", args=[app.public_id]))
    job = Job.objects.get(kind=Job.Kind.INSTALL)
    assert response["Location"] == reverse("install_job", args=[job.public_id])
    assert (job.app, job.params["url"]) == (app, "https://apps.example/notes.json")


def test_it_shows_no_update_when_the_newest_is_installed(alice):
    app = installed(alice, listing_url="https://apps.example/n.json", latest="1.0.0")
    html = page(logged_in(alice).get(reverse("app_detail", args=[app.public_id])))
    assert "is available" not in html


# --- Installing through the panel -----------------------------------------------------------


@pytest.mark.sandbox
def test_it_installs_an_upload_with_live_progress(
    supervisor, eager, alice, make_package, django_capture_on_commit_callbacks
):
    client = logged_in(alice)
    page(client.get(reverse("app_install")))
    with django_capture_on_commit_callbacks(execute=True), make_package().open("rb") as f:
        response = client.post(reverse("app_install"), {"package": f, "url": ""})
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("install_job", args=[job.public_id])
    html = page(client.get(response["Location"]))
    assert 'data-job-status-url="' + reverse("job_status", args=[job.public_id]) in html
    assert "/static/js/job.js" in html
    assert f'href="{reverse("app_detail", args=[job.app.public_id])}"' in html
    status = client.get(reverse("job_status", args=[job.public_id])).json()
    assert (status["state"], status["progress"]) == ("succeeded", 100)
    assert not any(uploads_dir().iterdir())


def test_it_installs_a_new_version_from_the_app_page(
    alice, make_package, django_capture_on_commit_callbacks
):
    app = installed(alice)
    with django_capture_on_commit_callbacks(execute=False), make_package().open("rb") as f:
        response = logged_in(alice).post(
            reverse("app_install_version", args=[app.public_id]), {"package": f}
        )
    job = Job.objects.get()
    assert response["Location"] == reverse("install_job", args=[job.public_id])
    assert job.app == app and not job.params["new_app"]
    assert (uploads_dir() / str(job.public_id) / "package").is_file()


def test_it_queues_an_install_from_a_url(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = logged_in(alice).post(
            reverse("app_install"), {"url": "https://apps.example/notes.json"}
        )
    job = Job.objects.get()
    assert response.status_code == 302
    assert job.params["url"] == "https://apps.example/notes.json" and job.app is None
    assert len(callbacks) == 1  # the task is sent once the job is committed


@pytest.mark.parametrize(
    ("data", "field_error"),
    [
        ({}, "Choose a package file, or give a URL below."),
        ({"url": "ftp://apps.example/x.tar.gz"}, "Only http:// and https:// URLs"),
        ({"url": "not a url"}, "Enter a valid URL."),
    ],
)
def test_it_explains_form_errors_next_to_the_fields(alice, data, field_error):
    html = page(logged_in(alice).post(reverse("app_install"), data), status=400)
    assert field_error in html
    assert 'class="errorlist' in html
    assert not Job.objects.exists()


def test_it_refuses_a_package_and_a_url_together(alice, make_package):
    with make_package().open("rb") as f:
        response = logged_in(alice).post(
            reverse("app_install"), {"package": f, "url": "https://apps.example/x.tar.gz"}
        )
    assert "Choose a package file or a URL, not both." in page(response, status=400)
    assert not Job.objects.exists()
    assert not any(uploads_dir().iterdir())  # the upload did not stay


def test_it_stops_an_upload_at_the_size_limit(settings, alice, make_package):
    settings.DS_APP_MAX_PACKAGE_MB = 1
    big = make_package({"app.ts": "//", "blob.bin": os.urandom(1536 * 1024)})  # incompressible
    with big.open("rb") as f:
        response = logged_in(alice).post(reverse("app_install"), {"package": f})
    html = page(response, status=400)
    assert "larger than 1 MB, the limit here" in html
    assert not Job.objects.exists()
    assert not any(uploads_dir().iterdir())


def test_it_accepts_warnings_and_cancels_from_the_install_page(
    alice, django_capture_on_commit_callbacks
):
    job = install_job_create(owner=alice, url="https://apps.example/a.tar.gz", enqueue=False)
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.NEEDS_CONFIRMATION, warnings=["license: is missing"]
    )
    client = logged_in(alice)
    html = page(client.get(reverse("install_job", args=[job.public_id])))
    assert "license: is missing" in html and "Accept the warnings and install" in html
    # The generic job page offers the same choice (job.params.confirm_template).
    assert "Accept the warnings" in page(client.get(reverse("job_detail", args=[job.public_id])))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("install_job_accept", args=[job.public_id]))
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED and job.params["accept_warnings"]
    assert len(callbacks) == 1

    client.post(reverse("install_job_cancel", args=[job.public_id]))
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert not (uploads_dir() / str(job.public_id)).exists()


# --- Deleting -------------------------------------------------------------------------------


def test_it_refuses_to_delete_a_version_an_appspace_uses(alice):
    app = installed(alice, versions=[("1.0.0", 1), ("2.0.0", 2)])
    used = app.versions.get(version="1.0.0")
    appspace_on(used, "my-notes")
    client = logged_in(alice)
    url = reverse("app_version_delete", args=[app.public_id, used.public_id])
    html = page(client.get(url))
    assert "cannot be deleted" in html and "my-notes" in html and 'class="danger"' not in html
    response = client.post(url, follow=True)
    assert "Version 1.0.0 cannot be deleted: it is used by the appspace my-notes." in page(response)
    assert AppVersion.objects.filter(pk=used.pk).exists()
    assert used.files_dir.is_dir()


def test_it_deletes_an_unused_version_and_its_files(alice, django_capture_on_commit_callbacks):
    app = installed(alice, versions=[("1.0.0", 1), ("2.0.0", 2)])
    unused = app.versions.get(version="2.0.0")
    client = logged_in(alice)
    url = reverse("app_version_delete", args=[app.public_id, unused.public_id])
    assert "Delete version 2.0.0" in page(client.get(url))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response["Location"] == reverse("app_detail", args=[app.public_id])
    assert list(app.versions.values_list("version", flat=True)) == ["1.0.0"]
    assert not unused.path.exists()


def test_it_refuses_to_delete_an_app_an_appspace_uses(alice):
    app = installed(alice)
    appspace_on(app.versions.get())
    client = logged_in(alice)
    assert "cannot be deleted" in page(client.get(reverse("app_detail", args=[app.public_id])))
    response = client.post(reverse("app_delete", args=[app.public_id]), follow=True)
    assert "cannot be deleted: it is used by the appspace notes" in page(response)
    assert App.objects.filter(pk=app.pk).exists() and app.path.is_dir()


def test_it_deletes_an_app_with_all_its_versions(alice, django_capture_on_commit_callbacks):
    app = installed(alice, versions=[("1.0.0", 1), ("2.0.0", 2)])
    pending = install_job_create(
        owner=alice, url="https://apps.example/a.tar.gz", app=app, enqueue=False
    )
    client = logged_in(alice)
    assert "2.0.0, 1.0.0" in page(client.get(reverse("app_delete", args=[app.public_id])))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("app_delete", args=[app.public_id]))
    assert response["Location"] == reverse("app_list")
    assert not App.objects.exists() and not AppVersion.objects.exists()
    assert not app.path.exists()
    pending.refresh_from_db()
    assert pending.state == Job.State.CANCELLED and "app was deleted" in pending.message
    assert not any(uploads_dir().iterdir())


# --- Outsiders ------------------------------------------------------------------------------


def alice_things(alice) -> dict[str, str]:
    app = installed(alice)
    version = app.versions.get()
    job = install_job_create(owner=alice, url="https://apps.example/a.tar.gz", enqueue=False)
    return {
        "app": str(app.public_id),
        "version": str(version.public_id),
        "job": str(job.public_id),
    }


OWNER_URLS = [
    ("get", "app_detail", ["app"]),
    ("post", "app_install_version", ["app"]),
    ("post", "app_update", ["app"]),
    ("post", "app_check_listing", ["app"]),
    ("get", "app_delete", ["app"]),
    ("post", "app_delete", ["app"]),
    ("get", "app_version_delete", ["app", "version"]),
    ("post", "app_version_delete", ["app", "version"]),
    ("get", "install_job", ["job"]),
    ("post", "install_job_accept", ["job"]),
    ("post", "install_job_cancel", ["job"]),
    ("get", "job_detail", ["job"]),
    ("get", "job_status", ["job"]),
    ("post", "job_cancel", ["job"]),
]


@pytest.mark.parametrize(("method", "name", "args"), OWNER_URLS)
def test_outsiders_get_404_on_every_app_and_job_url(alice, charlie, method, name, args):
    things = alice_things(alice)
    App.objects.filter(owner=alice).update(listing_url="https://apps.example/a.json")
    client = logged_in(charlie)
    response = getattr(client, method)(reverse(name, args=[things[a] for a in args]))
    assert response.status_code == 404
    # Nothing changed for Alice.
    assert App.objects.filter(owner=alice).count() == 1
    assert AppVersion.objects.filter(app__owner=alice).count() == 1
    assert Job.objects.get(public_id=things["job"]).state == Job.State.QUEUED
    assert Job.objects.count() == 1


def test_it_404s_a_version_under_another_app_and_unknown_ids(alice):
    app = installed(alice, "One")
    other = installed(alice, "Two")
    version = other.versions.get()
    client = logged_in(alice)
    mixed = reverse("app_version_delete", args=[app.public_id, version.public_id])
    assert client.get(mixed).status_code == 404
    assert client.get(reverse("app_detail", args=[uuid.uuid4()])).status_code == 404
    assert client.get(reverse("install_job", args=[uuid.uuid4()])).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(alice):
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    for url in (reverse("app_list"), reverse("app_install")):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.post(reverse("app_install"), {"url": "https://a.example/x"}).status_code == 302
    assert not Job.objects.exists()


# --- Admin ----------------------------------------------------------------------------------


def test_the_admin_shows_apps_versions_and_jobs_read_only(admin_user, alice):
    app = installed(alice)
    job = install_job_create(owner=alice, url="https://apps.example/a.tar.gz", enqueue=False)
    client = logged_in(admin_user)
    for model, obj in (("app", app), ("appversion", app.versions.get()), ("job", job)):
        changelist = client.get(reverse(f"admin:appspaces_{model}_changelist"))
        assert changelist.status_code == 200
        detail = client.get(reverse(f"admin:appspaces_{model}_change", args=[obj.pk]))
        assert detail.status_code == 200
        assert b'name="_save"' not in detail.content  # read-only
        assert client.get(reverse(f"admin:appspaces_{model}_add")).status_code == 403
