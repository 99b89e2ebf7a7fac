"""Off-site copies end to end with real restic and a repository in a temporary folder: a READY
backup gets an OFFSITE job that copies it (tagged), failures are shown and retried and delete
nothing local, no secret reaches a job message, retention forgets by the appspace's policy, the
integrity check is recorded, and a restore from a snapshot goes through the verified path."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from appspaces.models import Job
from backups.models import Backup, OffsiteCheck
from backups.offsite import tree
from backups.offsite.copies import (
    offsite_catch_up,
    offsite_check,
    offsite_job_run,
    offsite_retention,
    repository,
)
from backups.restore import restore_job_create, restore_job_run
from backups.services import backup_create
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db
PASSWORD = "offsite-test-password-5678"


@pytest.fixture
def offsite(settings, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    settings.DS_BACKUP_REPOSITORY = str(tmp_path / "repo")
    settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE = str(pw)
    return tmp_path


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=1)
    fill(space, {"db.sqlite3": os.urandom(40_000), "a/b.txt": "bbb", "top.txt": "top"})
    return space


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_job(backup: Backup) -> Job:
    return Job.objects.get(kind=Job.Kind.OFFSITE, params__backup=str(backup.public_id))


def test_a_ready_backup_is_copied_off_site_with_tags(offsite, appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    job = copy_job(backup)
    assert offsite_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    backup.refresh_from_db()
    job.refresh_from_db()
    assert backup.offsite_state == Backup.Offsite.COPIED and backup.offsite_snapshot
    assert job.progress == 100
    (snap,) = repository().snapshots([f"appspace={appspace.public_id}"])
    assert snap.tag("backup") == str(backup.public_id) and snap.tag("kind") == "manual"
    # sent as the archive's tree (backups/offsite/tree.py), so restic can skip what is unchanged
    assert snap.tag("format") == "tree" and snap.paths == [
        str(tree.tree_dir(str(appspace.public_id)))
    ]


def test_no_repository_no_job(appspace, settings):
    settings.DS_BACKUP_REPOSITORY = ""
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert not Job.objects.filter(kind=Job.Kind.OFFSITE).exists()
    assert backup.offsite_state == ""


def test_a_failed_copy_is_retried_shown_and_deletes_nothing(
    offsite, appspace, settings, logged_in, admin_user, caplog
):
    caplog.set_level("DEBUG")
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    before = sha(backup.path)
    repository().ensure()
    wrong = offsite / "wrong"
    wrong.write_text("the-wrong-password-0000\n")
    settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE = str(wrong)
    job = copy_job(backup)
    assert offsite_job_run(job_id=job.pk, final=False) == "retry"
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert offsite_job_run(job_id=job.pk, final=True) == Job.State.FAILED
    job.refresh_from_db()
    backup.refresh_from_db()
    assert backup.offsite_state == Backup.Offsite.FAILED
    assert "password" in job.message
    assert backup.state == Backup.State.READY and sha(backup.path) == before
    offsite_check(read_data="")
    pages = [
        logged_in(appspace.owner).get(reverse("backup_list", args=[appspace.public_id])),
        logged_in(admin_user).get(reverse("admin:backup_health")),
    ]
    for response in pages:
        assert response.status_code == 200
    assert "copy failed" in pages[0].content.decode()
    health = pages[1].content.decode()
    assert "off-site copy failed" in health and "wrong-password" in health
    for text in (
        job.message,
        job.step,
        backup.offsite_message,
        *(p.content.decode() for p in pages),
    ):
        assert "the-wrong-password-0000" not in text and PASSWORD not in text
    assert "off-site copy of backup" in caplog.text  # logged, scrubbed
    # the periodic catch-up copies it once the repository opens again
    settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE = str(offsite / "pw")
    assert offsite_catch_up() == 1
    assert offsite_catch_up() == 0  # one job per backup at a time
    (again,) = Job.objects.filter(kind=Job.Kind.OFFSITE).exclude(state__in=Job.FINISHED)
    assert offsite_job_run(job_id=again.pk) == Job.State.SUCCEEDED
    backup.refresh_from_db()
    assert backup.offsite_state == Backup.Offsite.COPIED
    assert "the-wrong-password-0000" not in caplog.text and PASSWORD not in caplog.text


def test_restore_from_an_off_site_snapshot(offsite, appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    offsite_job_run(job_id=copy_job(backup).pk)
    backup.refresh_from_db()
    saved = tree_hashes(appspace.data_path)
    backup.path.unlink()  # the local archive is lost with the disk
    (appspace.data_path / "top.txt").write_text("changed")
    job = restore_job_create(appspace=appspace, offsite=backup.offsite_snapshot, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    assert tree_hashes(appspace.data_path) == saved
    assert not list((offsite / "data").rglob("offsite-*")) if (offsite / "data").exists() else 1


def test_restore_refuses_an_unknown_or_corrupted_snapshot(offsite, appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    offsite_job_run(job_id=copy_job(backup).pk)
    backup.refresh_from_db()
    saved = tree_hashes(appspace.data_path)
    job = restore_job_create(appspace=appspace, offsite="deadbeef", enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.FAILED
    job.refresh_from_db()
    assert "does not exist" in job.message
    for pack in (offsite / "repo" / "data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[200:260] = bytes(b ^ 0xFF for b in data[200:260])
            pack.chmod(0o600)
            pack.write_bytes(bytes(data))
    job = restore_job_create(appspace=appspace, offsite=backup.offsite_snapshot, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.FAILED
    job.refresh_from_db()
    assert "could not be fetched" in job.message and PASSWORD not in job.message
    assert tree_hashes(appspace.data_path) == saved
    from backups.restore import uploads_dir

    assert not list(uploads_dir().glob("offsite-*"))
    check = offsite_check(read_data="100%")
    assert check is not None and not check.ok and check.kind == "corrupted"
    assert OffsiteCheck.objects.latest("created").pk == check.pk


def test_retention_forgets_by_the_policy(offsite, appspace):
    from backups.store import backup_policy

    policy = backup_policy(appspace)
    policy.keep_daily, policy.keep_weekly = 1, 0
    policy.save()
    now = timezone.now()
    backups = []
    for days in (3, 2, 1):
        b = backup_create(appspace=appspace, kind=Backup.Kind.SCHEDULED)
        Backup.objects.filter(pk=b.pk).update(created=now - timedelta(days=days))
        backups.append(b)
    manual = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    for b in [*backups, manual]:
        if Backup.objects.filter(pk=b.pk).exists():
            offsite_job_run(job_id=copy_job(b).pk)
    before = repository().snapshots([f"appspace={appspace.public_id}"])
    offsite_retention(appspace)
    after = repository().snapshots([f"appspace={appspace.public_id}"])
    kinds = sorted(s.tag("kind") for s in after)
    assert kinds == ["manual", "scheduled"]  # the newest scheduled one and the manual one
    assert len(before) > len(after)
    assert offsite_check(read_data="").ok


def test_the_task_retries_then_fails_the_job(offsite, appspace, settings):
    from backups.tasks import offsite_upload

    settings.DS_BACKUP_OFFSITE_RETRIES = 1
    settings.DS_BACKUP_OFFSITE_RETRY_SECONDS = 0
    settings.DS_BACKUP_REPOSITORY = str(offsite / "not-mounted" / "disk" / "repo")
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    job = copy_job(backup)
    offsite_upload.apply(args=[job.pk])
    job.refresh_from_db()
    backup.refresh_from_db()
    assert job.state == Job.State.FAILED and "mounted" in job.message
    assert backup.offsite_state == Backup.Offsite.FAILED and backup.path.is_file()
    assert not (offsite / "not-mounted").exists()


def test_the_owner_restores_from_the_off_site_copy_through_the_page(
    offsite, appspace, logged_in, bob
):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    offsite_job_run(job_id=copy_job(backup).pk)
    backup.refresh_from_db()
    url = reverse("backup_restore", args=[appspace.public_id, backup.public_id])
    listing = logged_in(appspace.owner).get(reverse("backup_list", args=[appspace.public_id]))
    assert f"{url}?source=offsite" in listing.content.decode()
    assert logged_in(bob).get(f"{url}?source=offsite").status_code == 404
    page = logged_in(appspace.owner).get(f"{url}?source=offsite")
    assert "from its off-site copy" in page.content.decode()
    response = logged_in(appspace.owner).post(
        url, {"confirm": appspace.subdomain, "source": "offsite"}
    )
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.RESTORE, appspace=appspace)
    assert job.params["offsite"] == backup.offsite_snapshot and "backup" not in job.params


def _inodes(root) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def test_the_next_copy_sends_only_what_changed_and_restores_byte_for_byte(offsite, appspace):
    key = str(appspace.public_id)
    first = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    offsite_job_run(job_id=copy_job(first).pk)
    data = tree.tree_dir(key) / "data"
    before = _inodes(data)
    assert sorted(before) == ["a/b.txt", "db.sqlite3", "top.txt"]
    (appspace.data_path / "top.txt").write_text("top, changed")
    second = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert tree.held(key) == str(second.public_id)  # updated from the backup's staging copy
    after = _inodes(data)
    # unchanged files keep their inode and times: restic (same path, a parent snapshot) skips
    # them; the changed one is a new file
    assert after["a/b.txt"] == before["a/b.txt"] and after["db.sqlite3"] == before["db.sqlite3"]
    assert after["top.txt"] != before["top.txt"]
    offsite_job_run(job_id=copy_job(second).pk)
    first.refresh_from_db()
    second.refresh_from_db()
    diff = repository().run("diff", first.offsite_snapshot, second.offsite_snapshot)
    changed = [ln for ln in diff.stdout.decode().splitlines() if ln[:1] in "M+-" and "/" in ln]
    assert sorted(ln.split("/")[-1] for ln in changed) == ["dropserver-backup.json", "top.txt"]

    saved = tree_hashes(appspace.data_path)
    fill(appspace, {"top.txt": "lost"})
    for b in (first, second):
        b.path.unlink()  # the disk with the archives is gone
    job = restore_job_create(appspace=appspace, offsite=second.offsite_snapshot, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    assert tree_hashes(appspace.data_path) == saved


def test_an_older_backup_is_copied_from_its_own_archive(offsite, appspace):
    key = str(appspace.public_id)
    older = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    saved = tree_hashes(appspace.data_path)
    fill(appspace, {"top.txt": "newer"})
    newer = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert tree.held(key) == str(newer.public_id)
    offsite_job_run(job_id=copy_job(older).pk)  # the tree holds the newer one: unpacked, verified
    older.refresh_from_db()
    assert older.offsite_state == Backup.Offsite.COPIED and tree.held(key) == str(older.public_id)
    job = restore_job_create(appspace=appspace, offsite=older.offsite_snapshot, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    assert tree_hashes(appspace.data_path) == saved
    assert not (tree.folder(key) / ".extract").exists()


def test_archive_snapshots_from_before_trees_still_restore(offsite, appspace):
    from backups.offsite.copies import backup_tags

    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    repo = repository()
    repo.ensure()
    sid = repo.backup([backup.path], backup_tags(backup))  # as copies were made before
    saved = tree_hashes(appspace.data_path)
    fill(appspace, {"top.txt": "changed"})
    job = restore_job_create(appspace=appspace, offsite=sid, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    assert tree_hashes(appspace.data_path) == saved


def test_a_tree_snapshot_with_a_symlink_is_refused(offsite, appspace, tmp_path):
    """Whoever holds the repository password could send a tree that links to host files."""
    from backups.offsite.copies import backup_tags

    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    key = str(appspace.public_id)
    offsite_job_run(job_id=copy_job(backup).pk)
    evil = tree.tree_dir(key) / "data" / "top.txt"
    evil.unlink()
    evil.symlink_to("/etc/shadow")
    sid = repository().backup([tree.tree_dir(key)], [*backup_tags(backup), tree.TAG])
    saved = tree_hashes(appspace.data_path)
    job = restore_job_create(appspace=appspace, offsite=sid, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.FAILED
    job.refresh_from_db()
    assert "not a plain file" in job.message
    assert tree_hashes(appspace.data_path) == saved


def test_the_sweep_removes_trees_of_deleted_appspaces_and_all_without_a_repository(
    offsite, appspace, alice, make_appspace, settings
):
    from backups.sweep import deleted_appspaces_folders_remove

    other = make_appspace(alice)
    fill(other, {"x.txt": "x"})
    for space in (appspace, other):
        backup_create(appspace=space, kind=Backup.Kind.MANUAL)
        assert tree.held(str(space.public_id))
    gone = str(other.public_id)
    other.delete()
    deleted_appspaces_folders_remove()
    assert not tree.folder(gone).exists() and tree.held(str(appspace.public_id))
    settings.DS_BACKUP_REPOSITORY = ""  # no repository any more: no trees kept
    deleted_appspaces_folders_remove()
    assert not tree.folder(str(appspace.public_id)).exists()


def test_a_fetch_left_by_a_dead_worker_is_swept_a_day_later(offsite):
    from backups.restore import uploads_dir
    from backups.sweep import orphans_remove

    uploads_dir().mkdir(parents=True, exist_ok=True)
    left = uploads_dir() / ".offsite-x.tar.zst.tree"
    (left / "deep").mkdir(parents=True)
    (left / "deep" / "f").write_text("x")
    assert orphans_remove() == 0 and left.exists()  # fresh: a fetch may be under way
    old = timezone.now().timestamp() - 2 * 24 * 3600
    os.utime(left, (old, old))
    assert orphans_remove() == 1 and not left.exists()
