"""The install pipeline with a real supervisor: good packages install, and every class of bad
package is refused with a message that says why, leaving no folder, upload or row behind."""

from __future__ import annotations

import stat
import threading
import time

import pytest
from django.db import connections

from appspaces.installs.service import (
    install_job_accept,
    install_job_cancel,
    install_job_create,
    install_job_run,
)
from appspaces.installs.staging import upload_copy
from appspaces.jobs import DONE, NOT_CLAIMED, REQUEUED
from appspaces.models import App, AppVersion, Job
from appspaces.tasks import install_app
from tests.appspaces.conftest import (
    apps_dir,
    assert_nothing_left,
    hello_app,
    install,
    leftovers,
    manifest_for,
    rerun,
    uploads_dir,
)
from tests.sandbox.fixtures import poll

pytestmark = [pytest.mark.django_db, pytest.mark.sandbox]


def test_it_installs_a_package(supervisor, alice, make_package):
    package = make_package(
        {"app.ts": hello_app(schema=2), "CHANGES.md": "1.0.0: first\n", "public/a.css": "a{}"},
        manifest=manifest_for(
            changelog="CHANGES.md",
            permissions=[{"key": "edit", "name": "Edit things"}],
        ),
    )
    job = install(alice, package)

    assert job.state == Job.State.SUCCEEDED, job.message
    assert job.progress == 100 and job.message == "Installed Hello 1.0.0."
    app = App.objects.get(owner=alice)
    version = AppVersion.objects.get(app=app)
    assert (job.app, job.app_version) == (app, version)
    assert job.params["next_url"] == f"/apps/{app.public_id}/"
    assert (version.version, version.schema, version.migrations) == ("1.0.0", 2, [1, 2])
    assert version.routes == [
        {"index": 0, "method": "GET", "path": "/", "auth": "public", "kind": "function",
         "static": None},
    ]  # fmt: skip
    assert version.changelog == "1.0.0: first\n"
    assert version.permissions == [{"key": "edit", "name": "Edit things", "description": ""}]
    # The files are where every sandbox of this version sees them, read-only.
    files = version.files_dir
    assert (files / "app.ts").read_text() == hello_app(schema=2)
    assert not (files / "app.ts").stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    # The emit cache was warmed at the sandbox's own paths.
    assert (version.cache_dir / "gen" / "file" / "app" / "app.ts.js").is_file()
    # The package was only passing through.
    assert not any(uploads_dir().iterdir())


# --- Every class of bad package -------------------------------------------------------------

