"""Safe extraction: every class of bad archive is refused with a sentence and leaves nothing.

Archives are crafted byte by byte where the standard library would refuse to write them
(symlinks in zips, encrypted flags, overlapping entries, non-UTF-8 names, bombs).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from packages import extraction
from packages.extraction import (
    CHUNK_BYTES,
    ExtractionLimits,
    PackageError,
    read_manifest_from_archive,
    remove_tree,
    safe_extract,
)

MB = 1024 * 1024
LIMITS = ExtractionLimits(
    max_archive_bytes=20 * MB,
    max_files=50,
    max_total_bytes=10 * MB,
    max_file_bytes=4 * MB,
    max_ratio=None,
)
MANIFEST = b'{"name": "Test", "version": "1.0.0"}'


# --- Archive builders -----------------------------------------------------------------------


def tar_gz(path: Path, entries: list[tuple], *, pax: dict | None = None) -> Path:
    """entries: (name, data) for files, (name, None) for folders, (name, type, linkname)."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if len(entry) == 3:
                info.type, info.linkname = entry[1], entry[2]
                tar.addfile(info)
            elif entry[1] is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(entry[1])
                if pax:
                    info.pax_headers = pax
                tar.addfile(info, io.BytesIO(entry[1]))
    return path


def raw_zip(path: Path, entries: list[dict]) -> Path:
    """A zip written by hand. Each entry: name (bytes or str), data, and optionally flags,
    method, external_attr, declared_size, offset_of (reuse another entry's local header)."""
    out, central, offsets = bytearray(), bytearray(), []
    for entry in entries:
        name = entry["name"].encode() if isinstance(entry["name"], str) else entry["name"]
        data = entry.get("data", b"")
        method = entry.get("method", 8)
        payload = entry.get("payload")
        if payload is None:
            payload = zlib.compress(data, 9)[2:-4] if method == 8 else data
        crc = entry.get("crc", zlib.crc32(data))
        size = entry.get("declared_size", len(data))
        flags = entry.get("flags", 0)
        if "offset_of" in entry:
            offset = offsets[entry["offset_of"]]
        else:
            offset = len(out)
            out += struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, len(payload), size,
                len(name), 0,
            )  # fmt: skip
            out += name + payload
        offsets.append(offset)
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, flags, method, 0, 0x21, crc,
            len(payload), size, len(name), 0, 0, 0, 0,
            entry.get("external_attr", 0o100644 << 16), offset,
        )  # fmt: skip
        central += name
    start = len(out)
    out += central
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0
    )
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def site(tmp_path):
    """A version folder that exists (like apps/<uuid>/<version>/) and where files/ goes."""
    parent = tmp_path / "version"
    parent.mkdir()
    return parent


def assert_nothing_left(site: Path) -> None:
    assert sorted(os.listdir(site)) == []


def refused(archive: Path, site: Path, limits: ExtractionLimits = LIMITS) -> str:
    before = sorted(os.listdir(site))
    with pytest.raises(PackageError) as info:
        safe_extract(archive, site / "files", limits=limits)
    assert sorted(os.listdir(site)) == before
    assert not (site / "files").exists()
    return str(info.value)


# --- Good archives --------------------------------------------------------------------------


def test_it_extracts_a_tar_gz_read_only(tmp_path, site):
    archive = tar_gz(
        tmp_path / "a.tar.gz",
        [("./", None), ("./dropapp.json", MANIFEST), ("./public/", None),
         ("./public/app.css", b"body{}"), ("app.ts", b"export {}")],
    )  # fmt: skip
    seen = []
    report = safe_extract(
        archive, site / "files", limits=LIMITS, progress=lambda n, b: seen.append((n, b))
    )
    root = site / "files"
    assert (root / "public" / "app.css").read_bytes() == b"body{}"
    assert (root / "dropapp.json").read_bytes() == MANIFEST
    assert (report.files, report.folders, report.format) == (3, 1, "tar.gz")
    assert report.total_bytes == len(MANIFEST) + 6 + 9
    assert seen and seen[-1] == (4, report.total_bytes)
    assert stat.S_IMODE((root / "app.ts").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / "public").stat().st_mode) == 0o555
    assert stat.S_IMODE(root.stat().st_mode) == 0o555
    assert os.listdir(site) == ["files"]  # no temporary folder left over


