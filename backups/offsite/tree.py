"""The off-site copy as a file tree, so restic deduplicates across versions and skips what did
not change.

A backup archive is a zstd stream: restic cannot skip an unchanged file inside a new archive,
it reads and chunks all of it, and one changed file changes the compressed bytes after it. So
each appspace's off-site copy is sent as the tree the archive holds:

    DS_DATA_DIR/backups/.offsite/<appspace>/tree/dropserver-backup.json   the archive's metadata
    DS_DATA_DIR/backups/.offsite/<appspace>/tree/data/...                 its files
    DS_DATA_DIR/backups/.offsite/<appspace>/backup                        which backup it holds

The tree is updated from the backup's own staging copy (the files just hashed into its
metadata, moved in rather than deleted) or, when it holds another backup, from the archive
through the verified unpack path (`extract_archive`). Only files whose SHA-256 differs from the
tree's previous metadata are replaced: the others keep their inode and times, which is how
restic (finding the previous snapshot of the same path as its parent) knows to skip them. The
metadata file is removed first and written last, so an interrupted update is seen as "holds
nothing" and the next one replaces every file.

A restore takes the snapshot's tree back with `restic restore`, refuses anything in it that is
not a plain file or folder, and writes it as an archive (`write_archive`) which the caller then
verifies and restores like any other: the same verified path as local archives.

Costs: the tree is one more copy of each appspace's latest backup, uncompressed, on the disk
holding backups (kept only while an off-site repository is configured).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from backups.format.archive import extract_archive, read_metadata, write_archive
from backups.format.metadata import DATA, META_NAME, ArchiveError, FileRecord, Metadata
from backups.models import backups_root
from packages.extraction import remove_tree

TAG = "format=tree"


def root() -> Path:
    return backups_root() / ".offsite"


def folder(key: str) -> Path:
    return root() / key


def tree_dir(key: str) -> Path:
    return folder(key) / "tree"


def held(key: str) -> str:
    """The public id of the backup the tree holds ("" if none, or an update was cut short)."""
    try:
        marker = (folder(key) / "backup").read_text().strip()
    except OSError:
        return ""
    return marker if (tree_dir(key) / META_NAME).is_file() else ""


@contextmanager
def locked(key: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the tree's lock (an upload reads it, an update changes it); yields False when
    `wait` is off and someone else holds it."""
    folder(key).mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root(), 0o700)
    fd = os.open(folder(key) / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def update(key: str, backup_id: str, source: Path, meta: Metadata) -> None:
    """Make the tree hold `source` (a folder of `meta`'s files and folders, on the same file
    system: its changed files are moved, not copied). Call with the lock held."""
    tree = tree_dir(key)
    tree.mkdir(mode=0o700, parents=True, exist_ok=True)
    old: dict[str, FileRecord] = {}
    with suppress(OSError, ArchiveError):
        old = {f.path: f for f in Metadata.from_json((tree / META_NAME).read_bytes()).files}
    (tree / META_NAME).unlink(missing_ok=True)  # from here on the tree holds nothing complete
    (folder(key) / "backup").unlink(missing_ok=True)
    new = {f.path: f for f in meta.files}
    folders = set(meta.folders)
    data = tree / DATA
    data.mkdir(mode=0o700, exist_ok=True)
    for parent, dirnames, filenames in os.walk(data, topdown=False):
        base = os.path.relpath(parent, data)
        for name in filenames:
            rel = name if base == "." else f"{base}/{name}"
            record, before = new.get(rel), old.get(rel)
            path = Path(parent, name)
            st = path.lstat()
            if (
                record is None
                or before is None
                or before.sha256 != record.sha256
                or st.st_size != record.size
                or not stat.S_ISREG(st.st_mode)
            ):
                path.unlink()
        for name in dirnames:
            rel = name if base == "." else f"{base}/{name}"
            path = Path(parent, name)
            if rel not in folders or path.is_symlink():
                remove_tree(path)
    for rel in sorted(folders):
        (data / rel).mkdir(mode=0o700, parents=True, exist_ok=True)
    for rel in new:
        target = data / rel
        if not os.path.lexists(target):
            os.rename(source / rel, target)
    tmp = tree / f".{META_NAME}.tmp"
    tmp.write_bytes(meta.to_json())
    os.rename(tmp, tree / META_NAME)
    marker = folder(key) / ".backup.tmp"
    marker.write_text(backup_id + "\n")
    os.rename(marker, folder(key) / "backup")


def update_from_archive(key: str, backup_id: str, archive: Path) -> None:
    """Bring the tree to the archive's content through the verified unpack path (every file
    checked against the metadata), when the tree holds another backup. Lock held."""
    meta = read_metadata(archive)
    scratch = folder(key) / ".extract"
    remove_tree(scratch)
    try:
        extract_archive(archive, scratch, max_total_bytes=meta.total_bytes)
        update(key, backup_id, scratch / DATA, meta)
    finally:
        remove_tree(scratch)


def remove(key: str) -> None:
    remove_tree(folder(key))


def to_archive(restored: Path, dest: Path) -> Metadata:
    """Write the tree restored from a snapshot (`restored`: its dropserver-backup.json and
    data/) as the archive `dest`, for the verified restore path. Raises ArchiveError when the
    tree holds anything but plain files and folders, or lacks a listed file."""
    try:
        meta = Metadata.from_json((restored / META_NAME).read_bytes())
    except OSError:
        raise ArchiveError(f"The off-site snapshot has no {META_NAME}.") from None
    data = restored / DATA
    for parent, dirnames, filenames in os.walk(data):
        for name in dirnames + filenames:
            mode = os.lstat(os.path.join(parent, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArchiveError(f"The off-site snapshot holds {name!r}, not a plain file.")
    files = []
    for record in meta.files:
        try:
            st = os.lstat(data / record.path)
        except OSError:
            raise ArchiveError(f"The off-site snapshot lacks {record.path!r}.") from None
        files.append(dataclasses.replace(record, mtime=st.st_mtime))
    meta = dataclasses.replace(meta, files=files)
    write_archive(source=data, dest=dest, metadata=meta)
    return meta
