"""Archives uploaded for a restore or an import: streamed to an unnamed file in
DS_DATA_DIR/backups/.uploads/ and refused as soon as they pass DS_BACKUP_MAX_UPLOAD_MB (never
after). A kept archive is named there (`StoredUpload.keep`) and owned by its job, which removes
it; the sweep removes what a dead job left. A refused one never had a name."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings

from appspaces.installs.staging import CappedUploadHandler
from backups.restore import uploads_dir

ARCHIVE_FIELD = "archive"


class ArchiveUploadHandler(CappedUploadHandler):
    field_name = ARCHIVE_FIELD

    @classmethod
    def cap_bytes(cls) -> int:
        return settings.DS_BACKUP_MAX_UPLOAD_MB * 1024 * 1024

    def incoming_dir(self) -> Path:
        return uploads_dir()


def kept_archive_path() -> Path:
    """A new name in backups/.uploads/ for an archive a job will own."""
    return uploads_dir() / f"incoming-{secrets.token_hex(8)}.tar.zst"
