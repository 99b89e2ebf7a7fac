"""What a backup archive says about itself: `dropserver-backup.json`, the first member of every
archive. It names the format and its version, the appspace, the app and version, the data
schema, when it was made, and every file with its size and SHA-256; `Metadata.from_json`
believes none of it until each field is checked (an archive may come from anyone).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from packages.paths import UnsafePath, clean_relative_path

FORMAT = "dropserver-backup"
FORMAT_VERSION = 1
META_NAME = "dropserver-backup.json"  # the first member
DATA = "data"  # the folder of the appspace's data, beside it
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArchiveError(Exception):
    """An archive that is refused; str() says why, for the user."""


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to data/
    size: int
    sha256: str = ""
    mtime: float = 0.0


@dataclass
class Metadata:
    appspace_id: str
    app_id: str
    app_name: str
    app_version: str
    data_schema: int
    created: str
    files: list[FileRecord] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "format_version": self.format_version,
                "created": self.created,
                "appspace": {"id": self.appspace_id},
                "app": {"id": self.app_id, "name": self.app_name, "version": self.app_version},
                "data_schema": self.data_schema,
                "total_bytes": self.total_bytes,
                "folders": self.folders,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
                "skipped": self.skipped,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Metadata:
        """Parse and check untrusted metadata: every problem is an ArchiveError."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ArchiveError(f"The backup's {META_NAME} is not valid JSON.") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ArchiveError("This is not a Dropserver backup.")
        version = data.get("format_version")
        if not _is_count(version) or version < 1:
            raise ArchiveError("The backup has no valid format version.")
        if version > FORMAT_VERSION:
            raise ArchiveError(
                f"The backup was made by a newer Dropserver (format {version}); this one reads "
                f"format {FORMAT_VERSION}."
            )
        app = data.get("app") if isinstance(data.get("app"), dict) else {}
        appspace = data.get("appspace") if isinstance(data.get("appspace"), dict) else {}
        schema = data.get("data_schema")
        if not _is_count(schema):
            raise ArchiveError("The backup has no valid data schema.")
        meta = cls(
            appspace_id=str(appspace.get("id") or ""),
            app_id=str(app.get("id") or ""),
            app_name=str(app.get("name") or ""),
            app_version=str(app.get("version") or ""),
            data_schema=schema,
            created=str(data.get("created") or ""),
            format_version=version,
        )
        seen: set[str] = set()
        for item in _list(data, "files"):
            if not isinstance(item, dict):
                raise ArchiveError("The backup's file list is malformed.")
            path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
            if not _is_count(size) or not isinstance(digest, str) or not _SHA256.match(digest):
                raise ArchiveError(f"The backup's file list is malformed near {path!r}.")
            path = clean_path(path)
            if path in seen:
                raise ArchiveError(f"The backup lists {path!r} twice.")
            seen.add(path)
            meta.files.append(FileRecord(path, size, digest))
        for folder in _list(data, "folders"):
            folder = clean_path(folder)
            if folder in seen:
                raise ArchiveError(f"The backup lists {folder!r} twice.")
            seen.add(folder)
            meta.folders.append(folder)
        meta.skipped = [s for s in _list(data, "skipped") if isinstance(s, dict)][:1000]
        return meta


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ArchiveError(f"The backup's {key} list is malformed.")
    return value


def clean_path(path: Any) -> str:
    try:
        clean = clean_relative_path(f"{DATA}/{path}") if isinstance(path, str) else None
    except UnsafePath as exc:
        raise ArchiveError(
            f"The backup lists an unsafe path {str(path)[:200]!r}: it {exc}."
        ) from None
    if clean is None or clean != f"{DATA}/{path}":
        raise ArchiveError(f"The backup lists an unsafe path {str(path)[:200]!r}.")
    return path


def storable_name(rel: str) -> str | None:
    """None if `rel` (relative to data/) can be archived and restored, else why not: the
    restore side applies the same rule (`clean_relative_path`), so nothing unrestorable is
    ever written."""
    try:
        if clean_relative_path(f"{DATA}/{rel}") != f"{DATA}/{rel}":
            return "its name is not in normal form"
    except UnsafePath as exc:
        return f"its name {exc}"
    return None
