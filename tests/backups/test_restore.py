"""Restores without a running app: exact data back, atomic swap, refusals of crafted archives,
the restore after a failed migration, import, and a full disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from appspaces.models import Appspace
from backups.models import Backup
from backups.restore import (
    RestoreError,
    backup_import,
    backup_restore,
    restore_after_failed_migration,
)
from backups.services import backup_before_migration, backup_create
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=1)
    fill(space, {"db.sqlite3": os.urandom(50_000), "a/b/c.txt": "c" * 5000, "top.txt": "top"})
    return space


def test_it_restores_the_data_byte_for_byte_as_the_appspace_uid(appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    saved = tree_hashes(appspace.data_path)
    (appspace.data_path / "top.txt").write_text("changed")
    (appspace.data_path / "a" / "b" / "c.txt").unlink()
    fill(appspace, {"new/junk.bin": os.urandom(1000)})

    backup_restore(appspace=appspace, backup=backup)

    assert tree_hashes(appspace.data_path) == saved
    assert not (appspace.data_path / "new").exists()
    uid = appspace.sandbox_uid
    for path in [appspace.data_path, *appspace.data_path.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (uid, uid), path
        assert st.st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    appspace.refresh_from_db()
    assert appspace.status == Appspace.Status.ACTIVE
    # No supervisor ran it yet: the replaced data is kept aside until it has.
    (previous,) = appspace.path.glob(".previous-*")
    assert (previous / "data" / "top.txt").read_text() == "changed"
    assert not list(appspace.path.glob(".restore-*"))
    backup.refresh_from_db()
    assert backup.verified_at is not None


def _crafted(path: Path, members: list[tuple], listed: list[dict] | None = None) -> Path:
    """A .tar.zst with valid metadata listing `listed` (default: the regular members)."""
    files = listed
    if files is None:
        files = [
            {"path": m[0][len("data/"):], "size": len(m[1]),
             "sha256": hashlib.sha256(m[1]).hexdigest()}
            for m in members if len(m) == 2
        ]  # fmt: skip
    meta = {
        "format": "dropserver-backup", "format_version": 1, "created": "2026-11-27T00:00:00",
        "appspace": {"id": "x"}, "app": {"id": "y", "name": "Notes", "version": "1.0.0"},
        "data_schema": 1, "folders": [], "files": files,
    }  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        raw = json.dumps(meta).encode()
        info = tarfile.TarInfo("dropserver-backup.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        for member in members:
            info = tarfile.TarInfo(member[0])
            if len(member) == 2:
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
            else:
                info.type, info.linkname = member[1], member[2]
                tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


@pytest.mark.parametrize(
    "members, reason",
    [
        ([("data/../../../../tmp/evil.txt", b"x")], "unsafe path|climbs out"),
        ([("data/ok.txt", b"x"), ("/etc/evil", b"x")], "absolute path|outside data"),
        ([("data/link", tarfile.SYMTYPE, "/etc/passwd")], "symbolic link"),
        ([("data/ok.txt", b"x"), ("data/hard", tarfile.LNKTYPE, "data/ok.txt")], "hard link"),
        ([("data/dev", tarfile.CHRTYPE, "")], "device file"),
        ([("data/ok.txt", b"x"), ("data/ok.txt", b"y")], "twice"),
        ([("data/ok.txt", b"x"), ("data/extra.txt", b"y")], "does not list"),
        ([("data/ok.txt", b"x"), ("elsewhere.txt", b"y")], "outside data"),
    ],
)
def test_it_refuses_crafted_archives_and_changes_nothing(appspace, tmp_path, members, reason):
    before = tree_hashes(appspace.data_path)
    listed = None
    if "does not list" in reason or "outside data" in reason or "twice" in reason:
        listed = [{"path": "ok.txt", "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}]
    archive = _crafted(tmp_path / "crafted.tar.zst", members, listed)
    with pytest.raises(RestoreError, match=reason):
        backup_restore(appspace=appspace, archive_path=archive)
    assert tree_hashes(appspace.data_path) == before
    assert not Path("/tmp/evil.txt").exists()
    assert not list(appspace.path.glob(".restore-*"))
    assert not list(appspace.path.glob(".previous-*"))
    appspace.refresh_from_db()
    assert appspace.status == Appspace.Status.ACTIVE


def test_it_refuses_a_restore_larger_than_the_appspace_may_hold(appspace, tmp_path):
    appspace.disk_mb = 1
    appspace.save(update_fields=["disk_mb"])
    big = os.urandom(2 * 1024 * 1024)
    archive = _crafted(tmp_path / "big.tar.zst", [("data/big.bin", big)])
    with pytest.raises(RestoreError, match="limit for this appspace is 1.0 MB"):
        backup_restore(appspace=appspace, archive_path=archive)


def test_it_restores_after_a_failed_migration_exactly_and_leaves_the_status(appspace):
    backup = backup_before_migration(appspace=appspace)
    assert backup.kind == Backup.Kind.PRE_MIGRATION and backup.state == Backup.State.READY
    saved = tree_hashes(appspace.data_path)
    # The migration code takes the appspace offline, then its migration half-fails:
    Appspace.objects.filter(pk=appspace.pk).update(status=Appspace.Status.MIGRATING, data_schema=2)
    (appspace.data_path / "db.sqlite3").write_bytes(b"half migrated")
    fill(appspace, {"migration-leftover.tmp": "x"})

    restore_after_failed_migration(appspace=appspace, backup=backup)

    assert tree_hashes(appspace.data_path) == saved
    appspace.refresh_from_db()
    assert (appspace.status, appspace.data_schema) == (Appspace.Status.MIGRATING, 1)


def test_it_imports_an_archive_into_a_new_appspace(alice, appspace, make_appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    fresh = make_appspace(alice, schema=1, status=Appspace.Status.CREATING, app=appspace.app)
    imported = backup_import(appspace=fresh, archive_path=backup.path)
    assert imported.kind == Backup.Kind.IMPORTED and imported.state == Backup.State.READY
    assert imported.path.read_bytes() == backup.path.read_bytes()
    assert tree_hashes(fresh.data_path) == tree_hashes(appspace.data_path)
    fresh.refresh_from_db()
    assert fresh.status == Appspace.Status.CREATING  # the caller makes it active


def test_it_refuses_to_import_a_damaged_archive_and_keeps_nothing(alice, appspace, make_appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    data = backup.path.read_bytes()
    backup.path.write_bytes(data[: len(data) // 2])
    fresh = make_appspace(alice, schema=1, status=Appspace.Status.CREATING, app=appspace.app)
    with pytest.raises(RestoreError, match="truncated"):
        backup_import(appspace=fresh, archive_path=backup.path)
    assert not fresh.backups.exists()
    assert not fresh.data_path.exists() or not any(fresh.data_path.iterdir())


@pytest.fixture
def small_fs(tmp_path):
    """Mount a 3 MB tmpfs at a path; unmounted at the end."""
    mounted = []

    def mount(path: Path, size: str = "3m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs",
                        str(path)], check=True)  # fmt: skip
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_it_fails_a_restore_on_a_full_disk_clearly_and_changes_nothing(
    alice, make_appspace, small_fs
):
    space = make_appspace(alice, schema=1)
    fill(space, {"big.bin": os.urandom(2 * 1024 * 1024)})
    backup = backup_create(appspace=space, kind=Backup.Kind.MANUAL)
    # Now the appspace's folder is a 3 MB file system holding 1.5 MB of current data: the
    # 2 MB backup cannot be unpacked beside it.
    subprocess.run(["rm", "-rf", str(space.path)], check=True)
    small_fs(space.path)
    fill(space, {"current.bin": os.urandom(1536 * 1024)})
    before = tree_hashes(space.data_path)

    with pytest.raises(RestoreError, match="The disk is full.*Nothing was changed"):
        backup_restore(appspace=space, backup=backup)

    assert tree_hashes(space.data_path) == before
    assert sorted(p.name for p in space.path.iterdir()) == ["data"]
    space.refresh_from_db()
    assert space.status == Appspace.Status.ACTIVE
