"""`dropapp.json`: parse and validate an app's manifest against the files of its package.

The result is a `ManifestResult`: a typed, frozen `Manifest` (None when there are errors),
`errors` (fatal; each names its field: `version: "1.2" is not a semantic version`) and
`warnings` (shown to the user, who must accept them before the install goes on). The rules of
each field are in fields.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packages.manifest.fields import FieldChecker
from packages.manifest.model import MANIFEST_NAME, MAX_MANIFEST_BYTES, Issue, ManifestResult


def load_manifest(package_dir: Path) -> ManifestResult:
    """Read `dropapp.json` at the root of an unpacked package and validate it."""
    package_dir = Path(package_dir)
    path = package_dir / MANIFEST_NAME
    if path.is_symlink():
        return _failed(MANIFEST_NAME, "is a symbolic link")
    if not path.is_file():
        nested = sorted(p.relative_to(package_dir) for p in package_dir.glob(f"*/{MANIFEST_NAME}"))
        hint = (
            f" (found {nested[0]}: package the folder's contents, not the folder)" if nested else ""
        )
        return _failed(MANIFEST_NAME, f"not found at the root of the package{hint}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        return _failed(MANIFEST_NAME, f"is larger than {MAX_MANIFEST_BYTES // 1024} KB")
    return parse_manifest(path.read_bytes(), package_dir)


def parse_manifest(raw: bytes | str | Mapping[str, Any], package_dir: Path) -> ManifestResult:
    """Validate manifest data (JSON text or already-parsed) against the files in package_dir."""
    if isinstance(raw, Mapping):
        data: Any = raw
    else:
        try:
            data = _decode_json(raw)
        except ValueError as exc:
            return _failed(MANIFEST_NAME, str(exc))
    if not isinstance(data, Mapping):
        return _failed(MANIFEST_NAME, "must be a JSON object")
    return FieldChecker(data, Path(package_dir)).run()


def _failed(field_name: str, message: str) -> ManifestResult:
    return ManifestResult(manifest=None, errors=(Issue(field_name, message),))


def _decode_json(raw: bytes | str) -> Any:
    if isinstance(raw, bytes):
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError(f"is larger than {MAX_MANIFEST_BYTES // 1024} KB")
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("is not valid UTF-8") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"the key {key!r} appears twice")
            result[key] = value
        return result

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ValueError("is nested too deeply") from None
