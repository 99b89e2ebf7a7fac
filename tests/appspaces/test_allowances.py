"""Per-person allowances: the services refuse an appspace, new limits or an app beyond the
person's allowance (defaults from settings, overrides in the admin) with a message that says
what is left; the checks hold under concurrency (the owner's row is locked); the wizard, the
limits form, the install form, the CLI and the dashboard say so."""

from __future__ import annotations

import json
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.urls import reverse

from accounts.models import Allowance
from appspaces.allowances import AllowanceError, summary
from appspaces.installs.service import install_job_create
from appspaces.lifecycle.control import AppspaceError, appspace_limits_set
from appspaces.lifecycle.creation import appspace_create
from appspaces.models import Appspace, Job
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_appspace,
    make_version,
    own_uids,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def allowance(settings):
    settings.DS_ALLOWANCE_APPSPACES = 3
    settings.DS_ALLOWANCE_APPS = 2
    settings.DS_ALLOWANCE_DISK_MB = 2048
    settings.DS_ALLOWANCE_MEMORY_MB = 1024


def create(owner, version, subdomain, **limits):
    return appspace_create(
        owner=owner, app_version=version, subdomain=subdomain, enqueue=False, **limits
    )


def test_a_fourth_appspace_is_refused_saying_what_is_left(alice):
    version = make_version(alice)
    for n in range(3):
        create(alice, version, f"space{n}", disk_mb=100, memory_mb=64)
    with pytest.raises(AppspaceError) as raised:
        create(alice, version, "space3", disk_mb=100, memory_mb=64)
    message = str(raised.value)
    assert "you already have 3 of 3 appspaces" in message
    assert "You have 3 of 3 appspaces; 1.7 GB of 2 GB disk left; 832 MB of 1 GB memory left" in (
        message
    )
    assert Appspace.objects.count() == 3


def test_the_sum_of_disk_quotas_is_bounded(alice):
    version = make_version(alice)
    create(alice, version, "big", disk_mb=1536, memory_mb=64)
    with pytest.raises(AppspaceError) as raised:
        create(alice, version, "more", disk_mb=1024, memory_mb=64)
    assert "1 GB of disk asked, 512 MB available" in str(raised.value)
    assert "You have 1 of 3 appspaces; 512 MB of 2 GB disk left" in str(raised.value)
    create(alice, version, "fits", disk_mb=512, memory_mb=64)  # exactly what is left


def test_an_admins_override_replaces_the_default_and_zero_means_no_limit(alice, bob):
    version = make_version(alice)
    Allowance.objects.create(user=alice, appspaces=1, disk_mb=0)
    create(alice, version, "one", disk_mb=5000, memory_mb=64)
    with pytest.raises(AppspaceError, match="1 of 1 appspaces"):
        create(alice, version, "two", disk_mb=10, memory_mb=64)
    # bob keeps the defaults
    assert summary(bob).startswith("You have 0 of 3 appspaces; 2 GB of 2 GB disk left")


def test_new_limits_are_checked_against_the_others_only(alice):
    version = make_version(alice)
    first = make_appspace(alice, version)  # 256 MB memory
    second = make_appspace(alice, version)
    appspace_limits_set(appspace=second, memory_mb=768, cpu_percent=50, disk_mb=100)
    with pytest.raises(AppspaceError) as raised:
        appspace_limits_set(appspace=first, memory_mb=512, cpu_percent=50, disk_mb=100)
    assert "512 MB of memory asked, 256 MB available" in str(raised.value)
    first.refresh_from_db()
    assert first.memory_mb == 256


@pytest.mark.django_db(transaction=True)
def test_a_creation_racing_another_is_counted_after_it(alice, settings):
    """One creation holds the owner's row (uncommitted); a second one, in another connection,
    must wait for it and then see it: together they cannot pass the allowance."""
    settings.DS_ALLOWANCE_APPSPACES = 1
    version = make_version(alice)
    outcome: dict = {}

    def second():
        try:
            create(alice, version, "second", disk_mb=10, memory_mb=64)
            outcome["result"] = "created"
        except AppspaceError as exc:
            outcome["result"] = str(exc)
        finally:
            connections.close_all()

    with transaction.atomic():
        create(alice, version, "first", disk_mb=10, memory_mb=64)
        thread = threading.Thread(target=second)
        thread.start()
        # Commit once the other connection waits for our lock, or is done (the old code).
        while thread.is_alive() and not _someone_waits_for_a_lock():
            thread.join(0.05)
    thread.join()
    assert "1 of 1 appspaces" in outcome["result"]
    assert list(Appspace.objects.values_list("subdomain", flat=True)) == ["first"]


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # pg_locks is live (pg_stat_activity is a snapshot within a transaction).
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0] > 0


