"""The one rule for a path inside an app package (or any archive we unpack): relative, clean, UTF-8.

Extraction (archive member names), the manifest (entrypoint, icon, license-file, changelog),
static routes (`@app/<dir>`) and `package_app` all call `clean_relative_path`, so a path that
one of them accepts is accepted by all of them, and refused by all of them otherwise.
"""

from __future__ import annotations

import re
import unicodedata

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_DEPTH = 32

_DRIVE = re.compile(r"^[A-Za-z]:")
# Bidi controls make a name display differently from what it is ("gpj.exe" shown as "exe.jpg").
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class UnsafePath(ValueError):
    """A path that must not be used inside a package; str() is the reason, for a human."""


def clean_relative_path(name: str) -> str:
    """Return `name` normalised to `a/b/c`, or raise UnsafePath saying why it is refused.

    `./` segments and one trailing `/` (a directory marker in archives) are dropped; the empty
    string is returned for the package root itself (`.` or `./`).
    """
    if not isinstance(name, str):
        raise UnsafePath("is not a string")
    if not name:
        raise UnsafePath("is empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath("is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"is longer than {MAX_PATH_BYTES} bytes")
    for char in name:
        if unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS:
            raise UnsafePath("contains a control character")
    if "\\" in name:
        raise UnsafePath("contains a backslash")
    if name.startswith("/"):
        raise UnsafePath("is an absolute path")
    if _DRIVE.match(name):
        raise UnsafePath("starts with a drive letter")
    parts = name.split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # "dir/" marks a directory
    segments = []
    for part in parts:
        if part == ".":
            continue
        if part == "":
            raise UnsafePath("has an empty path segment ('//')")
        if part == "..":
            raise UnsafePath("climbs out of the package with '..'")
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafePath(f"has a name longer than {MAX_SEGMENT_BYTES} bytes")
        segments.append(part)
    if len(segments) > MAX_DEPTH:
        raise UnsafePath(f"is nested deeper than {MAX_DEPTH} folders")
    return "/".join(segments)


def collision_key(path: str) -> str:
    """Two paths with the same key would be the same file on a case-insensitive or
    normalising file system (macOS, Windows, some backup targets)."""
    return unicodedata.normalize("NFC", path).casefold()
