"""Off-site copies over SFTP to a real OpenSSH server on a loopback port (tests/backups/sshd.py):
an appspace backup copied there and restored from it through the verified path, and host keys
checked strictly (an unknown or a changed key fails the copy, deletes nothing, and says why).
The whole-instance drill over SFTP is in test_instance.py (`where="sftp"`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from appspaces.models import Job
from backups.models import Backup
from backups.offsite.copies import offsite_job_run, repository
from backups.offsite.restic import ResticError
from backups.restore import restore_job_create, restore_job_run
from backups.services import backup_create
from tests.backups.conftest import fill, tree_hashes
from tests.backups.sshd import listeners

pytestmark = pytest.mark.django_db
PASSWORD = "sftp-repository-password-4321"


@pytest.fixture
def over_sftp(settings, tmp_path, sshd):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    settings.DS_BACKUP_REPOSITORY = sshd.location(sshd.home / "repo")
    settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE = str(pw)
    settings.DS_BACKUP_SSH_KEY_FILE = str(sshd.client_key)
    settings.DS_BACKUP_SSH_KNOWN_HOSTS = str(sshd.known_hosts)
    return sshd


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=1)
    fill(space, {"db.sqlite3": os.urandom(40_000), "a/b.txt": "bbb", "top.txt": "top"})
    return space


def copy_job(backup: Backup) -> Job:
    return Job.objects.get(kind=Job.Kind.OFFSITE, params__backup=str(backup.public_id))


def test_an_appspace_backup_is_copied_over_sftp_and_restored_from_there(over_sftp, appspace):
    assert listeners(over_sftp.proc.pid) == [f"127.0.0.1:{over_sftp.port}"]  # loopback only
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert offsite_job_run(job_id=copy_job(backup).pk) == Job.State.SUCCEEDED
    backup.refresh_from_db()
    assert backup.offsite_state == Backup.Offsite.COPIED
    (snap,) = repository().snapshots([f"appspace={appspace.public_id}"])
    assert snap.tag("backup") == str(backup.public_id)
    assert any((over_sftp.home / "repo" / "snapshots").iterdir())  # on the server's side
    assert "Accepted publickey for" in over_sftp.log.read_text()

    saved = tree_hashes(appspace.data_path)
    backup.path.unlink()  # the local archive is lost with the disk
    (appspace.data_path / "top.txt").write_text("changed")
    job = restore_job_create(appspace=appspace, offsite=backup.offsite_snapshot, enqueue=False)
    assert restore_job_run(job_id=job.pk) == Job.State.SUCCEEDED
    assert tree_hashes(appspace.data_path) == saved


@pytest.mark.parametrize("known", ["changed-key", "not-pinned"])
def test_a_host_key_that_is_not_the_pinned_one_is_refused(
    over_sftp, appspace, settings, tmp_path, known
):
    repository().ensure()  # the repository exists; only the key the client expects differs
    pinned = tmp_path / "known_hosts"
    if known == "changed-key":  # a man in the middle: another server's key for this address
        impostor = tmp_path / "impostor"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
                       check=True)  # fmt: skip
        kind, key = (impostor.with_suffix(".pub").read_text().split())[:2]
        pinned.write_text(f"[127.0.0.1]:{over_sftp.port} {kind} {key}\n")
    else:
        pinned.write_text("")
    settings.DS_BACKUP_SSH_KNOWN_HOSTS = str(pinned)
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    before = backup.path.read_bytes()
    assert offsite_job_run(job_id=copy_job(backup).pk) == Job.State.FAILED
    job, _ = copy_job(backup), backup.refresh_from_db()
    assert backup.offsite_state == Backup.Offsite.FAILED
    assert "Host key verification failed" in job.message
    assert PASSWORD not in job.message and PASSWORD not in backup.offsite_message
    assert backup.path.read_bytes() == before  # nothing local deleted or changed
    if known == "not-pinned":
        assert pinned.read_text() == ""  # never "accept-new": the unknown key was not added
    with pytest.raises(ResticError) as err:
        repository().snapshots()
    assert err.value.kind == ResticError.HOST_KEY
    settings.DS_BACKUP_SSH_KNOWN_HOSTS = str(over_sftp.known_hosts)
    assert repository().snapshots() == []  # nothing reached the server
