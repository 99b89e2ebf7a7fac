"""Safe unpacking of untrusted `.tar.gz` and `.zip` archives (app packages, backup restores).

Backups (backups/format/archive.py) also use `.tar.zst`, accepted only where the limits list it in
`formats`, so an app package is never anything but a `.tar.gz` or `.zip`.

Everything an archive says is checked before it is believed: names (relative, clean, UTF-8,
no duplicates or file/folder clashes), entry types (regular files and folders only), counts,
sizes and compression ratios. Sizes are enforced twice: from the headers before a member is
written, and again on the bytes actually streamed, so extraction stops as soon as a running
total would pass a cap — never after. The tar stream itself is read through a budget
(packages/archives.py, shared with backups), so even headers that tarfile reads into memory
(PAX, GNU long names) cannot be inflated without bound.

Files are written into a temporary folder beside the destination, made read-only (0444 files,
0555 folders: nothing executable, no setuid) and renamed into place only when everything
passed; on any failure the temporary folder is removed and the destination never appears.

Longer than most modules on purpose: every check of an untrusted archive's entries (tar and
zip) and the writer that trusts them are one security boundary, reviewed as one unit.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import zstandard

from packages.archives import (
    CHUNK_BYTES,
    TAR_END_BYTES,
    TAR_OVERHEAD_PER_ENTRY,
    ArchiveRefused,
    BudgetReader,
    CountingReader,
    ReadAhead,
    open_tar_stream,
)
from packages.paths import UnsafePath, clean_relative_path, collision_key

MANIFEST_NAME = "dropapp.json"
_TAR_KIND_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a device file",
    tarfile.BLKTYPE: "a device file",
    tarfile.FIFOTYPE: "a FIFO (named pipe)",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_ZIP_KIND_NAMES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a device file",
    stat.S_IFBLK: "a device file",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}

ArchiveFormat = Literal["tar.gz", "zip", "tar.zst"]
Progress = Callable[[int, int], None]  # (files and folders done, bytes written)


class PackageError(ArchiveRefused):
    """An archive that will not be unpacked; str() is a sentence for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ExtractionLimits:
    max_archive_bytes: int
    max_files: int  # files and folders
    max_total_bytes: int  # unpacked
    max_file_bytes: int  # one member
    max_ratio: float | None = None  # unpacked / compressed; None: no ratio check
    ratio_grace_bytes: int = 1024 * 1024  # small archives may compress very well
    refuse_case_collisions: bool = True  # 'A' and 'a' would clash off Linux (and in zips)
    formats: tuple[str, ...] = ("tar.gz", "zip")  # what detect_format may find

    @classmethod
    def for_app_packages(cls) -> ExtractionLimits:
        from django.conf import settings

        mb = 1024 * 1024
        return cls(
            max_archive_bytes=settings.DS_APP_MAX_PACKAGE_MB * mb,
            max_files=settings.DS_APP_MAX_FILES,
            max_total_bytes=settings.DS_APP_MAX_UNPACKED_MB * mb,
            max_file_bytes=settings.DS_APP_MAX_FILE_MB * mb,
            max_ratio=settings.DS_APP_MAX_COMPRESSION_RATIO or None,
        )


@dataclass(frozen=True)
class ExtractionReport:
    format: ArchiveFormat
    files: int
    folders: int
    total_bytes: int


def _size(n: float) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n:g} bytes"


# --- Reading archives -----------------------------------------------------------------------


@dataclass
class _Entry:
    name: str  # as stored, not yet cleaned
    kind: Literal["file", "dir"]
    size: int  # declared
    open: Callable[[], IO[bytes]]


def detect_format(archive_path: Path) -> ArchiveFormat:
    with open(archive_path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "tar.gz"
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if magic == b"\x28\xb5\x2f\xfd":
        return "tar.zst"
    raise PackageError("The file is not a .tar.gz or .zip archive.")


def _tar_entries(path: Path, limits: ExtractionLimits, zstd: bool = False) -> Iterator[_Entry]:
    with open(path, "rb") as raw:
        compressed = CountingReader(raw)
        if zstd:
            inflated: IO[bytes] = ReadAhead(
                zstandard.ZstdDecompressor().stream_reader(
                    compressed, read_across_frames=True, closefd=False
                )
            )
        else:
            inflated = gzip.GzipFile(fileobj=compressed, mode="rb")  # type: ignore[arg-type]
        stream = BudgetReader(
            inflated,
            limits.max_total_bytes + limits.max_files * TAR_OVERHEAD_PER_ENTRY + TAR_END_BYTES,
            lambda: _too_big(limits),
            compressed=compressed,
            max_ratio=limits.max_ratio,
            ratio_grace_bytes=limits.ratio_grace_bytes,
        )
        try:
            with open_tar_stream(stream) as tar:
                yield from _tar_members(tar)
        finally:
            if zstd:
                inflated.close()  # stops the inflating thread before the file closes


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Entry]:
    for info in tar:
        if info.isreg():
            kind: Literal["file", "dir"] = "file"
        elif info.isdir():
            kind = "dir"
        else:
            what = _TAR_KIND_NAMES.get(info.type, "of an unsupported type")
            raise PackageError(
                f"The archive entry {_shown(info.name)} is {what}; "
                "packages may only contain files and folders."
            )
        yield _Entry(info.name, kind, info.size, lambda info=info: tar.extractfile(info))


