"""The backup archive: a zstd-compressed tar of `dropserver-backup.json` (first) and `data/`.

The metadata names the format and its version, the appspace, the app and version, the data
schema, when it was made, and every file with its size and SHA-256, so an archive is checked
against itself before anything of it is believed. Archives are written under a temporary name,
fsynced, and renamed into place; they are unpacked only through `packages.extraction`
(relative clean names, regular files and folders only, size caps), then every file is hashed.
`tar --zstd -xf` opens them too.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import zstandard
from django.conf import settings

from backups.format.metadata import DATA, META_NAME, ArchiveError, FileRecord, Metadata, clean_path
from packages.archives import (
    TAR_END_BYTES,
    TAR_OVERHEAD_PER_ENTRY,
    ArchiveRefused,
    BudgetReader,
    open_tar_stream,
)
from packages.extraction import ExtractionLimits, PackageError, remove_tree, safe_extract
from sandbox import access

SUFFIX = ".tar.zst"
CHUNK = 1024 * 1024
MAX_META_BYTES = 256 * 1024 * 1024

Progress = Callable[[int], None]  # bytes done so far


def archive_name(created, kind: str, public_id) -> str:
    return f"{created:%Y%m%dT%H%M%SZ}-{kind}-{str(public_id)[:8]}{SUFFIX}"


# --- Hashing ----------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(
    root: Path, files: Iterable[FileRecord], *, progress: Progress | None = None
) -> list[FileRecord]:
    """The records with their SHA-256 (hashlib releases the GIL: two threads use two cores)."""
    files = list(files)
    done = 0
    out: list[FileRecord] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for record, digest in zip(
            files, pool.map(lambda f: _sha256_file(root / f.path), files), strict=True
        ):
            out.append(FileRecord(record.path, record.size, digest, record.mtime))
            done += record.size
            if progress:
                progress(done)
    return out


# --- Writing ----------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(name: str, *, size: int = 0, mtime: float = 0.0, folder: bool = False):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o700 if folder else 0o600
    info.size = size
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    return info


class _ProgressReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes], tick: Callable[[int], None]):
        self.raw, self.tick = raw, tick

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.tick(len(data))
        return data


def write_archive(
    *,
    source: Path,
    dest: Path,
    metadata: Metadata,
    progress: Progress | None = None,
) -> int:
    """Write `source` (a folder whose files and folders are those of `metadata`) as the archive
    `dest`: to `.tmp-<name>` beside it, fsynced, renamed, the folder fsynced. Returns the
    archive's size. On any error the temporary file is removed and `dest` never appears."""
    tmp = dest.with_name(f".tmp-{dest.name}")
    written = 0

    def tick(n: int) -> None:
        nonlocal written
        written += n
        if progress:
            progress(written)

    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    access.give_to_platform(fd)  # downloaded by the web servers (DS_RUN_AS)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressor = zstandard.ZstdCompressor(
                level=settings.DS_BACKUP_ZSTD_LEVEL,
                threads=settings.DS_BACKUP_ZSTD_THREADS,
                write_checksum=True,
            )
            with (
                compressor.stream_writer(raw, closefd=False) as stream,
                tarfile.open(
                    fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8"
                ) as tar,
            ):
                raw_meta = metadata.to_json()
                tar.addfile(_info(META_NAME, size=len(raw_meta)), io.BytesIO(raw_meta))
                tar.addfile(_info(DATA, folder=True))
                for folder in metadata.folders:
                    tar.addfile(_info(f"{DATA}/{folder}", folder=True))
                for record in metadata.files:
                    info = _info(f"{DATA}/{record.path}", size=record.size, mtime=record.mtime)
                    with open(source / record.path, "rb") as fh:
                        tar.addfile(info, _ProgressReader(fh, tick))
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


# --- Reading ----------------------------------------------------------------------------------


