"""The backups panel: owner-only (outsiders get 404 everywhere), jobs, typed confirmation,
download, delete, schedule bounds, and the staff-only health overview."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from appspaces.models import Job
from backups.models import Backup
from backups.restore import restore_job_run
from backups.services import backup_create, backup_job_run
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=0)
    fill(space, {"a.txt": "alpha", "b.bin": os.urandom(20_000)})
    return space


@pytest.fixture
def backup(appspace):
    return backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)


def _urls(appspace, backup) -> list[tuple[str, str]]:
    a, b = appspace.public_id, backup.public_id
    return [
        ("get", reverse("backup_list", args=[a])),
        ("post", reverse("backup_now", args=[a])),
        ("post", reverse("backup_policy", args=[a])),
        ("post", reverse("backup_upload_restore", args=[a])),
        ("get", reverse("backup_restore", args=[a, b])),
        ("post", reverse("backup_restore", args=[a, b])),
        ("get", reverse("backup_download", args=[a, b])),
        ("get", reverse("backup_delete", args=[a, b])),
        ("post", reverse("backup_delete", args=[a, b])),
    ]


def test_it_answers_404_to_an_outsider_on_every_backup_view(appspace, backup, charlie, logged_in):
    client = logged_in(charlie)
    for method, url in _urls(appspace, backup):
        response = getattr(client, method)(url, {"confirm": appspace.subdomain})
        assert response.status_code == 404, (method, url)
    assert backup.path.is_file()
    assert not Job.objects.exists()


def test_it_sends_anonymous_visitors_to_log_in(appspace, backup, client, settings):
    client.defaults["HTTP_HOST"] = settings.DS_PANEL_HOST
    for method, url in _urls(appspace, backup):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/login" in response["Location"], url


def test_it_lists_only_complete_backups(appspace, backup, alice, logged_in):
    Backup.objects.create(appspace=appspace, kind="manual", file_name="pending.tar.zst")
    Backup.objects.create(
        appspace=appspace, kind="scheduled", file_name="failed.tar.zst", state="failed",
        message="The disk holding the backups is full",
    )  # fmt: skip
    response = logged_in(alice).get(reverse("backup_list", args=[appspace.public_id]))
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count(reverse("backup_download", args=[appspace.public_id, backup.public_id]))
    assert "pending.tar.zst" not in body
    assert "The disk holding the backups is full" in body  # a recent failure is shown
    assert "<script" not in body and "style=" not in body


def test_it_backs_up_now_as_a_job_and_shows_the_job_page(appspace, alice, logged_in):
    client = logged_in(alice)
    response = client.post(reverse("backup_now", args=[appspace.public_id]))
    job = Job.objects.get(kind=Job.Kind.BACKUP)
    assert response["Location"] == reverse("job_detail", args=[job.public_id])
    # A second click while it waits does not queue another.
    client.post(reverse("backup_now", args=[appspace.public_id]))
    assert Job.objects.count() == 1
    backup_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    assert "Backed up 2 files" in job.message
    assert appspace.backups.get().job == job
    page = client.get(reverse("job_detail", args=[job.public_id]))
    assert page.status_code == 200 and "Backed up 2 files" in page.content.decode()


def test_it_restores_only_after_the_name_is_typed(appspace, backup, alice, logged_in):
    client = logged_in(alice)
    url = reverse("backup_restore", args=[appspace.public_id, backup.public_id])
    assert client.get(url).status_code == 200
    response = client.post(url, {"confirm": "not-it"})
    assert response.status_code == 400 and not Job.objects.exists()
    saved = tree_hashes(appspace.data_path)
    (appspace.data_path / "a.txt").write_text("ransomed")
    response = client.post(url, {"confirm": appspace.subdomain})
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert response["Location"] == reverse("job_detail", args=[job.public_id])
    restore_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    assert tree_hashes(appspace.data_path) == saved


def test_it_restores_an_uploaded_archive(appspace, backup, alice, logged_in):
    client = logged_in(alice)
    saved = tree_hashes(appspace.data_path)
    (appspace.data_path / "a.txt").unlink()
    with open(backup.path, "rb") as fh:
        response = client.post(
            reverse("backup_upload_restore", args=[appspace.public_id]),
            {"archive": fh, "confirm": appspace.subdomain},
        )
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert response.status_code == 302
    upload = job.params["upload"]
    assert os.path.isfile(upload)
    restore_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    assert tree_hashes(appspace.data_path) == saved
    assert not os.path.exists(upload)


def test_it_refuses_an_upload_over_the_limit(appspace, alice, logged_in, settings, tmp_path):
    settings.DS_BACKUP_MAX_UPLOAD_MB = 1
    big = tmp_path / "big.tar.zst"
    big.write_bytes(os.urandom(1024 * 1024 + 10))
    with open(big, "rb") as fh:
        response = logged_in(alice).post(
            reverse("backup_upload_restore", args=[appspace.public_id]),
            {"archive": fh, "confirm": appspace.subdomain},
        )
    assert response.status_code == 400
    assert "larger than 1 MB" in response.content.decode()
    assert not Job.objects.exists()


def test_it_downloads_the_archive_to_its_owner(appspace, backup, alice, logged_in):
    url = reverse("backup_download", args=[appspace.public_id, backup.public_id])
    response = logged_in(alice).get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert b"".join(response.streaming_content) == backup.path.read_bytes()


def test_it_deletes_a_backup_and_its_archive(appspace, backup, alice, logged_in):
    client = logged_in(alice)
    url = reverse("backup_delete", args=[appspace.public_id, backup.public_id])
    assert client.get(url).status_code == 200
    client.post(url)
    assert not Backup.objects.exists() and not backup.path.exists()


def test_it_keeps_the_schedule_within_the_admins_bounds(appspace, alice, logged_in, settings):
    settings.DS_BACKUP_MIN_INTERVAL_HOURS, settings.DS_BACKUP_MAX_INTERVAL_HOURS = 6, 48
    url = reverse("backup_policy", args=[appspace.public_id])
    client = logged_in(alice)
    fields = {"enabled": "on", "keep_daily": 7, "keep_weekly": 4, "keep_pre_migration_days": 30}
    response = client.post(url, {**fields, "interval_hours": 1})
    assert response.status_code == 400 and "between 6 and 48" in response.content.decode()
    response = client.post(url, {**fields, "interval_hours": 12})
    assert response.status_code == 302
    appspace.backup_policy.refresh_from_db()
    assert appspace.backup_policy.interval_hours == 12


def test_it_shows_backup_health_to_staff_only(appspace, backup, alice, admin_user, logged_in):
    url = reverse("admin:backup_health")
    assert logged_in(alice).get(url).status_code == 302  # to the admin login
    Backup.objects.create(
        appspace=appspace, kind="scheduled", file_name="f.tar.zst", state="failed",
        message="The disk holding the backups is full",
    )  # fmt: skip
    response = logged_in(admin_user).get(url)
    body = response.content.decode()
    assert response.status_code == 200
    assert appspace.subdomain in body and "last attempt failed" in body
