"""The restic wrapper (backups/offsite/restic.py) against real restic and real repositories in
temporary folders: the failure cases of issue 14 (unreachable, wrong password, full disk, a
corrupted pack, an interrupted upload) and that no secret reaches an error message."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from backups.offsite.restic import REDACTED, Repository, ResticError

PASSWORD = "correct-horse-battery-staple-1234"
AWS_SECRET = "AKIAsecretvalue/with+chars9876"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pwfile(tmp_path) -> Path:
    path = tmp_path / "restic-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def repo(tmp_path, pwfile) -> Repository:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    repository = Repository(str(tmp_path / "repo"), pwfile, env=env, cache_dir=tmp_path / "cache")
    assert repository.ensure() is True
    return repository


@pytest.fixture
def archive(tmp_path) -> Path:
    path = tmp_path / "src" / "backup.tar.zst"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 * 1024 * 1024))
    return path


def no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert AWS_SECRET not in text


def test_round_trip_by_tags(repo, archive, tmp_path):
    seen: list[float] = []
    tags = ["appspace=a1", "backup=b1"]
    sid = repo.backup([archive], tags, progress=lambda f, _m: seen.append(f))
    assert seen and seen[-1] == 1.0
    repo.backup([archive], ["appspace=a2", "backup=b2"])
    found = repo.snapshots(["appspace=a1"])
    assert [s.tag("backup") for s in found] == ["b1"]
    assert found[0].id.startswith(sid)
    out = tmp_path / "out"
    with out.open("wb") as f:
        repo.dump(sid, str(archive), f)
    assert sha(out) == sha(archive)
    assert repo.check().ok
    assert repo.ensure() is False  # opened, not created again


def test_unreachable_missing_mount(tmp_path, pwfile):
    where = tmp_path / "not-mounted" / "disk" / "repo"
    repository = Repository(str(where), pwfile)
    with pytest.raises(ResticError) as err:
        repository.ensure()
    assert err.value.kind == ResticError.UNREACHABLE
    assert not (tmp_path / "not-mounted").exists()  # nothing created on the root filesystem


def test_unreachable_sftp_closed_port(tmp_path, pwfile, archive):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repository = Repository(f"sftp://nobody@127.0.0.1:{port}//srv/repo", pwfile)
    with pytest.raises(ResticError) as err:
        repository.backup([archive], ["appspace=a"])
    assert err.value.kind == ResticError.UNREACHABLE
    no_secret(err.value.message)
    assert archive.exists()


def test_wrong_password(repo, tmp_path, archive):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-at-all\n")
    other = Repository(repo.location, wrong, env={"PATH": os.environ["PATH"]})
    with pytest.raises(ResticError) as err:
        other.snapshots()
    assert err.value.kind == ResticError.WRONG_PASSWORD
    assert "not-the-password-at-all" not in err.value.message
    with pytest.raises(ResticError):
        other.backup([archive], ["appspace=a"])
    assert archive.exists()


def test_secrets_scrubbed(repo):
    text = f"x {PASSWORD} y {AWS_SECRET} rest:https://u:hunter22@h/ z"
    clean = repo.scrub(text)
    no_secret(clean)
    assert "hunter22" not in clean and clean.count(REDACTED) == 3
    # restic's own error for a repository URL that carries a password
    leaky = Repository("rest:http://user:urlpass99@127.0.0.1:1/", repo.password_file)
    with pytest.raises(ResticError) as err:
        leaky.snapshots()
    assert "urlpass99" not in err.value.message


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_repository_disk(small_disk, pwfile, archive):
    repository = Repository(str(small_disk / "repo"), pwfile)
    repository.ensure()
    before = sha(archive)
    with pytest.raises(ResticError) as err:
        repository.backup([archive], ["appspace=a"])
    assert err.value.kind == ResticError.NO_SPACE
    assert sha(archive) == before  # the local archive is untouched
    assert repository.snapshots() == []


def test_corrupted_pack(repo, archive, tmp_path):
    sid = repo.backup([archive], ["appspace=a"])
    packs = sorted((Path(repo.location) / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    biggest = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    for i in range(1000, 1064):
        data[i] ^= 0xFF
    biggest.chmod(0o600)
    biggest.write_bytes(bytes(data))
    result = repo.check(read_data_subset="100%")
    assert not result.ok and result.kind == ResticError.CORRUPTED
    out = tmp_path / "staging"
    with out.open("wb") as f, pytest.raises(ResticError) as err:
        repo.dump(sid, str(archive), f)
    assert err.value.kind in (ResticError.CORRUPTED, ResticError.FAILED)
    no_secret(err.value.message)


def test_interrupted_upload_completes_next_run(repo, tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(48):
            f.write(os.urandom(1024 * 1024))
    repo._env["RESTIC_PROGRESS_FPS"] = "50"
    killed = []

    def kill_when_uploading(_fraction, msg):
        if not killed and msg.get("bytes_done", 0) > 0:
            os.kill(repo.last_pid, signal.SIGKILL)
            killed.append(msg["bytes_done"])

    with pytest.raises(ResticError):
        repo.backup([big], ["appspace=a"], progress=kill_when_uploading)
    assert killed and killed[0] < big.stat().st_size
    assert repo.snapshots() == []
    sid = repo.backup([big], ["appspace=a"])  # the stale lock of the dead run does not block
    assert [s.id[:8] for s in repo.snapshots(["appspace=a"])] == [sid[:8]]
    assert repo.check().ok


def test_sftp_ssh_is_strict_and_refuses_paths_it_cannot_pass(tmp_path, pwfile, archive):
    from backups.offsite.sftp import sftp_command

    cmd = sftp_command("sftp://backup@127.0.0.1:2222//srv/repo", "/k/id", "/k/known_hosts")
    assert "StrictHostKeyChecking=yes" in cmd and "BatchMode=yes" in cmd
    assert "UserKnownHostsFile=/k/known_hosts -o GlobalKnownHostsFile=/dev/null" in cmd
    assert cmd.endswith("-i /k/id -o IdentitiesOnly=yes -p 2222 -l backup 127.0.0.1 -s sftp")
    spaced = Repository("sftp:backup@127.0.0.1:/srv/repo", pwfile, ssh_key=tmp_path / "a key")
    with pytest.raises(ResticError) as err:
        spaced.backup([archive], ["appspace=a"])
    assert err.value.kind == ResticError.NOT_CONFIGURED and "spaces" in err.value.message
