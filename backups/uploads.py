"""Archives uploaded for a restore: streamed to DS_DATA_DIR/backups/.uploads/ and refused as soon
as they pass DS_BACKUP_MAX_UPLOAD_MB (never after). The restore job owns and removes the file;
the sweep removes what a dead job left."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from appspaces.installs.staging import CappedUploadHandler
from backups.restore import uploads_dir

ARCHIVE_FIELD = "archive"


class ArchiveUploadHandler(CappedUploadHandler):
    field_name = ARCHIVE_FIELD

    def cap_bytes(self) -> int:
        return settings.DS_BACKUP_MAX_UPLOAD_MB * 1024 * 1024

    def incoming_dir(self) -> Path:
        return uploads_dir()