def test_an_app_beyond_the_allowance_is_refused_but_a_new_version_is_not(alice):
    make_version(alice, name="One")
    app = make_version(alice, name="Two").app
    with pytest.raises(AllowanceError, match="you have 2 of 2 apps installed"):
        install_job_create(owner=alice, url="https://apps.example/x.json", enqueue=False)
    job = install_job_create(owner=alice, url="https://apps.example/x.json", app=app, enqueue=False)
    assert job.app == app


def test_the_wizard_refuses_and_shows_what_is_left(alice):
    version = make_version(alice)
    make_appspace(alice, version).__class__.objects.filter(owner=alice).update(disk_mb=2000)
    client = logged_in(alice)
    page = client.get(reverse("appspace_new") + f"?version={version.public_id}")
    assert "You have 1 of 3 appspaces; 48 MB of 2 GB disk left" in page.content.decode()
    response = client.post(
        reverse("appspace_new"),
        {
            "version": version.public_id,
            "subdomain": "fresh",
            "memory_mb": 128,
            "cpu_percent": 25,
            "disk_mb": 50,
        },
    )
    assert response.status_code == 400
    assert "50 MB of disk asked, 48 MB available" in response.content.decode()
    assert not Job.objects.exists()


def test_the_limits_form_refuses_beyond_the_allowance(alice):
    version = make_version(alice)
    appspace = make_appspace(alice, version)
    make_appspace(alice, version)
    response = logged_in(alice).post(
        reverse("appspace_limits", args=[appspace.public_id]),
        {"memory_mb": 1024, "cpu_percent": 50, "disk_mb": 100},
    )
    assert response.status_code == 400
    assert "1 GB of memory asked, 768 MB available" in response.content.decode()
    appspace.refresh_from_db()
    assert appspace.memory_mb == 256


def test_the_install_form_refuses_a_new_app_beyond_the_allowance(alice):
    make_version(alice, name="One")
    make_version(alice, name="Two")
    response = logged_in(alice).post(
        reverse("app_install"), {"url": "https://apps.example/notes.json"}
    )
    assert response.status_code == 400
    assert "you have 2 of 2 apps installed" in response.content.decode()
    assert not Job.objects.exists()


def test_the_cli_refuses_beyond_the_allowance(alice):
    version = make_version(alice)
    make_appspace(alice, version)  # 256 MB of 1 GB memory
    argv = [
        "--owner", "alice@example.com", "--app", "Notes", "--version", "1.0.0",
        "--subdomain", "fresh", "--memory-mb", "1024",
    ]  # fmt: skip
    with pytest.raises(CommandError) as raised:
        call_command("create_appspace", *argv, stdout=StringIO(), stderr=StringIO())
    assert "1 GB of memory asked, 768 MB available" in str(raised.value)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("create_appspace", *argv, "--json", stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue()) == {"ok": False, "error": str(raised.value)}
    assert Appspace.objects.count() == 1


def test_the_dashboard_shows_totals_against_the_allowance(alice):
    version = make_version(alice)
    make_appspace(alice, version)
    html = logged_in(alice).get(reverse("dashboard")).content.decode()
    assert "My allowance" in html
    assert '<th scope="row">Disk</th><td>100 MB</td><td>2 GB</td>' in html
    assert '<th scope="row">Apps</th><td>1</td><td>2</td>' in html


def test_the_admin_edits_a_persons_allowance(admin_user, alice):
    client = logged_in(admin_user)
    html = client.get(reverse("admin:accounts_user_change", args=[alice.pk])).content.decode()
    for field in ("appspaces", "apps", "disk_mb", "memory_mb"):
        assert f'name="allowance-0-{field}"' in html


@pytest.mark.sandbox
def test_an_install_queued_with_room_fails_at_its_commit_once_the_room_is_gone(
    supervisor, alice, make_package, settings
):
    """The app count is checked again under the owner's lock when the install commits: an
    install queued while there was room leaves nothing once another app took that room."""
    from appspaces.installs.service import install_job_run
    from appspaces.installs.staging import upload_copy
    from appspaces.models import App
    from tests.appspaces.conftest import apps_dir

    settings.DS_ALLOWANCE_APPS = 1
    package = make_package()
    job = install_job_create(
        owner=alice, upload=upload_copy(package), filename=package.name, enqueue=False
    )
    make_version(alice, name="Other")  # the room goes meanwhile
    install_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "you have 1 of 1 apps installed" in job.message
    assert list(App.objects.values_list("name", flat=True)) == ["Other"]
    assert not apps_dir().exists() or not any(apps_dir().iterdir())