def test_it_extracts_a_zip_and_makes_nothing_executable(tmp_path, site):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dropapp.json", MANIFEST)
        info = zipfile.ZipInfo("bin/run.sh")
        info.external_attr = (stat.S_IFREG | 0o4755) << 16  # setuid + executable
        zf.writestr(info, b"#!/bin/sh\n")
    report = safe_extract(archive, site / "files", limits=LIMITS)
    mode = (site / "files" / "bin" / "run.sh").stat().st_mode
    assert stat.S_IMODE(mode) == 0o444
    assert report.format == "zip" and report.files == 2


def test_it_ignores_setuid_bits_in_tar_headers(tmp_path, site):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("tool")
        info.mode, info.size = 0o6777, 2
        tar.addfile(info, io.BytesIO(b"hi"))
    safe_extract(path, site / "files", limits=LIMITS)
    assert stat.S_IMODE((site / "files" / "tool").stat().st_mode) == 0o444


def test_it_accepts_utf8_zip_names_without_the_utf8_flag(tmp_path, site):
    archive = raw_zip(tmp_path / "a.zip", [{"name": "café.txt".encode(), "data": b"x"}])
    safe_extract(archive, site / "files", limits=LIMITS)
    assert (site / "files" / "café.txt").read_bytes() == b"x"


def test_it_refuses_an_existing_destination(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("a", b"x")])
    (site / "files").mkdir()
    with pytest.raises(FileExistsError):
        safe_extract(archive, site / "files", limits=LIMITS)
    assert os.listdir(site) == ["files"]


def test_it_removes_an_extracted_tree(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("a/b/c.txt", b"x"), ("d.txt", b"y")])
    safe_extract(archive, site / "files", limits=LIMITS)
    remove_tree(site / "files")
    assert_nothing_left(site)


@pytest.mark.parametrize(
    ("func", "contents"),
    [(os.open, True), (os.scandir, True), (os.rmdir, False)],
    ids=["open", "scandir", "rmdir"],
)
def test_a_folder_rmtree_could_not_enter_or_remove_is_removed_by_the_retry(
    tmp_path, func, contents
):
    """rmtree walks by descriptors: its error handler gets `os.open` or `os.scandir` for a folder
    it could not enter, which cannot be called again with the path alone (a TypeError before),
    and `os.rmdir` for an emptied folder it could not remove."""
    folder = tmp_path / "tree" / "sub"
    folder.mkdir(parents=True)
    if contents:
        (folder / "deeper").mkdir()
        (folder / "deeper" / "f.txt").write_text("x")
    os.chmod(folder, 0o000)
    extraction._retry_writable(func, str(folder), None)
    assert not folder.exists() and (tmp_path / "tree").exists()


def test_it_allows_case_variants_when_told_to(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("Notes.txt", b"1"), ("notes.txt", b"2")])
    limits = ExtractionLimits(**{**LIMITS.__dict__, "refuse_case_collisions": False})
    safe_extract(archive, site / "files", limits=limits)
    assert sorted(os.listdir(site / "files")) == ["Notes.txt", "notes.txt"]


# --- Bad names and entry types --------------------------------------------------------------


BAD_NAMES = [
    ("/etc/passwd", "absolute path"),
    ("../evil.txt", "climbs out of the package"),
    ("a/../../evil.txt", "climbs out of the package"),
    ("a\\..\\evil.txt", "backslash"),
    ("C:/evil.txt", "drive letter"),
    ("a//b.txt", "empty path segment"),
    ("bad\nname.txt", "control character"),
    ("gpj.\u202eexe", "control character"),
]


@pytest.mark.parametrize("name,reason", BAD_NAMES)
def test_it_refuses_unsafe_names_in_tars(tmp_path, site, name, reason):
    archive = tar_gz(tmp_path / "a.tar.gz", [("ok.txt", b"fine"), (name, b"x")])
    assert reason in refused(archive, site)


@pytest.mark.parametrize("name,reason", BAD_NAMES)
def test_it_refuses_unsafe_names_in_zips(tmp_path, site, name, reason):
    archive = raw_zip(tmp_path / "a.zip", [{"name": "ok.txt", "data": b"f"}, {"name": name}])
    assert reason in refused(archive, site)