def check_frames(path: Path) -> None:
    """Walk the zstd frame and block headers (no decompression): a cut archive ends inside a
    frame, which the decompressor itself would not report (it just stops)."""
    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        frames = 0
        while fh.tell() < size:
            head = fh.read(4)
            magic = int.from_bytes(head, "little") if len(head) == 4 else 0
            if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame
                length = int.from_bytes(fh.read(4), "little")
                fh.seek(length, os.SEEK_CUR)
                continue
            if magic != 0xFD2FB528:
                raise ArchiveError("The archive is damaged (not a zstd frame where one should be).")
            descriptor = fh.read(1)
            if not descriptor:
                raise _cut()
            fhd = descriptor[0]
            single = fhd & 0x20
            fcs_bytes = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
            dict_bytes = (0, 1, 2, 4)[fhd & 0x03]
            fh.seek((0 if single else 1) + dict_bytes + fcs_bytes, os.SEEK_CUR)
            while True:
                block = fh.read(3)
                if len(block) != 3:
                    raise _cut()
                header = int.from_bytes(block, "little")
                kind, length = (header >> 1) & 0x03, header >> 3
                if kind == 3:
                    raise ArchiveError("The archive is damaged (a reserved zstd block type).")
                fh.seek(1 if kind == 1 else length, os.SEEK_CUR)
                if header & 1:
                    break
            if fhd & 0x04:
                fh.seek(4, os.SEEK_CUR)  # content checksum
            if fh.tell() > size:
                raise _cut()
            frames += 1
        if not frames:
            raise ArchiveError("The archive is empty.")


def _cut() -> ArchiveError:
    return ArchiveError("The archive is truncated (its compressed stream is cut short).")


_DAMAGE = (zstandard.ZstdError, tarfile.TarError, EOFError, ValueError)


def _damaged(exc: BaseException) -> ArchiveError:
    detail = str(exc).strip() or type(exc).__name__
    return ArchiveError(f"The archive is damaged or truncated ({detail[:200]}).")


def _read_first(tar: tarfile.TarFile) -> Metadata:
    first = tar.next()
    if first is None or first.name != META_NAME or not first.isreg():
        raise ArchiveError(f"This is not a Dropserver backup (no {META_NAME} first).")
    if first.size > MAX_META_BYTES:
        raise ArchiveError(f"The backup's {META_NAME} is implausibly large.")
    member = tar.extractfile(first)
    raw_meta = member.read() if member else b""
    if len(raw_meta) != first.size:
        raise ArchiveError("The archive is truncated (in its metadata).")
    return Metadata.from_json(raw_meta)


@contextmanager
def _open(path: Path, budget: int) -> Iterator[tuple[tarfile.TarFile, BudgetReader, Metadata]]:
    with open(path, "rb") as raw:
        if raw.read(4) != b"\x28\xb5\x2f\xfd":
            raise ArchiveError("This is not a Dropserver backup (not a .tar.zst archive).")
        raw.seek(0)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        stream = BudgetReader(
            reader,
            budget,
            lambda: ArchiveError("The archive holds more data than its metadata says."),
        )
        try:
            with open_tar_stream(stream) as tar:
                meta = _read_first(tar)
                # Now the whole stream has a known size: data, headers, padding, end blocks.
                stream.budget = (
                    stream.count
                    + meta.total_bytes
                    + (len(meta.files) + len(meta.folders) + 2) * TAR_OVERHEAD_PER_ENTRY
                    + TAR_END_BYTES
                )
                yield tar, stream, meta
        except ArchiveError:
            raise
        except ArchiveRefused as exc:
            raise ArchiveError(str(exc)) from None
        except _DAMAGE as exc:
            raise _damaged(exc) from None


def read_metadata(path: Path) -> Metadata:
    """The archive's metadata, reading only its first member."""
    with _open(Path(path), budget=MAX_META_BYTES + 64 * 1024) as (_, _, meta):
        return meta