def _zip_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    # No UTF-8 flag: zipfile decoded cp437. Many tools write UTF-8 without the flag.
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise PackageError("The archive has a file name that is not valid UTF-8.") from None


def _zip_entries(path: Path, limits: ExtractionLimits) -> Iterator[_Entry]:
    with open(path, "rb") as f:
        end_record = getattr(zipfile, "_EndRecData", None)
        if end_record is not None:  # refuse huge central directories before parsing them
            record = end_record(f)
            if record and record[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)] > limits.max_files:
                raise PackageError(
                    f"The archive has more than {limits.max_files} files and folders."
                )
        try:
            archive = zipfile.ZipFile(f)
        except UnicodeDecodeError:
            raise PackageError("The archive has a file name that is not valid UTF-8.") from None
        with archive:
            infos = archive.infolist()
            _check_zip_layout(infos, archive.start_dir)
            declared = compressed = 0
            for info in infos:
                name = _zip_name(info)
                mode = info.external_attr >> 16
                kind_bits = stat.S_IFMT(mode) if info.create_system == 3 else 0
                if kind_bits in _ZIP_KIND_NAMES:
                    raise PackageError(
                        f"The archive entry {_shown(name)} is {_ZIP_KIND_NAMES[kind_bits]}; "
                        "packages may only contain files and folders."
                    )
                if info.flag_bits & 0x1:
                    raise PackageError(
                        f"The archive entry {_shown(name)} is encrypted; "
                        "encrypted zip files are not supported."
                    )
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise PackageError(
                        f"The archive entry {_shown(name)} uses an unsupported compression "
                        "method (use deflate)."
                    )
                declared += info.file_size
                compressed += info.compress_size
                ratio = limits.max_ratio
                if (
                    ratio
                    and declared > limits.ratio_grace_bytes
                    and declared > ratio * max(compressed, 1)
                ):
                    raise PackageError(
                        f"The archive expands more than {ratio:g} times its compressed size: "
                        "it looks like a compression bomb."
                    )
                kind: Literal["file", "dir"] = "dir" if info.is_dir() else "file"
                yield _Entry(name, kind, info.file_size, lambda info=info: archive.open(info))


