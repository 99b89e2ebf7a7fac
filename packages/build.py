"""Building an app package from a folder: the extraction rules applied in reverse.

A folder that `build_package` accepts becomes a deterministic `.tar.gz` (dropapp.json first,
then every entry sorted, mtime 0, uid/gid 0, modes 0644/0755), and the result is unpacked
once with `safe_extract` before it is kept, so a package built here is one the platform
installs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packages.extraction import (
    MANIFEST_NAME,
    ExtractionLimits,
    PackageError,
    remove_tree,
    safe_extract,
)
from packages.manifest import ManifestResult, load_manifest
from packages.paths import UnsafePath, clean_relative_path, collision_key

# Left out of packages without asking: version-control data and desktop litter.
SKIPPED_NAMES = frozenset({".git", ".hg", ".svn", ".DS_Store", "Thumbs.db"})
_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a device file",
    stat.S_IFBLK: "a device file",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class _SourceEntry:
    path: str  # clean, relative
    is_dir: bool
    source: Path
    size: int = 0


@dataclass
class BuildResult:
    manifest: ManifestResult
    errors: list[str] = field(default_factory=list)  # file problems (manifest's are in .manifest)
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    total_bytes: int = 0
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and self.manifest.ok


def collect_entries(
    source: Path, limits: ExtractionLimits, *, exclude: Path | None = None
) -> tuple[list[_SourceEntry], list[str], list[str]]:
    """Walk source without following links. -> (entries, errors, skipped)."""
    entries: list[_SourceEntry] = []
    errors: list[str] = []
    skipped: list[str] = []
    seen_keys: dict[str, str] = {}
    total = 0
    exclude_resolved = exclude.resolve() if exclude else None
    for folder, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(folder, name)
            rel_raw = os.fsdecode(full.relative_to(source))
            if name in SKIPPED_NAMES:
                skipped.append(rel_raw)
                if name in dirnames:
                    dirnames.remove(name)
                continue
            if exclude_resolved is not None and full.resolve() == exclude_resolved:
                continue
            try:
                rel = clean_relative_path(rel_raw)
            except UnsafePath as exc:
                errors.append(f"{rel_raw.encode('utf-8', 'backslashreplace').decode()!r} {exc}")
                continue
            info = os.lstat(full)
            kind = stat.S_IFMT(info.st_mode)
            if kind in _KINDS:
                errors.append(f"{rel!r} is {_KINDS[kind]}; packages may only contain files")
                if name in dirnames:
                    dirnames.remove(name)
                continue
            key = collision_key(rel)
            if limits.refuse_case_collisions and key in seen_keys:
                errors.append(
                    f"{seen_keys[key]!r} and {rel!r} differ only in upper/lower case "
                    "or Unicode form"
                )
                continue
            seen_keys[key] = rel
            if stat.S_ISDIR(info.st_mode):
                entries.append(_SourceEntry(rel, True, full))
                continue
            if info.st_size > limits.max_file_bytes:
                errors.append(f"{rel!r} is larger than {limits.max_file_bytes // 2**20} MB")
            total += info.st_size
            entries.append(_SourceEntry(rel, False, full, info.st_size))
    if len(entries) > limits.max_files:
        errors.append(f"the folder has more than {limits.max_files} files and folders")
    if total > limits.max_total_bytes:
        errors.append(f"the files add up to more than {limits.max_total_bytes // 2**20} MB")
    return entries, errors, skipped


def build_package(source: Path, output: Path, *, limits: ExtractionLimits) -> BuildResult:
    """Validate source and, if it is valid, write the package to output (atomically)."""
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise PackageError(f"{source} is not a folder.")
    manifest = load_manifest(source)
    entries, errors, skipped = collect_entries(source, limits, exclude=output)
    result = BuildResult(manifest=manifest, errors=errors, skipped=skipped)
    if not result.ok:
        return result
    entries.sort(key=lambda e: (e.path != MANIFEST_NAME, e.path))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_tar_gz(raw, entries)
        _check_installable(tmp, limits)
        tmp.chmod(0o644)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result.files = sum(1 for e in entries if not e.is_dir)
    result.total_bytes = sum(e.size for e in entries)
    result.sha256 = hashlib.sha256(output.read_bytes()).hexdigest()
    return result


def _write_tar_gz(raw, entries: list[_SourceEntry]) -> None:
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.mode = 0o644
            info.size = entry.size
            with open(entry.source, "rb") as f:
                tar.addfile(info, f)
                if f.read(1):
                    raise PackageError(f"{entry.path} changed while it was being packaged.")


def _check_installable(package: Path, limits: ExtractionLimits) -> None:
    with tempfile.TemporaryDirectory(prefix="ds-package-check-") as scratch:
        dest = Path(scratch, "files")
        safe_extract(package, dest, limits=limits)
        remove_tree(dest)