@pytest.mark.parametrize(
    "kind,linkname,what",
    [
        (tarfile.SYMTYPE, "/etc/passwd", "symbolic link"),
        (tarfile.SYMTYPE, "../../..", "symbolic link"),
        (tarfile.LNKTYPE, "ok.txt", "hard link"),
        (tarfile.CHRTYPE, "", "device file"),
        (tarfile.BLKTYPE, "", "device file"),
        (tarfile.FIFOTYPE, "", "FIFO"),
    ],
)
def test_it_refuses_links_devices_and_fifos_in_tars(tmp_path, site, kind, linkname, what):
    archive = tar_gz(tmp_path / "a.tar.gz", [("ok.txt", b"x"), ("thing", kind, linkname)])
    message = refused(archive, site)
    assert what in message and "'thing'" in message


def test_it_refuses_symlinks_in_zips(tmp_path, site):
    archive = raw_zip(
        tmp_path / "a.zip",
        [{"name": "link", "data": b"/etc/passwd", "external_attr": (stat.S_IFLNK | 0o777) << 16}],
    )
    assert "symbolic link" in refused(archive, site)


def test_it_refuses_non_utf8_names(tmp_path, site):
    tar_path = tmp_path / "a.tar.gz"
    with tarfile.open(tar_path, "w:gz", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("caf\xe9.txt")  # written as the single byte 0xE9
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert "not valid UTF-8" in refused(tar_path, site)
    zip_path = raw_zip(tmp_path / "a.zip", [{"name": b"caf\xe9.txt", "data": b"x"}])
    assert "not valid UTF-8" in refused(zip_path, site)
    flagged = raw_zip(tmp_path / "b.zip", [{"name": b"caf\xe9.txt", "flags": 0x800}])
    assert "not valid UTF-8" in refused(flagged, site)


@pytest.mark.parametrize(
    "entries,message",
    [
        ([("a.txt", b"1"), ("a.txt", b"2")], "contains 'a.txt' twice"),
        ([("./a.txt", b"1"), ("a.txt", b"2")], "contains 'a.txt' twice"),
        ([("a", b"1"), ("a/b.txt", b"2")], "'a' both as a file and as a folder"),
        ([("a/b.txt", b"1"), ("a", b"2")], "'a' both as a file and as a folder"),
        ([("a/", None), ("a", b"2")], "'a' both as a file and as a folder"),
        ([("README", b"1"), ("readme", b"2")], "differ only in upper/lower case"),
        ([("caf\u00e9", b"1"), ("cafe\u0301", b"2")], "Unicode form"),
        ([("Docs/a", b"1"), ("docs/b", b"2")], "differ only in upper/lower case"),
    ],
)
def test_it_refuses_duplicates_and_clashes(tmp_path, site, entries, message):
    archive = tar_gz(tmp_path / "a.tar.gz", entries)
    assert message in refused(archive, site)


def test_it_refuses_duplicate_names_in_zips(tmp_path, site):
    archive = raw_zip(tmp_path / "a.zip", [{"name": "a", "data": b"1"}, {"name": "a"}])
    assert "twice" in refused(archive, site)


# --- Zip specifics --------------------------------------------------------------------------


def test_it_refuses_encrypted_zips(tmp_path, site):
    archive = raw_zip(tmp_path / "a.zip", [{"name": "secret.txt", "data": b"x", "flags": 0x1}])
    assert "encrypted" in refused(archive, site)


def test_it_refuses_unusual_compression(tmp_path, site):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.txt", b"x" * 100)
    assert "unsupported compression" in refused(archive, site)


def test_it_refuses_overlapping_entries(tmp_path, site):
    # The trick of non-recursive zip bombs: many entries, one compressed blob.
    entries = [{"name": "a.bin", "data": b"\0" * 1000}]
    entries += [{"name": f"{i}.bin", "data": b"\0" * 1000, "offset_of": 0} for i in range(10)]
    archive = raw_zip(tmp_path / "a.zip", entries)
    assert "overlapping entries" in refused(archive, site)


def test_it_refuses_zip_entries_whose_sizes_lie(tmp_path, site):
    archive = raw_zip(
        tmp_path / "a.zip", [{"name": "a.bin", "data": b"\0" * 100_000, "declared_size": 10}]
    )
    assert "damaged" in refused(archive, site)


def test_it_refuses_zips_with_too_many_entries_before_parsing_them(tmp_path, site):
    archive = raw_zip(tmp_path / "a.zip", [{"name": f"{i}.txt"} for i in range(60)])
    assert "more than 50 files" in refused(archive, site)


# --- Counts, sizes, damage ------------------------------------------------------------------


def test_it_refuses_too_many_files(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [(f"f{i}.txt", b"x") for i in range(51)])
    assert "more than 50 files and folders" in refused(archive, site)


def test_it_counts_implied_folders_too(tmp_path, site):
    deep = "/".join(f"d{i}" for i in range(30)) + "/x"
    archive = tar_gz(tmp_path / "a.tar.gz", [(deep, b""), ("e/" + deep, b"")])
    assert "more than 50 files and folders" in refused(archive, site)


def test_it_refuses_an_oversized_member(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("big.bin", os.urandom(5 * MB))])
    assert "limit for one file is 4 MB" in refused(archive, site)


