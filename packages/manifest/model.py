"""`dropapp.json` as the platform keeps it: its name and size limit, and the typed, frozen
result of reading one (`ManifestResult`: a `Manifest`, or errors; and warnings)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import semver

from packages.allowlist import (
    BrowserOrigin,
    ServerEntry,
)
from packages.icons import Icon

MANIFEST_NAME = "dropapp.json"
MAX_MANIFEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Issue:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Author:
    name: str
    email: str = ""
    url: str = ""


@dataclass(frozen=True)
class Permission:
    key: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class NetworkSuggestion:
    server: tuple[ServerEntry, ...] = ()
    browser: tuple[BrowserOrigin, ...] = ()


@dataclass(frozen=True)
class Manifest:
    version: semver.Version
    entrypoint: str
    name: str = ""
    short_description: str = ""
    icon: Icon | None = None
    accent_color: str = ""
    authors: tuple[Author, ...] = ()
    code: str = ""
    website: str = ""
    funding: str = ""
    license: str = ""
    license_file: str = ""
    changelog: str = ""
    changelog_text: str = ""
    release_date: datetime.date | None = None
    network: NetworkSuggestion = field(default_factory=NetworkSuggestion)
    permissions: tuple[Permission, ...] = ()

    @property
    def permission_keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self.permissions)

    def to_dict(self) -> dict[str, Any]:
        """The canonical manifest as JSON-ready data (for storing on an app version)."""
        return {
            "name": self.name,
            "version": str(self.version),
            "entrypoint": self.entrypoint,
            "short-description": self.short_description,
            "icon": self.icon.path if self.icon else "",
            "accent-color": self.accent_color,
            "authors": [{"name": a.name, "email": a.email, "url": a.url} for a in self.authors],
            "code": self.code,
            "website": self.website,
            "funding": self.funding,
            "license": self.license,
            "license-file": self.license_file,
            "changelog": self.changelog,
            "release-date": self.release_date.isoformat() if self.release_date else "",
            "network": {
                "server": [str(e) for e in self.network.server],
                "browser": [str(o) for o in self.network.browser],
            },
            "permissions": [
                {"key": p.key, "name": p.name, "description": p.description}
                for p in self.permissions
            ],
        }


@dataclass(frozen=True)
class ManifestResult:
    manifest: Manifest | None
    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors
