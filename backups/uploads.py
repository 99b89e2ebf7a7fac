"""Archives uploaded for a restore: streamed to DS_DATA_DIR/backups/.uploads/ and refused as soon
as they pass DS_BACKUP_MAX_UPLOAD_MB (never after). The restore job owns and removes the file;
the sweep removes what a dead job left."""

from __future__ import annotations

import os
import tempfile

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from appspaces.uploads import StoredUpload
from backups.restore import uploads_dir

ARCHIVE_FIELD = "archive"


class ArchiveUploadHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.cap = settings.DS_BACKUP_MAX_UPLOAD_MB * 1024 * 1024
        self.too_large = False
        self._file = None
        self._path = None
        self._size = 0

    def new_file(self, field_name, file_name, content_type, content_length, *args, **kwargs):
        super().new_file(field_name, file_name, content_type, content_length, *args, **kwargs)
        if field_name != ARCHIVE_FIELD or self._path is not None:
            raise SkipFile()
        if content_length is not None and content_length > self.cap:
            self.too_large = True
            raise SkipFile()
        fd, name = tempfile.mkstemp(prefix="incoming-", suffix=".part", dir=uploads_dir())
        self._path = name
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
        from pathlib import Path

        return StoredUpload(Path(self._path), self.file_name, self.content_type, file_size)

    def upload_interrupted(self):
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            os.unlink(self._path)
            self._path = None
