"""Backups made and read back without a sandbox: format, checksums, special files, refusals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import tarfile

import pytest
import zstandard

from backups.format.archive import read_metadata, verify_archive
from backups.format.metadata import META_NAME, ArchiveError
from backups.models import Backup
from backups.restore import RestoreError, backup_restore
from backups.services import backup_create
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db

FILES = {
    "notes.sqlite3": os.urandom(300_000),
    "notes/a.txt": "alpha\n" * 1000,
    "notes/deep/b.json": json.dumps({"b": list(range(100))}),
    "empty.bin": b"",
}


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=2)
    fill(space, FILES)
    (space.data_path / "empty-folder").mkdir()
    return space


def test_it_writes_a_verified_archive_with_every_file_and_its_checksum(appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert backup.state == Backup.State.READY
    assert backup.verified_at is not None
    assert backup.file_count == 4
    assert backup.data_bytes == sum(
        len(v if isinstance(v, bytes) else v.encode()) for v in FILES.values()
    )
    assert backup.path.parent.name == str(appspace.public_id)
    assert backup.path.parent.parent.name == "backups"
    assert oct(backup.path.stat().st_mode & 0o777) == "0o600"
    assert oct(backup.path.parent.parent.stat().st_mode & 0o777) == "0o700"
    meta = read_metadata(backup.path)
    assert meta.appspace_id == str(appspace.public_id)
    assert (meta.app_name, meta.app_version, meta.data_schema) == ("Notes", "1.0.0", 2)
    assert {f.path: f.sha256 for f in meta.files} == tree_hashes(appspace.data_path)
    assert "empty-folder" in meta.folders
    # Nothing temporary stays behind next to it.
    assert sorted(p.name for p in backup.path.parent.iterdir()) == [backup.file_name]


def test_it_reads_back_with_plain_tar_and_zstd(appspace, tmp_path):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    with (
        open(backup.path, "rb") as fh,
        zstandard.ZstdDecompressor().stream_reader(fh) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        names = [m.name for m in tar]
    assert names[0] == META_NAME
    assert "data/notes/deep/b.json" in names


def test_it_skips_special_files_and_never_follows_symlinks(appspace, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    os.symlink(secret, appspace.data_path / "link-out")
    os.symlink("notes/a.txt", appspace.data_path / "link-in")
    os.mkfifo(appspace.data_path / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(appspace.data_path / "sock"))
    try:
        backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    finally:
        sock.close()
    meta = read_metadata(backup.path)
    assert {f.path for f in meta.files} == set(FILES)
    reasons = {s["path"]: s["reason"] for s in meta.skipped}
    assert "symbolic link" in reasons["link-out"] and "symbolic link" in reasons["link-in"]
    assert "named pipe" in reasons["pipe"] and "socket" in reasons["sock"]
    assert len(backup.warnings) == 4
    with open(backup.path, "rb") as fh:
        assert b"host secret" not in zstandard.ZstdDecompressor().stream_reader(fh).read()


def test_it_skips_names_a_restore_would_refuse(appspace):
    fill(appspace, {"back\\slash.txt": "x", "ok.txt": "y"})
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    meta = read_metadata(backup.path)
    assert "ok.txt" in {f.path for f in meta.files}
    assert [s["path"] for s in meta.skipped] == ["back\\slash.txt"]
    assert "backslash" in meta.skipped[0]["reason"]


def _rewrite(path, mutate) -> None:
    """Decompress, let `mutate` change the tar bytes, compress again (a consistent frame)."""
    with open(path, "rb") as fh:
        data = bytearray(zstandard.ZstdDecompressor().stream_reader(fh).read())
    mutate(data)
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(data)))


def test_it_refuses_a_file_whose_bytes_changed_naming_it(appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    before = tree_hashes(appspace.data_path)

    def flip(data: bytearray) -> None:
        at = data.find(b"alpha\nalpha")
        data[at] ^= 0x01

    _rewrite(backup.path, flip)
    with pytest.raises(ArchiveError, match="notes/a.txt: checksum mismatch"):
        verify_archive(backup.path)
    with pytest.raises(RestoreError, match="notes/a.txt: checksum mismatch"):
        backup_restore(appspace=appspace, backup=backup)
    assert tree_hashes(appspace.data_path) == before
    appspace.refresh_from_db()
    assert appspace.status == "active"
    assert not list(appspace.path.glob(".restore-*"))


def test_it_refuses_a_corrupted_compressed_stream(appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    data = bytearray(backup.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="damaged"):
        verify_archive(backup.path)
    with pytest.raises(RestoreError, match="damaged|checksum"):
        backup_restore(appspace=appspace, backup=backup)


@pytest.mark.parametrize("keep", [0.5, 0.97, -3])
def test_it_refuses_a_truncated_archive(appspace, keep):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    before = tree_hashes(appspace.data_path)
    data = backup.path.read_bytes()
    cut = int(len(data) * keep) if keep > 0 else len(data) + keep
    backup.path.write_bytes(data[:cut])
    with pytest.raises(ArchiveError, match="truncated"):
        verify_archive(backup.path)
    with pytest.raises(RestoreError, match="truncated"):
        backup_restore(appspace=appspace, backup=backup)
    assert tree_hashes(appspace.data_path) == before


def test_it_refuses_what_is_not_a_backup(tmp_path, appspace):
    plain = tmp_path / "x.tar.zst"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    plain.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    with pytest.raises(ArchiveError, match="not a Dropserver backup"):
        read_metadata(plain)
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(b"\x1f\x8b" + b"0" * 100)
    with pytest.raises(RestoreError, match="not a Dropserver backup"):
        backup_restore(appspace=appspace, archive_path=gz)


def test_it_refuses_data_of_a_newer_schema_or_another_app(alice, make_appspace, appspace):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    older = make_appspace(alice, schema=1)
    fill(older, {"mine.txt": "keep me"})
    with pytest.raises(RestoreError, match="schema 2 .* supports schema 1 at most"):
        backup_restore(appspace=older, archive_path=backup.path)
    other = make_appspace(alice, schema=5, app_name="Photos")
    with pytest.raises(RestoreError, match="data of the app “Notes”"):
        backup_restore(appspace=other, archive_path=backup.path)
    assert (older.data_path / "mine.txt").read_text() == "keep me"


def test_it_refuses_metadata_from_a_newer_format(appspace, tmp_path):
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)

    def bump(data: bytearray) -> None:
        at = data.find(b'"format_version": 1')
        data[at + len('"format_version": ')] = ord("9")

    _rewrite(backup.path, bump)
    with pytest.raises(ArchiveError, match="newer Dropserver .format 9"):
        read_metadata(backup.path)


def test_it_copies_again_what_changed_between_the_two_phases(appspace, tmp_path):
    """The second walk (held still) follows every change made during the first."""
    from backups.quiesce import Quiescer
    from backups.snapshot import take_snapshot

    class Changing(Quiescer):
        @contextlib.contextmanager
        def hold(self, **kwargs):
            # What an app does while phase one runs: rewrite in place, replace a folder by a
            # file and a file by a folder, delete, create.
            data = appspace.data_path
            (data / "notes" / "a.txt").write_text("rewritten in place")
            shutil.rmtree(data / "notes" / "deep")
            (data / "notes" / "deep").write_text("now a file")
            (data / "empty.bin").unlink()
            (data / "empty.bin").mkdir()
            (data / "empty.bin" / "inside.txt").write_text("in a new folder")
            (data / "empty-folder").rmdir()
            yield

    # racy_ns=0: only identity changes count, so unchanged files are not copied again.
    snap = take_snapshot(appspace.data_path, tmp_path / "staging", Changing("none"), racy_ns=0)
    assert snap.recopied == 3  # a.txt, deep, inside.txt
    assert tree_hashes(tmp_path / "staging") == tree_hashes(appspace.data_path)
    assert {f.path for f in snap.files} == set(tree_hashes(appspace.data_path))
    assert snap.folders == ["empty.bin", "notes"]
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == [
        "empty.bin", "notes", "notes.sqlite3",
    ]  # fmt: skip
