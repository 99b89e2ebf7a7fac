"""Packages on their way in: DS_DATA_DIR/uploads/, where each install job keeps its package;
and the capped upload handler that app packages and backup archives share.

An upload streams into an *unnamed* file (O_TMPFILE) in its target folder and is refused as
soon as it passes its cap (never after). It gets a name only when a view keeps it
(`StoredUpload.keep()`, a linkat of /proc/self/fd/N, e.g. to `uploads/<job>/package`); an
upload refused for any reason (CSRF, 404, permission, size, content) is only ever closed, so
nothing of it exists on disk, at once, without a sweep. The install job removes its folder
when it ends; the sweep (`installs_sweep`) catches what a crash left. The command line's
`upload_copy` still makes a named `incoming-*.part` (removed on failure).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from appspaces.models import data_dir
from sandbox import access

PACKAGE_FIELD = "package"
MB = 1024 * 1024


class UploadTooLarge(Exception):
    """str() is a sentence for the user."""


def uploads_dir() -> Path:
    path = data_dir() / "uploads"
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        access.give_to_platform(path)  # made by root: still the workers' (DS_RUN_AS)
    return path


def job_staging_dir(job) -> Path:
    """Where an install job keeps its package (and unpacks it) until it ends."""
    return uploads_dir() / str(job.public_id)


def max_package_bytes() -> int:
    return settings.DS_APP_MAX_PACKAGE_MB * MB


def too_large_message() -> str:
    return f"The package is larger than {settings.DS_APP_MAX_PACKAGE_MB} MB, the limit here."


def _incoming_file() -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(prefix="incoming-", suffix=".part", dir=uploads_dir())
    return fd, Path(name)


def upload_copy(source: Path) -> Path:
    """Copy a local package into uploads/ (the command line's way in), under the same cap."""
    cap = max_package_bytes()
    fd, path = _incoming_file()
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            copied = 0
            while chunk := src.read(1024 * 1024):
                copied += len(chunk)
                if copied > cap:
                    raise UploadTooLarge(too_large_message())
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def unnamed_file(directory: Path):
    """A new file in `directory` that has no name (and so no trace) until it is linked."""
    fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "w+b")


def link_unnamed(file, dest: Path) -> None:
    """Give an O_TMPFILE file a name (dest must not exist). Through /proc/self/fd, which needs
    no capability (linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH)."""
    file.flush()
    proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(file.fileno()), dest, src_dir_fd=proc_fd, follow_symlinks=True)
    finally:
        os.close(proc_fd)


class StoredUpload(UploadedFile):
    """An upload in an unnamed file: nothing on disk has it until `keep()` names it; closing it
    (Django closes request files when the request ends) frees it. `stored_path` reads it while
    it is open (a /proc/self/fd path, valid in this process only)."""

    def __init__(self, file, name: str, content_type: str, size: int):
        file.seek(0)
        super().__init__(file, name, content_type, size)
        self.kept_path: Path | None = None

    @property
    def stored_path(self) -> Path:
        if self.kept_path is not None:
            return self.kept_path
        return Path(f"/proc/self/fd/{self.file.fileno()}")

    def keep(self, dest: Path) -> Path:
        """Name the file `dest` (a new name on the same filesystem); the caller owns it now."""
        link_unnamed(self.file, dest)
        self.kept_path = dest
        self.close()
        return dest

    def discard(self) -> None:
        self.close()


class CappedUploadHandler(FileUploadHandler):
    """Streams one file field to an unnamed file in `incoming_dir()`, counting bytes; past
    `cap_bytes()` the partial file is closed (and so gone), `too_large` is set and the rest of
    the field is skipped (the form says why). Other fields' files are skipped. Subclasses name
    the field, the cap and the folder. Views that use one are marked `@accepts_upload`
    (accounts/upload_gate.py)."""

    field_name = ""

    @classmethod
    def cap_bytes(cls) -> int:
        raise NotImplementedError

    def incoming_dir(self) -> Path:
        raise NotImplementedError

    def __init__(self, request=None):
        super().__init__(request)
        self.cap = self.cap_bytes()
        self.too_large = False
        self._file = None
        self._started = False
        self._size = 0

    def new_file(self, field_name, file_name, content_type, content_length, *args, **kwargs):
        super().new_file(field_name, file_name, content_type, content_length, *args, **kwargs)
        if field_name != self.field_name or self._started:
            raise SkipFile()
        self._started = True
        if content_length is not None and content_length > self.cap:
            self.too_large = True
            raise SkipFile()
        self._file = unnamed_file(self.incoming_dir())
        self._size = 0

    def receive_data_chunk(self, raw_data, start):
        if self._file is None:
            return None
        self._size += len(raw_data)
        if self._size > self.cap:
            self.too_large = True
            self._discard()
            raise SkipFile()
        self._file.write(raw_data)
        return None

    def file_complete(self, file_size):
        if self._file is None:
            return None
        file, self._file = self._file, None
        return StoredUpload(file, self.file_name, self.content_type, file_size)

    def upload_interrupted(self):
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()  # unnamed: closing it is all it takes
            self._file = None


class PackageUploadHandler(CappedUploadHandler):
    """The `package` field, to uploads/, under DS_APP_MAX_PACKAGE_MB."""

    field_name = PACKAGE_FIELD

    @classmethod
    def cap_bytes(cls) -> int:
        return max_package_bytes()

    def incoming_dir(self) -> Path:
        return uploads_dir()
