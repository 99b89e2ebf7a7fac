"""Packages on their way in: DS_DATA_DIR/uploads/, where each install job keeps its package.

An upload streams straight to `uploads/incoming-*.part` and is refused as soon as it passes
DS_APP_MAX_PACKAGE_MB (never after); the install job then moves it to `uploads/<job>/package`
and removes its folder when it ends. The sweep (`installs_sweep`) catches what a crash left.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from appspaces.models import data_dir

PACKAGE_FIELD = "package"
MB = 1024 * 1024


class UploadTooLarge(Exception):
    """str() is a sentence for the user."""


def uploads_dir() -> Path:
    path = data_dir() / "uploads"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
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


class StoredUpload(UploadedFile):
    """An uploaded package already on disk under uploads/; `stored_path` is where."""

    def __init__(self, path: Path, name: str, content_type: str, size: int):
        super().__init__(open(path, "rb"), name, content_type, size)  # noqa: SIM115 (closed by Django)
        self.stored_path = path

    def discard(self) -> None:
        self.close()
        self.stored_path.unlink(missing_ok=True)


class CappedUploadHandler(FileUploadHandler):
    """Streams one file field to a `.part` file in `incoming_dir()`, counting bytes; past
    `cap_bytes()` the partial file is deleted, `too_large` is set and the rest of the field is
    skipped (the form says why). Other fields' files are skipped. Subclasses name the field,
    the cap and the folder."""

    field_name = ""

    def cap_bytes(self) -> int:
        raise NotImplementedError

    def incoming_dir(self) -> Path:
        raise NotImplementedError

    def __init__(self, request=None):
        super().__init__(request)
        self.cap = self.cap_bytes()
        self.too_large = False
        self._file = None
        self._path: Path | None = None
        self._size = 0

    def new_file(self, field_name, file_name, content_type, content_length, *args, **kwargs):
        super().new_file(field_name, file_name, content_type, content_length, *args, **kwargs)
        if field_name != self.field_name or self._path is not None:
            raise SkipFile()
        if content_length is not None and content_length > self.cap:
            self.too_large = True
            raise SkipFile()
        fd, name = tempfile.mkstemp(prefix="incoming-", suffix=".part", dir=self.incoming_dir())
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")
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
        if self._file is None or self._path is None:
            return None
        self._file.close()
        self._file = None
        return StoredUpload(self._path, self.file_name, self.content_type, file_size)

    def upload_interrupted(self):
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None


class PackageUploadHandler(CappedUploadHandler):
    """The `package` field, to uploads/, under DS_APP_MAX_PACKAGE_MB."""

    field_name = PACKAGE_FIELD

    def cap_bytes(self) -> int:
        return max_package_bytes()

    def incoming_dir(self) -> Path:
        return uploads_dir()