THROWS = 'throw new Error("boom at import");\n'
NEVER_ENDS = "setInterval(() => {}, 1000);\nawait new Promise(() => {});\n" + hello_app()
RESERVED = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/.dropserver/login", auth: "public", handler: () => new Response("x") },
] });
"""
BAD_ROUTE = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/a/*/b", auth: "public", handler: () => new Response("x") },
  { method: "POST", path: "/x", auth: { permission: "admin" }, handler: () => new Response("x") },
] });
"""
GAP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [], migrations: [{ schema: 1, up() {} }, { schema: 3, up() {} }] });
"""
MISSING_STATIC = """
import { createApp } from "@dropserver/app";
createApp({ routes: [{ method: "GET", path: "/s/*", auth: "public", static: "@app/public" }] });
"""
NO_CREATE_APP = "export const nothing = 1;\n"

BAD_PACKAGES = {
    "manifest not JSON": ({"app.ts": hello_app()}, "{not json", "dropapp.json: is not valid JSON"),
    "manifest without version": ({"app.ts": hello_app()}, {"name": "X"}, "version: is required"),
    "bad version": ({"app.ts": hello_app()}, {"version": "1.2"}, "version: '1.2' is not a"),
    "no entrypoint": ({"main.ts": hello_app()}, manifest_for(), "entrypoint:"),
    "path traversal": (
        {"app.ts": hello_app(), "../evil.ts": "x"},
        manifest_for(),
        "climbs out of the package",
    ),
    "absolute path": ({"app.ts": hello_app(), "/etc/evil": "x"}, manifest_for(), "absolute"),
    "symlink": (
        {"app.ts": hello_app(), "link": ("symlink", "/etc/passwd")},
        manifest_for(),
        "symbolic link",
    ),
    "hard link": (
        {"app.ts": hello_app(), "link": ("hardlink", "app.ts")},
        manifest_for(),
        "hard link",
    ),
    "compression bomb": (
        {"app.ts": hello_app(), "zeros.bin": b"\0" * (8 * 1024 * 1024)},
        manifest_for(),
        "compression bomb",
    ),
    "app throws at import": ({"app.ts": THROWS + hello_app()}, manifest_for(), "boom at import"),
    "app never calls createApp": ({"app.ts": NO_CREATE_APP}, manifest_for(), "createApp"),
    "invalid routes": ({"app.ts": BAD_ROUTE}, manifest_for(), "'*' is only allowed"),
    "undeclared permission": (
        {"app.ts": BAD_ROUTE},
        manifest_for(),
        "'admin' is not declared in the manifest",
    ),
    "reserved route prefix": ({"app.ts": RESERVED}, manifest_for(), "/.dropserver/"),
    "migration gap": ({"app.ts": GAP}, manifest_for(), "numbered 1, 2, 3"),
    "missing static folder": ({"app.ts": MISSING_STATIC}, manifest_for(), "not in the package"),
}


@pytest.mark.parametrize("case", BAD_PACKAGES, ids=list(BAD_PACKAGES))
def test_it_refuses_bad_packages_and_leaves_nothing(case, supervisor, alice, make_package):
    files, manifest, expected = BAD_PACKAGES[case]
    job = install(alice, make_package(files, manifest=manifest))
    assert job.state == Job.State.FAILED
    assert expected in job.message, job.message
    assert "Traceback" not in job.message
    assert_nothing_left()


def test_it_names_every_manifest_field_in_error(supervisor, alice, make_package):
    manifest = {"version": "x", "website": "ftp://a", "permissions": [{"key": "Bad Key"}]}
    job = install(alice, make_package(manifest=manifest))
    assert job.state == Job.State.FAILED
    for field in ("version:", "website:", "permissions[0].key:"):
        assert field in job.message, job.message
    assert_nothing_left()


def test_it_stops_an_app_init_that_never_ends(settings, supervisor, alice, make_package):
    settings.DS_APP_INIT_TIMEOUT = 1.5
    started = time.monotonic()
    job = install(alice, make_package({"app.ts": NEVER_ENDS}))
    assert job.state == Job.State.FAILED
    assert "did not finish starting within 1.5 seconds" in job.message
    assert time.monotonic() - started < 15
    assert_nothing_left()


def test_it_installs_a_version_only_once(supervisor, alice, make_package):
    first = install(alice, make_package())
    again = install(alice, make_package(), app=first.app)
    assert again.state == Job.State.FAILED
    assert again.message == "Hello 1.0.0 is already installed."
    # The installed version is untouched.
    version = AppVersion.objects.get()
    assert (version.files_dir / "app.ts").is_file()
    assert [p.name for p in apps_dir().iterdir()] == [str(first.app.public_id)]
    assert not any(uploads_dir().iterdir())


@pytest.mark.parametrize(
    ("installed", "then", "word"),
    [(("1.0.0", 2), ("2.0.0", 1), "lower"), (("2.0.0", 1), ("1.0.0", 2), "higher")],
)
def test_it_refuses_a_schema_that_goes_down_as_versions_go_up(
    installed, then, word, supervisor, alice, make_package
):
    (v1, s1), (v2, s2) = installed, then
    first = install(alice, make_package({"app.ts": hello_app(s1)}, manifest=manifest_for(v1)))
    assert first.state == Job.State.SUCCEEDED, first.message
    job = install(
        alice, make_package({"app.ts": hello_app(s2)}, manifest=manifest_for(v2)), app=first.app
    )
    assert job.state == Job.State.FAILED
    assert f"Version {v2} has data schema {s2}, {word} than" in job.message
    assert list(AppVersion.objects.values_list("version", flat=True)) == [v1]
    assert [p.name for p in version_dirs_of(first.app)] == [v1]


def version_dirs_of(app: App):
    return sorted(app.path.iterdir())


def test_it_adds_versions_to_an_app_in_semver_order(supervisor, alice, make_package):
    v1 = install(alice, make_package({"app.ts": hello_app(1)}, manifest=manifest_for("1.0.0")))
    v10 = install(
        alice,
        make_package({"app.ts": hello_app(2)}, manifest=manifest_for("1.10.0", name="Hello 2")),
        app=v1.app,
    )
    v2 = install(
        alice, make_package({"app.ts": hello_app(1)}, manifest=manifest_for("1.2.0")), app=v1.app
    )
    assert [j.state for j in (v1, v10, v2)] == [Job.State.SUCCEEDED] * 3
    app = App.objects.get()
    assert app.name == "Hello 2"  # named after its newest version
    ordered = list(app.versions.order_by("-version_key").values_list("version", flat=True))
    assert ordered == ["1.10.0", "1.2.0", "1.0.0"]


# --- Warnings: confirm, accept, cancel ------------------------------------------------------


def warned_package(make_package):
    # No name and an unknown field: two warnings, no errors.
    return make_package(manifest={"version": "1.0.0", "license": "MIT", "colour": "blue"})


def test_it_waits_for_warnings_to_be_accepted(supervisor, alice, make_package):
    job = install(alice, warned_package(make_package))
    assert job.state == Job.State.NEEDS_CONFIRMATION
    assert sorted(job.warnings) == [
        "colour: unknown field; it is ignored",
        "name: is missing; the app will be shown without a name",
    ]
    # Nothing is installed while it waits; only the package is kept.
    assert not App.objects.exists() and not apps_dir().exists()
    staged = uploads_dir() / str(job.public_id)
    assert [p.name for p in staged.iterdir()] == ["package"]

    assert install_job_accept(job=job, enqueue=False)
    assert not install_job_accept(job=job, enqueue=False)  # only once
    job = rerun(job)
    assert job.state == Job.State.SUCCEEDED, job.message
    assert job.app.name == job.params["filename"].split(".")[0]  # no name: named after the file
    assert not staged.exists()


def test_it_cancels_an_install_waiting_for_confirmation(supervisor, alice, make_package):
    job = install(alice, warned_package(make_package))
    assert install_job_cancel(job=job)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert not install_job_accept(job=job, enqueue=False)
    assert rerun(job).state == Job.State.CANCELLED
    assert_nothing_left()


@pytest.mark.django_db(transaction=True)  # the pipeline runs in a thread of its own
def test_it_cleans_up_when_cancelled_while_running(supervisor, alice, make_package):
    slow = "await new Promise((r) => setTimeout(r, 1500));\n" + hello_app()
    job = install_job_create(
        owner=alice, upload=upload_copy(make_package({"app.ts": slow})), enqueue=False
    )
    worker = threading.Thread(target=run_in_thread, args=(job.pk,))
    worker.start()
    try:
        poll(lambda: Job.objects.get(pk=job.pk).step.startswith("Starting the app"), 15)
        assert any(apps_dir().glob("*/1.0.0/files/app.ts"))  # placed while app-init runs
        assert install_job_cancel(job=job)
    finally:
        worker.join(30)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert_nothing_left()


# --- Tasks: claimed once, harmless twice, waiting for the supervisor ------------------------


def test_it_runs_a_job_once_however_often_the_task_arrives(eager, supervisor, alice, make_package):
    job = install_job_create(owner=alice, upload=upload_copy(make_package()), enqueue=False)
    assert install_app.delay(job.pk).get() == DONE
    assert install_app.delay(job.pk).get() == NOT_CLAIMED
    assert AppVersion.objects.count() == 1
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED


def test_it_fails_clearly_without_the_supervisor(alice, make_package):
    job = install(alice, make_package())
    assert job.state == Job.State.FAILED
    assert "sandbox supervisor is not running" in job.message
    assert "manage.py sandboxd" in job.message
    assert_nothing_left()


def test_it_requeues_while_the_supervisor_is_down(alice, make_package):
    job = install_job_create(owner=alice, upload=upload_copy(make_package()), enqueue=False)
    assert install_job_run(job_id=job.pk, requeue_if_sandbox_down=True) == REQUEUED
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.step == "Waiting for the sandbox supervisor"
    left = leftovers()
    assert left["uploads"] == [str(job.public_id)]  # the package waits for the retry
    assert not version_dirs_of_all()


def run_in_thread(job_id: int) -> None:
    try:
        install_job_run(job_id=job_id)
    finally:
        connections.close_all()  # this thread's own


def version_dirs_of_all():
    return list(apps_dir().glob("*/*")) if apps_dir().exists() else []


def test_it_fails_when_the_app_is_deleted_during_the_install(supervisor, alice, make_package):
    first = install(alice, make_package())
    job = install_job_create(
        owner=alice,
        upload=upload_copy(make_package(manifest=manifest_for("2.0.0"))),
        app=first.app,
        enqueue=False,
    )
    first.app.delete()
    job = rerun(job)
    assert job.state == Job.State.FAILED
    assert "deleted" in job.message
    assert not list(apps_dir().glob("*/2.0.0"))