def verify_archive(path: Path, *, progress: Progress | None = None) -> Metadata:
    """Read the whole archive without unpacking it: every member must be a listed file or folder
    with the listed size and SHA-256, nothing listed may be missing, and the compressed stream
    must end where it should. Raises ArchiveError naming the first problem."""
    check_frames(path)
    with _open(Path(path), budget=MAX_META_BYTES + 64 * 1024) as (tar, stream, meta):
        files = {f.path: f for f in meta.files}
        folders = set(meta.folders)
        seen: set[str] = set()
        done = 0
        for index, member in enumerate(tar):
            name = member.name
            if index == 0:
                continue  # the metadata, read already (tarfile's iteration starts over)
            if name.rstrip("/") == DATA and member.isdir():
                continue
            if not name.startswith(f"{DATA}/"):
                raise ArchiveError(f"The archive holds {name[:200]!r}, outside {DATA}/.")
            rel = clean_path(name[len(DATA) + 1 :].rstrip("/"))
            if rel in seen:
                raise ArchiveError(f"The archive holds {rel!r} twice.")
            seen.add(rel)
            if member.isdir():
                if rel not in folders:
                    raise ArchiveError(f"The archive holds a folder {rel!r} it does not list.")
                continue
            if not member.isreg():
                raise ArchiveError(f"The archive entry {rel!r} is not a regular file or folder.")
            record = files.get(rel)
            if record is None:
                raise ArchiveError(f"The archive holds a file {rel!r} it does not list.")
            if member.size != record.size:
                raise ArchiveError(f"{rel}: its size differs from the listed one.")
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            assert source is not None
            read = 0
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                read += len(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
            if read != record.size:
                raise ArchiveError(f"The archive is truncated (in {rel}).")
            if digest.hexdigest() != record.sha256:
                raise ArchiveError(f"{rel}: checksum mismatch, the archive is damaged.")
        missing = sorted(set(files) - seen)
        if missing:
            raise ArchiveError(
                f"The archive is truncated or incomplete: {len(missing)} listed file(s) are "
                f"missing, e.g. {missing[0]!r}."
            )
        while stream.read(CHUNK):
            pass  # the end-of-archive blocks: read, so the frame's checksum is checked
        return meta


def extract_archive(
    path: Path,
    dest: Path,
    *,
    max_total_bytes: int,
    progress: Progress | None = None,
) -> Metadata:
    """Unpack `path` into `dest` (which must not exist) under the package rules of
    `packages.extraction` and check every file against the metadata. On any problem `dest`
    is removed and ArchiveError says why. `dest/data` is the restored data (read-only modes,
    owned by root: the caller hands it over)."""
    check_frames(path)
    meta = read_metadata(path)
    if meta.total_bytes > max_total_bytes:
        raise ArchiveError(
            f"The backup holds {_mb(meta.total_bytes)} of data; the limit for this appspace is "
            f"{_mb(max_total_bytes)}."
        )
    limits = ExtractionLimits(
        max_archive_bytes=max(Path(path).stat().st_size, 1),
        max_files=settings.DS_BACKUP_MAX_FILES,
        max_total_bytes=max_total_bytes + MAX_META_BYTES,
        max_file_bytes=max(max_total_bytes, MAX_META_BYTES),
        max_ratio=None,
        refuse_case_collisions=False,
        formats=("tar.zst",),
    )
    digests: dict[str, str] = {}
    try:
        safe_extract(
            path,
            dest,
            limits=limits,
            progress=(lambda _n, b: progress(b)) if progress else None,
            digests=digests,
        )
    except PackageError as exc:
        raise ArchiveError(exc.message.replace("packages may only", "backups may only")) from None
    try:
        _check_extracted(dest, meta, digests)
    except BaseException:
        remove_tree(dest)
        raise
    return meta


def _check_extracted(dest: Path, meta: Metadata, digests: dict[str, str]) -> None:
    """The unpacked tree against the metadata: the same files and folders, and every file's
    bytes (hashed as they were written) matching its listed SHA-256."""
    extra = set(os.listdir(dest)) - {META_NAME, DATA}
    if extra:
        raise ArchiveError(f"The archive holds {sorted(extra)[0]!r}, outside {DATA}/.")
    if Metadata.from_json((dest / META_NAME).read_bytes()).files != meta.files:
        raise ArchiveError("The archive holds its metadata twice.")
    data = dest / DATA
    if not data.is_dir():
        raise ArchiveError(f"The archive has no {DATA}/ folder.")
    files = {f.path: f for f in meta.files}
    found_files: set[str] = set()
    for folder, dirnames, filenames in os.walk(data):
        base = os.path.relpath(folder, data)
        for name in dirnames:
            rel = name if base == "." else f"{base}/{name}"
            if rel not in meta.folders:
                raise ArchiveError(f"The archive holds a folder {rel!r} it does not list.")
        for name in filenames:
            rel = name if base == "." else f"{base}/{name}"
            if rel not in files:
                raise ArchiveError(f"The archive holds a file {rel!r} it does not list.")
            found_files.add(rel)
    missing = sorted(set(files) - found_files)
    if missing:
        raise ArchiveError(
            f"The archive is truncated or incomplete: {len(missing)} listed file(s) are "
            f"missing, e.g. {missing[0]!r}."
        )
    for record in meta.files:
        if digests.get(f"{DATA}/{record.path}") != record.sha256:
            raise ArchiveError(f"{record.path}: checksum mismatch, the archive is damaged.")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