def test_it_refuses_archives_that_unpack_past_the_cap(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [(f"{i}.bin", os.urandom(3 * MB)) for i in range(4)])
    assert "unpacks to more than 10 MB" in refused(archive, site)


def test_it_refuses_a_package_file_over_the_size_limit(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("a.bin", os.urandom(2 * MB))])
    limits = ExtractionLimits(**{**LIMITS.__dict__, "max_archive_bytes": MB})
    assert "the limit is 1 MB" in refused(archive, site, limits)


def test_it_refuses_oversized_tar_extended_headers(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("a.txt", b"x")], pax={"comment": "x" * 200_000})
    assert "oversized extended header" in refused(archive, site)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"just some text", "not a .tar.gz or .zip"),
        (gzip.compress(b"not a tar file at all" * 100, mtime=0), "damaged"),
        (b"PK\x03\x04" + b"\0" * 100, "damaged"),
    ],
    ids=["plain-text", "gzip-not-tar", "zip-header-only"],
)
def test_it_refuses_files_that_are_not_archives(tmp_path, site, content, message):
    path = tmp_path / "x"
    path.write_bytes(content)
    assert message in refused(path, site)


def test_it_refuses_a_truncated_archive_and_removes_what_it_wrote(tmp_path, site):
    good = tar_gz(tmp_path / "a.tar.gz", [("a.bin", os.urandom(MB)), ("b.bin", os.urandom(MB))])
    data = good.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 3 // 4])
    assert "damaged or truncated" in refused(cut, site)


# --- Bombs ----------------------------------------------------------------------------------

_ZEROS_MB = b"\0" * MB