def _check_zip_layout(infos: list[zipfile.ZipInfo], central_directory: int) -> None:
    """Entries whose data overlap are how non-recursive zip bombs reuse one compressed blob."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for current, following in zip(ordered, ordered[1:] + [None], strict=True):
        end = following.header_offset if following else central_directory
        if current.header_offset + 30 + current.compress_size > end:
            raise PackageError("The archive has overlapping entries; it looks like a zip bomb.")


def _entries(
    path: Path, fmt: ArchiveFormat, limits: ExtractionLimits
) -> Generator[_Entry, None, None]:
    if fmt == "zip":
        return _zip_entries(path, limits)
    return _tar_entries(path, limits, zstd=fmt == "tar.zst")


def _shown(name: str) -> str:
    """A name safe to put in a message (non-UTF-8 bytes and controls escaped)."""
    return repr(name.encode("utf-8", "backslashreplace").decode("utf-8")[:200])


def _open_archive(archive_path: Path, limits: ExtractionLimits) -> ArchiveFormat:
    size = Path(archive_path).stat().st_size
    if size > limits.max_archive_bytes:
        raise PackageError(
            f"The package file is {_size(size)}; the limit is {_size(limits.max_archive_bytes)}."
        )
    try:
        fmt = detect_format(archive_path)
    except PackageError:
        fmt = None
    if fmt not in limits.formats:
        kinds = " or ".join(f".{name}" for name in limits.formats)
        raise PackageError(f"The file is not a {kinds} archive.")
    return fmt


def _too_big(limits: ExtractionLimits) -> PackageError:
    return PackageError(
        f"The archive unpacks to more than {_size(limits.max_total_bytes)} (the limit)."
    )


def _refused(exc: ArchiveRefused) -> PackageError:
    """A refusal of the shared tar reader (packages/archives.py), as a PackageError."""
    return exc if isinstance(exc, PackageError) else PackageError(str(exc))


def _damaged(exc: BaseException) -> PackageError:
    detail = str(exc).strip() or type(exc).__name__
    return PackageError(f"The archive is damaged or truncated ({detail[:200]}).")


# What malformed archive data raises from tarfile, zipfile, gzip and zlib. Other OSErrors
# (a full disk) are the server's problem, not the package's, and are not reworded.
_ARCHIVE_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, gzip.BadGzipFile, zlib.error,
    EOFError, struct.error, ValueError, NotImplementedError, zstandard.ZstdError,
)  # fmt: skip


# --- Extraction -----------------------------------------------------------------------------


class _Unpacker:
    def __init__(
        self,
        root: Path,
        limits: ExtractionLimits,
        progress: Progress | None,
        digests: dict[str, str] | None = None,
    ):
        self.root, self.limits, self.progress = root, limits, progress
        self.digests = digests
        self.kinds: dict[str, str] = {}  # clean path -> "file" | "dir"
        self.by_key: dict[str, str] = {}  # collision key -> clean path
        self.files = self.folders = self.total = 0

    def clean(self, name: str) -> str:
        try:
            return clean_relative_path(name)
        except UnsafePath as exc:
            raise PackageError(f"The archive entry {_shown(name)} {exc}.") from None

    def claim(self, path: str, kind: str) -> bool:
        """Record `path`; False if it is a folder already known. Raises on any clash."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if self.kinds.get(parent) == "file":
                raise PackageError(f"The archive has {parent!r} both as a file and as a folder.")
            if parent not in self.kinds:
                self._register(parent, "dir")
        existing = self.kinds.get(path)
        if existing is not None:
            if existing == "dir" and kind == "dir":
                return False
            if existing != kind:
                raise PackageError(f"The archive has {path!r} both as a file and as a folder.")
            raise PackageError(f"The archive contains {path!r} twice.")
        self._register(path, kind)
        return True

    def _register(self, path: str, kind: str) -> None:
        if self.limits.refuse_case_collisions:
            key = collision_key(path)
            other = self.by_key.get(key)
            if other is not None and other != path:
                raise PackageError(
                    f"The archive entries {other!r} and {path!r} differ only in upper/lower "
                    "case or Unicode form."
                )
            self.by_key[key] = path
        self.kinds[path] = kind
        if len(self.kinds) > self.limits.max_files:
            raise PackageError(
                f"The archive has more than {self.limits.max_files} files and folders."
            )
        if kind == "dir":
            self.folders += 1
            (self.root / path).mkdir(mode=0o700)
        else:
            self.files += 1

    def add(self, entry: _Entry) -> None:
        path = self.clean(entry.name)
        if not path:
            if entry.kind == "dir":
                return  # "./": the root itself
            raise PackageError(f"The archive entry {_shown(entry.name)} has no file name.")
        if not self.claim(path, entry.kind):
            return
        if entry.kind == "file":
            self.write(path, entry)
        self._report()

    def write(self, path: str, entry: _Entry) -> None:
        limits = self.limits
        if entry.size > limits.max_file_bytes:
            raise PackageError(
                f"The archive entry {path!r} is {_size(entry.size)}; the limit for one file "
                f"is {_size(limits.max_file_bytes)}."
            )
        if self.total + entry.size > limits.max_total_bytes:
            raise _too_big(limits)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root / path, flags, 0o600)
        written = 0
        digest = hashlib.sha256() if self.digests is not None else None
        with os.fdopen(fd, "wb") as out, entry.open() as source:
            while chunk := source.read(CHUNK_BYTES):
                # Header sizes can lie (zip): the streamed bytes are what counts.
                if written + len(chunk) > min(entry.size, limits.max_file_bytes):
                    raise PackageError(f"The archive entry {path!r} is larger than it claims.")
                if self.total + len(chunk) > limits.max_total_bytes:
                    raise _too_big(limits)
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                written += len(chunk)
                self.total += len(chunk)
                self._report()
        if written != entry.size:
            raise PackageError(f"The archive entry {path!r} is shorter than it claims.")
        if digest is not None and self.digests is not None:
            self.digests[path] = digest.hexdigest()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.files + self.folders, self.total)


