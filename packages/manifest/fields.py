"""The rules of each `dropapp.json` field, checked against the files of the package: one
checker that walks the fields and collects errors (fatal) and warnings (the owner accepts
them). Field rules follow Dropserver's manifest, plus our `network` and `permissions`.

Just over the usual length on purpose: one method per field, so the whole of what a
manifest may say is read (and reviewed) in one place, in the order of docs/app-api.md.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import regex
import semver
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from packages.allowlist import (
    AllowlistError,
    parse_browser_origin,
    parse_server_entry,
)
from packages.icons import Icon, check_icon
from packages.manifest.model import (
    Author,
    Issue,
    Manifest,
    ManifestResult,
    NetworkSuggestion,
    Permission,
)
from packages.paths import BIDI_CONTROLS, UnsafePath, clean_relative_path

MAX_CHANGELOG_BYTES = 64 * 1024
NAME_WARN, NAME_MAX = 30, 100  # graphemes
DESCRIPTION_WARN, DESCRIPTION_MAX = 60, 300
MAX_URL_LENGTH = 2048
MAX_LIST_ITEMS = 50
ENTRYPOINT_SUFFIXES = (".ts", ".js", ".mts", ".mjs", ".tsx", ".jsx")
PERMISSION_KEY = re.compile(r"^[a-z0-9_-]{1,32}$")
_AUTHOR_STRING = re.compile(r"^\s*([^<(]*?)\s*(?:<([^>]*)>)?\s*(?:\(([^)]*)\))?\s*$")
_LICENSE_REF = re.compile(r"^(DocumentRef-[A-Za-z0-9.-]+:)?LicenseRef-[A-Za-z0-9.-]+$")
_KNOWN_FIELDS = {
    "name", "version", "entrypoint", "short-description", "icon", "accent-color", "authors",
    "code", "website", "funding", "license", "license-file", "changelog", "release-date",
    "network", "permissions",
}  # fmt: skip
_PLATFORM_FIELDS = {"schema", "migrations"}  # Dropserver's: computed at install, never trusted

# Unicode extended grapheme clusters (UAX #29, the `regex` module's \X): what a reader counts
# as one character, e.g. a family emoji joined with ZWJs, a flag, a letter with its accents.
_GRAPHEME = regex.compile(r"\X")


def grapheme_count(value: str, until: int | None = None) -> int:
    """The number of grapheme clusters in `value`, counting no further than `until`."""
    return sum(1 for _ in islice(_GRAPHEME.finditer(value), until))


@lru_cache(maxsize=1)
def _spdx():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _has_unsafe_chars(text: str) -> bool:
    # Control characters and bidi overrides let a name pose as something else in the panel.
    return any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in text)


class FieldChecker:
    def __init__(self, data: Mapping[str, Any], root: Path):
        self.data = data
        self.root = root
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []

    def error(self, field_name: str, message: str) -> None:
        self.errors.append(Issue(field_name, message))

    def warn(self, field_name: str, message: str) -> None:
        self.warnings.append(Issue(field_name, message))

    def run(self) -> ManifestResult:
        for key in self.data:
            if key in _PLATFORM_FIELDS:
                self.warn(key, "is worked out by the platform at install; the value is ignored")
            elif key not in _KNOWN_FIELDS:
                self.warn(str(key)[:64], "unknown field; it is ignored")
        values: dict[str, Any] = {
            "version": self.version(),
            "entrypoint": self.entrypoint(),
            "name": self.text("name", NAME_WARN, NAME_MAX, missing_warning=True),
            "short_description": self.text("short-description", DESCRIPTION_WARN, DESCRIPTION_MAX),
            "icon": self.icon(),
            "accent_color": self.accent_color(),
            "authors": self.authors(),
            "code": self.url("code"),
            "website": self.url("website"),
            "funding": self.url("funding"),
            "license": self.license(),
            "license_file": self.license_file(),
            "release_date": self.release_date(),
            "network": self.network(),
            "permissions": self.permissions(),
        }
        values["changelog"], values["changelog_text"] = self.changelog()
        if self.errors:
            return ManifestResult(None, tuple(self.errors), tuple(self.warnings))
        return ManifestResult(Manifest(**values), (), tuple(self.warnings))

    # --- helpers ---

    def string(self, key: str, *, required: bool = False) -> str | None:
        if key not in self.data or self.data[key] is None:
            if required:
                self.error(key, "is required")
            return None
        value = self.data[key]
        if not isinstance(value, str):
            self.error(key, "must be a string")
            return None
        return value

    def package_file(self, key: str, rel: str) -> Path | None:
        """The regular file `rel` inside the package, or None with an error recorded."""
        try:
            clean = clean_relative_path(rel)
        except UnsafePath as exc:
            self.error(key, f"{rel!r} {exc}")
            return None
        if not clean:
            self.error(key, "must name a file inside the package")
            return None
        path = self.root
        for part in clean.split("/"):
            path = path / part
            if path.is_symlink():
                self.error(key, f"{clean!r} is a symbolic link")
                return None
        if not path.is_file():
            self.error(key, f"file {clean!r} is not in the package")
            return None
        return path

    # --- fields ---

    def version(self) -> semver.Version | None:
        value = self.string("version", required=True)
        if value is None:
            return None
        try:
            if len(value) > 128:
                raise ValueError
            return semver.Version.parse(value)
        except (ValueError, TypeError):
            self.error("version", f"{value[:64]!r} is not a semantic version such as 1.2.0")
            return None

    def entrypoint(self) -> str | None:
        if "entrypoint" in self.data and self.data["entrypoint"] not in (None, ""):
            value = self.string("entrypoint")
            if value is None:
                return None
            if not value.endswith(ENTRYPOINT_SUFFIXES):
                self.error("entrypoint", f"{value!r} must be a .ts or .js file")
                return None
            path = self.package_file("entrypoint", value)
            return clean_relative_path(value) if path else None
        has_ts = (self.root / "app.ts").is_file()
        has_js = (self.root / "app.js").is_file()
        if has_ts and has_js:
            self.error("entrypoint", "both app.ts and app.js exist; say which one to run")
            return None
        if not (has_ts or has_js):
            self.error("entrypoint", "not given, and neither app.ts nor app.js is in the package")
            return None
        name = "app.ts" if has_ts else "app.js"
        return name if self.package_file("entrypoint", name) else None

    def text(self, key: str, warn_at: int, max_len: int, *, missing_warning: bool = False) -> str:
        value = self.string(key)
        if value is None or not value.strip():
            if missing_warning:
                self.warn(key, "is missing; the app will be shown without a name")
            return ""
        value = value.strip()
        if _has_unsafe_chars(value):
            self.error(key, "contains control or text-direction characters")
            return ""
        length = grapheme_count(value, until=max_len + 1)
        if length > max_len:
            self.error(key, f"is longer than {max_len} characters")
        elif length > warn_at:
            self.warn(key, f"is longer than {warn_at} characters and will be cut short in lists")
        return value

    def url(self, key: str, value: Any = None, *, field_name: str | None = None) -> str:
        field_name = field_name or key
        if value is None:
            value = self.string(key)
            if value is None:
                return ""
        elif not isinstance(value, str):
            self.error(field_name, "must be a string")
            return ""
        value = value.strip()
        if not value:
            return ""
        error = _http_url_error(value)
        if error:
            self.error(field_name, error)
            return ""
        return value

    def icon(self) -> Icon | None:
        value = self.string("icon")
        if not value:
            return None
        path = self.package_file("icon", value)
        if path is None:
            return None
        rel = clean_relative_path(value)
        try:
            return check_icon(path, rel)
        except ValueError as exc:
            self.error("icon", str(exc))
            return None

    def accent_color(self) -> str:
        value = self.string("accent-color")
        if not value or not value.strip():
            return ""
        value = value.strip()
        if len(value) > 200 or _parse_css_color(value) is None:
            self.error("accent-color", f"{value[:64]!r} is not a CSS colour")
            return ""
        return value

    def authors(self) -> tuple[Author, ...]:
        raw = self.data.get("authors")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error("authors", "must be a list")
            return ()
        if len(raw) > MAX_LIST_ITEMS:
            self.error("authors", f"has more than {MAX_LIST_ITEMS} entries")
            return ()
        authors = []
        for i, item in enumerate(raw):
            where = f"authors[{i}]"
            if isinstance(item, str):
                match = _AUTHOR_STRING.match(item)
                if not match:
                    self.error(where, "write authors as 'Name <email> (url)' or an object")
                    continue
                name, email, url = (g or "" for g in match.groups())
            elif isinstance(item, Mapping):
                for key in item:
                    if key not in ("name", "email", "url"):
                        self.warn(f"{where}.{str(key)[:32]}", "unknown field; it is ignored")
                name, email, url = (item.get(k) or "" for k in ("name", "email", "url"))
                if not all(isinstance(v, str) for v in (name, email, url)):
                    self.error(where, "name, email and url must be strings")
                    continue
            else:
                self.error(where, "must be a string or an object with a name")
                continue
            name, email = name.strip(), email.strip()
            if not name:
                self.error(f"{where}.name", "is required")
                continue
            if len(name) > 200 or _has_unsafe_chars(name):
                self.error(f"{where}.name", "is too long or contains control characters")
                continue
            if email:
                try:
                    validate_email(email)
                except ValidationError:
                    self.error(f"{where}.email", f"{email[:64]!r} is not an email address")
                    continue
            url = self.url("", url, field_name=f"{where}.url") if url else ""
            authors.append(Author(name=name, email=email, url=url))
        return tuple(authors)

    def license(self) -> str:
        value = self.string("license")
        if not value or not value.strip():
            self.warn("license", "is missing: you may not be allowed to use or share this app")
            return ""
        value = value.strip()
        try:
            info = _spdx().validate(value, strict=True)
        except Exception:  # license-expression raises odd errors on some malformed input
            info = None
        if info is not None and not info.errors:
            return str(info.normalized_expression)
        if (
            info is not None
            and info.invalid_symbols
            and all(_LICENSE_REF.match(s or "") for s in info.invalid_symbols)
        ):
            return value  # LicenseRef-... identifiers are valid SPDX, unknown to the list
        self.error("license", f"{value[:64]!r} is not a valid SPDX license expression")
        return ""

    def license_file(self) -> str:
        value = self.string("license-file")
        if not value:
            return ""
        return clean_relative_path(value) if self.package_file("license-file", value) else ""

    def changelog(self) -> tuple[str, str]:
        value = self.string("changelog")
        if not value:
            return "", ""
        path = self.package_file("changelog", value)
        if path is None:
            return "", ""
        if path.stat().st_size > MAX_CHANGELOG_BYTES:
            self.error("changelog", f"the file is larger than {MAX_CHANGELOG_BYTES // 1024} KB")
            return "", ""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            self.error("changelog", "the file is not UTF-8 text")
            return "", ""
        return clean_relative_path(value), text

    def release_date(self) -> datetime.date | None:
        value = self.string("release-date")
        if not value:
            return None
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            self.error("release-date", f"{value[:32]!r} is not a date written YYYY-MM-DD")
            return None
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            self.error("release-date", f"{value!r} is not a real date")
            return None

    def network(self) -> NetworkSuggestion:
        raw = self.data.get("network")
        if raw is None:
            return NetworkSuggestion()
        if not isinstance(raw, Mapping):
            self.error("network", 'must be an object such as {"server": [...], "browser": [...]}')
            return NetworkSuggestion()
        for key in raw:
            if key not in ("server", "browser"):
                self.warn(f"network.{str(key)[:32]}", "unknown field; it is ignored")
        server = self._entries("server", raw.get("server"), parse_server_entry)
        browser = self._entries("browser", raw.get("browser"), parse_browser_origin)
        return NetworkSuggestion(server=server, browser=browser)

    def _entries(self, kind: str, raw: Any, parse):
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error(f"network.{kind}", "must be a list of strings")
            return ()
        if len(raw) > MAX_LIST_ITEMS:
            self.error(f"network.{kind}", f"has more than {MAX_LIST_ITEMS} entries")
            return ()
        entries = []
        for i, item in enumerate(raw):
            try:
                entry = parse(item)
            except AllowlistError as exc:
                self.error(f"network.{kind}[{i}]", str(exc))
                continue
            if entry in entries:
                self.warn(f"network.{kind}[{i}]", f"{entry} is listed twice")
                continue
            entries.append(entry)
        return tuple(entries)

    def permissions(self) -> tuple[Permission, ...]:
        raw = self.data.get("permissions")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error("permissions", "must be a list of objects")
            return ()
        if len(raw) > MAX_LIST_ITEMS:
            self.error("permissions", f"has more than {MAX_LIST_ITEMS} entries")
            return ()
        seen: set[str] = set()
        result = []
        for i, item in enumerate(raw):
            where = f"permissions[{i}]"
            if not isinstance(item, Mapping):
                self.error(where, 'must be an object such as {"key": "edit", "name": "Edit"}')
                continue
            key, name, description = item.get("key"), item.get("name"), item.get("description")
            if not isinstance(key, str) or not PERMISSION_KEY.match(key):
                self.error(f"{where}.key", "must be 1-32 characters of a-z, 0-9, '_' or '-'")
                continue
            if key in seen:
                self.error(f"{where}.key", f"{key!r} is declared twice")
                continue
            seen.add(key)
            if not isinstance(name, str) or not name.strip():
                self.error(f"{where}.name", "is required")
                continue
            if description is not None and not isinstance(description, str):
                self.error(f"{where}.description", "must be a string")
                continue
            name, description = name.strip(), (description or "").strip()
            if len(name) > 100 or len(description) > 1000 or _has_unsafe_chars(name + description):
                self.error(where, "name or description is too long or has control characters")
                continue
            result.append(Permission(key=key, name=name, description=description))
        return tuple(result)


def _http_url_error(value: str) -> str | None:
    from urllib.parse import urlsplit

    if len(value) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return f"{value[:64]!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{value[:64]!r} must be an http:// or https:// URL"
    if not parts.hostname:
        return f"{value[:64]!r} has no host"
    return None


def _parse_css_color(value: str):
    try:
        from tinycss2 import color5 as colors
    except ImportError:  # pragma: no cover -- older tinycss2
        from tinycss2 import color4 as colors
    color = colors.parse_color(value)
    if color is None or color == "currentcolor":
        return None
    return color