def _gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def tar_bomb(path: Path, *, members: int, member_bytes: int) -> Path:
    """A real .tar.gz of `members` files of zeros, built from repeated gzip members (a
    multi-member gzip is one valid stream) so that writing 1 GB takes milliseconds."""
    assert member_bytes % MB == 0
    zeros = _gzip_member(_ZEROS_MB)
    with open(path, "wb") as out:
        for i in range(members):
            info = tarfile.TarInfo(f"zeros-{i}.bin")
            info.size = member_bytes
            out.write(_gzip_member(info.tobuf(format=tarfile.GNU_FORMAT)))
            for _ in range(member_bytes // MB):
                out.write(zeros)
        out.write(_gzip_member(b"\0" * 1024))
    return path


def zip_bomb(path: Path, *, members: int, member_bytes: int) -> Path:
    """A real .zip: each member is `member_bytes` of zeros as one deflate stream made of a
    repeated, dictionary-reset block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(_ZEROS_MB) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(member_bytes // MB):
        crc = zlib.crc32(_ZEROS_MB, crc)
    payload = block * (member_bytes // MB) + final
    entries = [
        {"name": f"zeros-{i}.bin", "payload": payload, "crc": crc, "declared_size": member_bytes}
        for i in range(members)
    ]
    return raw_zip(path, entries)


def _watch(archive: Path, site: Path, limits: ExtractionLimits) -> tuple[str, int, float]:
    most = 0

    def progress(_entries: int, written: int) -> None:
        nonlocal most
        most = max(most, written)

    started = time.monotonic()
    with pytest.raises(PackageError) as info:
        safe_extract(archive, site / "files", limits=limits, progress=progress)
    elapsed = time.monotonic() - started
    assert_nothing_left(site)
    return str(info.value), most, elapsed


BOMB_LIMITS = ExtractionLimits(
    max_archive_bytes=50 * MB,
    max_files=5000,
    max_total_bytes=10 * MB,
    max_file_bytes=1024 * MB,  # one member may be huge: only the running total stops it
    max_ratio=None,
)


@pytest.mark.parametrize("build", [tar_bomb, zip_bomb])
def test_it_stops_a_1gb_single_member_bomb_before_writing(tmp_path, site, build):
    archive = build(tmp_path / "bomb", members=1, member_bytes=1024 * MB)
    assert archive.stat().st_size < 2 * MB  # 1 GB of zeros
    message, written, elapsed = _watch(archive, site, BOMB_LIMITS)
    assert "unpacks to more than 10 MB" in message
    assert written == 0  # the header said 1 GB: refused before a byte was written
    assert elapsed < 2


@pytest.mark.parametrize("build", [tar_bomb, zip_bomb])
def test_it_stops_a_1gb_many_member_bomb_at_the_cap(tmp_path, site, build):
    archive = build(tmp_path / "bomb", members=1024, member_bytes=MB)
    assert archive.stat().st_size < 3 * MB
    message, written, elapsed = _watch(archive, site, BOMB_LIMITS)
    assert "unpacks to more than 10 MB" in message
    assert 9 * MB <= written <= BOMB_LIMITS.max_total_bytes + CHUNK_BYTES
    assert elapsed < 2


@pytest.mark.parametrize("build", [tar_bomb, zip_bomb])
def test_it_stops_bombs_by_their_compression_ratio(tmp_path, site, build):
    archive = build(tmp_path / "bomb", members=1024, member_bytes=MB)
    limits = ExtractionLimits(**{**BOMB_LIMITS.__dict__, "max_ratio": 200})
    message, written, elapsed = _watch(archive, site, limits)
    assert "compression bomb" in message
    assert written <= 2 * MB
    assert elapsed < 2


def test_it_stops_reading_a_bomb_even_when_only_looking_for_the_manifest(tmp_path, site):
    # Skipping members still inflates them: the stream's own budget stops that.
    archive = tar_bomb(tmp_path / "bomb", members=1024, member_bytes=MB)
    started = time.monotonic()
    with pytest.raises(PackageError, match="unpacks to more than 10 MB"):
        read_manifest_from_archive(archive, limits=BOMB_LIMITS)
    assert time.monotonic() - started < 2


# --- Reading only the manifest --------------------------------------------------------------


def test_it_reads_the_manifest_without_extracting(tmp_path, site):
    archive = tar_gz(tmp_path / "a.tar.gz", [("./dropapp.json", MANIFEST), ("a.ts", b"x")])
    assert read_manifest_from_archive(archive, limits=LIMITS) == MANIFEST
    zipped = raw_zip(tmp_path / "a.zip", [{"name": "dropapp.json", "data": MANIFEST}])
    assert read_manifest_from_archive(zipped, limits=LIMITS) == MANIFEST
    assert_nothing_left(site)


def test_it_explains_a_manifest_in_a_subfolder(tmp_path):
    archive = tar_gz(tmp_path / "a.tar.gz", [("myapp/dropapp.json", MANIFEST)])
    with pytest.raises(PackageError, match="found myapp/dropapp.json"):
        read_manifest_from_archive(archive, limits=LIMITS)


@pytest.mark.parametrize(
    "entries,message",
    [
        ([("dropapp.json", tarfile.SYMTYPE, "/etc/passwd")], "symbolic link"),
        ([("dropapp.json", b"{" + b" " * 70_000 + b"}")], "larger than"),
        ([("app.ts", b"x")], "no dropapp.json"),
        ([("../dropapp.json", b"{}")], "climbs out"),
    ],
)
def test_it_refuses_bad_manifests_in_archives(tmp_path, entries, message):
    archive = tar_gz(tmp_path / "a.tar.gz", entries)
    with pytest.raises(PackageError, match=message):
        read_manifest_from_archive(archive, limits=LIMITS)