def safe_extract(
    archive_path: Path,
    dest: Path,
    *,
    limits: ExtractionLimits,
    progress: Progress | None = None,
    digests: dict[str, str] | None = None,
) -> ExtractionReport:
    """Unpack archive_path (.tar.gz or .zip, by content) into dest, which must not exist.

    Raises PackageError (a sentence for the user) and leaves nothing behind on any problem.
    Missing parents of dest are created (and not removed). `progress(entries, bytes)` is
    called as work advances: after each entry and each chunk written. With `digests` (a dict),
    the SHA-256 of each file's bytes as written is stored under its clean path (backups check
    them against their metadata without reading the files again).
    """
    archive_path, dest = Path(archive_path), Path(dest)
    fmt = _open_archive(archive_path, limits)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        unpacker = _Unpacker(tmp, limits, progress, digests)
        try:
            with closing(_entries(archive_path, fmt, limits)) as entries:
                for entry in entries:
                    unpacker.add(entry)
        except ArchiveRefused as exc:
            raise _refused(exc) from None
        except _ARCHIVE_ERRORS as exc:
            raise _damaged(exc) from None
        _make_read_only(tmp)
        os.rename(tmp, dest)
    except BaseException:
        remove_tree(tmp)
        raise
    return ExtractionReport(fmt, unpacker.files, unpacker.folders, unpacker.total)


def _make_read_only(root: Path) -> None:
    for folder, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(folder, name), 0o444, follow_symlinks=False)
        for name in dirnames:
            os.chmod(os.path.join(folder, name), 0o555, follow_symlinks=False)
    os.chmod(root, 0o555)


def remove_tree(path: Path) -> None:
    """Delete an unpacked (read-only) tree, e.g. an app version being removed."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    # The tree may be an appspace's old data (its uid's): never follow a symlink, even one
    # swapped in after the walk listed a folder (chmod on a symlink fails, and is skipped).
    for folder, dirnames, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700, follow_symlinks=False)
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, name), 0o700, follow_symlinks=False)
    shutil.rmtree(path, onerror=_retry_writable)


def _retry_writable(func, failed_path: str, _exc_info) -> None:
    """rmtree's error handler: make the entry and its folder writable, then remove it again.
    rmtree walks by descriptors, so `func` may be `os.open` or `os.scandir` of a folder it could
    not enter (not callable with a path alone): that folder is then removed whole, by a walk of
    its own; an `os.unlink`/`os.rmdir` is simply retried."""
    os.chmod(os.path.dirname(failed_path), 0o700, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.chmod(failed_path, 0o700, follow_symlinks=False)
    if func in (os.unlink, os.remove, os.rmdir):
        func(failed_path)
    elif os.path.isdir(failed_path) and not os.path.islink(failed_path):
        shutil.rmtree(failed_path)
    else:
        os.unlink(failed_path)


# --- Reading only the manifest --------------------------------------------------------------


def read_manifest_from_archive(
    archive_path: Path, *, limits: ExtractionLimits, max_bytes: int = 64 * 1024
) -> bytes:
    """The bytes of the root `dropapp.json`, without unpacking the rest (a .tar.gz is read
    only up to it; `package_app` writes it first)."""
    archive_path = Path(archive_path)
    fmt = _open_archive(archive_path, limits)
    nested = ""
    entries = _entries(archive_path, fmt, limits)
    try:
        for count, entry in enumerate(entries, start=1):
            if count > limits.max_files:
                raise PackageError(
                    f"The archive has more than {limits.max_files} files and folders."
                )
            try:
                path = clean_relative_path(entry.name)
            except UnsafePath as exc:
                raise PackageError(f"The archive entry {_shown(entry.name)} {exc}.") from None
            if path.endswith("/" + MANIFEST_NAME) and path.count("/") == 1 and not nested:
                nested = path
            if path != MANIFEST_NAME:
                continue
            if entry.kind != "file":
                raise PackageError(f"{MANIFEST_NAME} in the package is not a file.")
            if entry.size > max_bytes:
                raise PackageError(f"{MANIFEST_NAME} is larger than {_size(max_bytes)}.")
            with entry.open() as source:
                data = source.read(max_bytes + 1)
            if len(data) != entry.size:
                raise PackageError(f"{MANIFEST_NAME} in the package is damaged.")
            return data
    except ArchiveRefused as exc:
        raise _refused(exc) from None
    except _ARCHIVE_ERRORS as exc:
        raise _damaged(exc) from None
    finally:
        entries.close()
    hint = f" (found {nested}: package the folder's contents, not the folder)" if nested else ""
    raise PackageError(f"The package has no {MANIFEST_NAME} at its root{hint}.")
