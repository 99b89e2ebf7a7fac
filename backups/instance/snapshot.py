"""Whole-instance backups: everything needed to rebuild the instance on a fresh machine.

A snapshot is a folder (or a tar file of one) holding
    manifest.json                 format, when, engine, apps, appspaces, settings, checksums
    database.pgdump | .sqlite3    the whole database (backups/instance/database.py)
    apps/<app>/<version>/...      the installed app versions, as under DS_DATA_DIR/apps/
    archives/<appspace>/<file>    the latest verified backup archive of every appspace
`instance_backup` writes one under a temporary name and renames it when complete;
`instance_restore` checks every checksum and the dump before it changes anything, refuses a
non-empty instance unless forced, restores the database (then migrates), the app versions,
and every appspace's data through the verified restore path of backups/restore.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tarfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.utils import timezone

from appspaces.models import Appspace, data_dir
from backups.format.metadata import ArchiveError
from backups.instance import database as dbdump
from backups.instance import repository as instance_repo
from backups.models import Backup, InstanceBackup, backups_root
from backups.restore import RestoreError, restore_onto_new_host
from backups.services import BackupError, backup_create
from packages.extraction import remove_tree
from sandbox import access

FORMAT = 1
MANIFEST = "manifest.json"
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY")
_DATA_PARTS = ("apps", "appspaces", "backups")
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@")

Step = Callable[[str], None]


class InstanceError(Exception):
    """An instance backup or restore that was refused or failed; str() is for the operator,
    `summary` what a restore did before it failed (None if it changed nothing)."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


def _quiet(_text: str) -> None:
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:
                out[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
    return dict(sorted(out.items()))


def settings_snapshot(with_secrets: bool) -> dict:
    """The DS_* settings (and SECRET_KEY only when asked): what the new host should set."""
    out = {}
    for name in dir(settings):
        if not (name.startswith("DS_") or (with_secrets and name == "SECRET_KEY")):
            continue
        if not with_secrets and any(word in name for word in _SECRET_WORDS):
            continue
        value = getattr(settings, name)
        if not isinstance(value, (str, int, float, bool, type(None))):
            value = str(value)
        if isinstance(value, str) and not with_secrets:
            value = _USERINFO.sub(r"\1[redacted]@", value)  # sftp://user:pw@host, rest:...
        out[name] = value
    return out


# --- Backup -----------------------------------------------------------------------------------


def _latest_archive(appspace: Appspace, fresh: timedelta, step: Step, warnings: list[str]):
    """The newest verified backup; a new one first if that is older than `fresh`."""

    ready = Backup.objects.filter(appspace=appspace, state=Backup.State.READY)
    latest = ready.exclude(verified_at=None).order_by("-created").first()
    too_old = latest is None or latest.created < timezone.now() - fresh
    if too_old and appspace.status in (Appspace.Status.ACTIVE, Appspace.Status.PAUSED):
        step(f"Backing up {appspace.subdomain}")
        try:
            return backup_create(appspace=appspace, kind=Backup.Kind.SCHEDULED)
        except BackupError as exc:
            warnings.append(f"{appspace.subdomain}: a new backup failed ({exc}); kept an older one")
    if latest is None:
        warnings.append(f"{appspace.subdomain}: no verified backup; its data is not included")
    return latest


def instance_backup(
    to: Path | None = None, *, with_secrets: bool = False, step: Step = _quiet
) -> dict:
    """Write a snapshot of the whole instance to `to` (a new folder, or a .tar file), or with
    no `to` into the configured repository; returns the manifest. Raises InstanceError; then
    nothing is left at `to`."""

    send = None
    if to is None:
        try:
            instance_repo.repository()
        except instance_repo.RepositoryUnavailable as exc:
            raise InstanceError(str(exc)) from None
        to = instance_repo.staging_folder()
        if to.exists():
            remove_tree(to)  # left by an interrupted run
        send = instance_repo.send
    to = Path(to)
    as_tar = to.suffix == ".tar"
    if to.exists() and (as_tar or any(to.iterdir())):
        raise InstanceError(f"{to} already exists and is not empty; give a new path.")
    if not to.parent.is_dir():
        raise InstanceError(f"{to.parent} is not a folder.")
    stage = to.with_name(f".{to.name}.partial-{secrets.token_hex(4)}")
    record = InstanceBackup.objects.create(target=str(to))
    try:
        stage.mkdir(mode=0o700)
        manifest = _write_snapshot(stage, with_secrets, step)
        if as_tar:
            step("Writing the tar file")
            tmp = to.with_name(f".{to.name}.tmp-{secrets.token_hex(4)}")
            with tarfile.open(tmp, "w") as tar:
                tar.add(stage, arcname=".")
            os.chmod(tmp, 0o600)
            os.rename(tmp, to)
            remove_tree(stage)
        else:
            if to.exists():
                to.rmdir()
            os.rename(stage, to)
        if send is not None:
            step("Sending the snapshot to the repository")
            record.snapshot = send(to)
            record.target = f"repository snapshot {record.snapshot[:8]}"
            manifest["repository"] = record.target
    except BaseException as exc:
        remove_tree(stage)
        if send is not None:
            remove_tree(to)
        for leftover in to.parent.glob(f".{to.name}.tmp-*"):
            leftover.unlink(missing_ok=True)
        known = (InstanceError, dbdump.DumpError, OSError, instance_repo.RepositoryUnavailable)
        message = str(exc) if isinstance(exc, known) else ""
        record.fail(message or "The instance backup failed (see the log).")
        if isinstance(exc, (dbdump.DumpError, instance_repo.RepositoryUnavailable)):
            raise InstanceError(str(exc)) from None
        if isinstance(exc, OSError):
            raise InstanceError(f"The instance backup could not be written: {exc}") from None
        raise
    size = sum(f["size"] for f in manifest["files"].values())
    if send is not None:
        remove_tree(to)
    record.done(size=size, appspaces=len(manifest["appspaces"]), warnings=manifest["warnings"])
    if send is not None:
        step("Forgetting instance snapshots the retention policy no longer keeps")
        try:
            instance_repo.retention()
        except instance_repo.RepositoryUnavailable as exc:  # the snapshot itself is safe
            manifest["warnings"].append(str(exc))
    return manifest


def _write_snapshot(stage: Path, with_secrets: bool, step: Step) -> dict:
    warnings: list[str] = []
    fresh = timedelta(minutes=settings.DS_BACKUP_INSTANCE_FRESH_MINUTES)
    appspaces = []
    for appspace in Appspace.objects.select_related("app", "app_version", "owner").order_by("pk"):
        backup = _latest_archive(appspace, fresh, step, warnings)
        entry = {
            "public_id": str(appspace.public_id),
            "subdomain": appspace.subdomain,
            "owner": appspace.owner.get_username(),
            "app": str(appspace.app.public_id),
            "version": appspace.app_version.version,
            "backup": str(backup.public_id) if backup else None,
        }
        if backup is not None:
            dest = stage / "archives" / str(appspace.public_id)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(backup.path, dest / backup.file_name)
            entry["archive"] = f"archives/{appspace.public_id}/{backup.file_name}"
        appspaces.append(entry)
    step("Copying the installed app versions")
    apps_dir = data_dir() / "apps"
    apps = []
    if apps_dir.is_dir():
        shutil.copytree(apps_dir, stage / "apps", symlinks=True)
        apps = sorted(p.relative_to(apps_dir).as_posix() for p in apps_dir.glob("*/*"))
    step("Dumping the database")
    dump = dbdump.dump_database(stage)  # last: it holds the backups taken above
    manifest = {
        "format": FORMAT,
        "kind": "dropserver-instance",
        "created": timezone.now().isoformat(),
        "engine": connection.vendor,
        "database": dump,
        "apps": apps,
        "appspaces": appspaces,
        "users": get_user_model().objects.count(),
        "settings": settings_snapshot(with_secrets),
        "with_secrets": with_secrets,
        "warnings": warnings,
        "files": _files(stage),
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def instance_backup_due() -> str:
    """The schedule: every DS_BACKUP_INSTANCE_HOURS a snapshot into DS_BACKUP_INSTANCE_DIR, or
    with no folder set into the configured repository (where retention then applies)."""
    hours, folder = settings.DS_BACKUP_INSTANCE_HOURS, settings.DS_BACKUP_INSTANCE_DIR
    to_repository = bool(
        settings.DS_BACKUP_REPOSITORY and settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE
    )
    if hours <= 0 or not (folder or to_repository):
        return "off"
    since = timezone.now() - timedelta(hours=hours)
    if InstanceBackup.objects.filter(state=InstanceBackup.State.READY, created__gte=since):
        return "not due"
    to = Path(folder) / f"instance-{timezone.now():%Y%m%dT%H%M%S}" if folder else None
    try:
        manifest = instance_backup(to)
    except InstanceError as exc:
        return f"failed: {exc}"
    return str(to) if to else manifest["repository"]


# --- Restore ----------------------------------------------------------------------------------


def instance_nonempty() -> list[str]:
    """Why this instance is not empty (users, appspaces, files under DS_DATA_DIR); [] if it is."""
    reasons = []
    try:
        tables = connection.introspection.table_names()
        user_table = get_user_model()._meta.db_table
        if user_table in tables and get_user_model().objects.exists():
            reasons.append(f"{get_user_model().objects.count()} user(s) in the database")
        if Appspace._meta.db_table in tables and Appspace.objects.exists():
            reasons.append(f"{Appspace.objects.count()} appspace(s) in the database")
    except DatabaseError:
        pass  # no database yet: empty
    for part in _DATA_PARTS:
        folder = data_dir() / part
        if folder.is_dir() and any(folder.iterdir()):
            reasons.append(f"files under {folder}")
    return reasons


def open_snapshot(source: Path, scratch: Path) -> Path:
    """The snapshot's folder: `source` itself, or a tar file unpacked into scratch."""
    source = Path(source)
    if source.is_dir():
        return source
    if not source.is_file():
        raise InstanceError(f"{source} does not exist.")
    try:
        with tarfile.open(source, "r:*") as tar:
            tar.extractall(scratch, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InstanceError(f"{source} is not a readable instance snapshot: {exc}") from None
    return scratch


def read_manifest(root: Path) -> dict:
    """The manifest, after every file it lists was checked against its checksum."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise InstanceError("This is not an instance snapshot: manifest.json is missing.") from None
    except (ValueError, UnicodeDecodeError):
        raise InstanceError("The snapshot's manifest.json is damaged (not JSON).") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "dropserver-instance":
        raise InstanceError("The snapshot's manifest.json is not an instance manifest.")
    if manifest.get("format") != FORMAT:
        raise InstanceError(f"Unknown snapshot format {manifest.get('format')!r}.")
    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("database") not in files:
        raise InstanceError("The snapshot's manifest.json lists no database dump.")
    for rel, info in files.items():
        path = root / rel
        if ".." in Path(rel).parts or not path.is_file() or path.is_symlink():
            raise InstanceError(f"The snapshot is incomplete: {rel} is missing.")
        if not isinstance(info, dict) or _sha256(path) != info.get("sha256"):
            raise InstanceError(f"The snapshot is damaged: {rel} does not match its checksum.")
    return manifest


def instance_restore(
    source: Path | str | None = None, *, force: bool = False, step: Step = _quiet
) -> dict:
    """Rebuild this instance from a snapshot (a folder, a tar file, or a snapshot id of the
    configured repository: the latest if None); returns a summary. Raises InstanceError: before
    the database is touched nothing has changed; after, the summary names what failed."""

    scratch = data_dir() / f".instance-restore-{secrets.token_hex(4)}"
    if not force:
        reasons = instance_nonempty()
        if reasons:
            raise InstanceError(
                "This instance is not empty (" + "; ".join(reasons) + "). Restore into a fresh "
                "instance, or add --force to replace what is here."
            )
    data_dir().mkdir(parents=True, exist_ok=True)
    try:
        step("Checking the snapshot")
        if source is None or not Path(source).exists() and "/" not in str(source):
            try:
                root = instance_repo.fetch(str(source) if source else None, scratch)
            except instance_repo.RepositoryUnavailable as exc:
                raise InstanceError(str(exc)) from None
        else:
            root = open_snapshot(Path(source), scratch)
        manifest = read_manifest(root)
        dump = root / manifest["database"]
        try:
            dbdump.check_dump(dump)
            step("Restoring the database")
            dbdump.restore_database(dump)
        except dbdump.DumpError as exc:
            raise InstanceError(str(exc)) from None
        call_command("migrate", interactive=False, verbosity=0)
        step("Restoring the app versions")
        _put_apps(root)
        return _restore_appspaces(root, manifest, step)
    finally:
        remove_tree(scratch)


def _put_apps(root: Path) -> None:
    apps_dir = data_dir() / "apps"
    apps_dir.mkdir(mode=0o755, exist_ok=True)
    if not (root / "apps").is_dir():
        return
    for app in (root / "apps").iterdir():
        dest = apps_dir / app.name
        if dest.exists():
            remove_tree(dest)
        tmp = apps_dir / f".{app.name}.tmp-{secrets.token_hex(4)}"
        shutil.copytree(app, tmp, symlinks=True)
        os.rename(tmp, dest)


def _appspace_folders(appspace: Appspace) -> None:
    """appspaces/<id>/ (traversable) and meta/ (platform:uid 0750), as creation lays them out; the
    restore puts data/ in place itself."""
    appspace.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    appspace.path.mkdir(mode=0o711, exist_ok=True)
    appspace.meta_path.mkdir(mode=0o750, exist_ok=True)
    for folder in (appspace.path.parent, appspace.path):
        access.give_to_platform(folder)
    if os.geteuid() == 0:
        os.chown(appspace.meta_path, access.platform_uid(), appspace.sandbox_uid)


def _restore_appspaces(root: Path, manifest: dict, step: Step) -> dict:

    archives = {a["public_id"]: a for a in manifest["appspaces"] if a.get("archive")}
    restored, failed = [], {}
    for appspace in Appspace.objects.select_related("app", "app_version").order_by("pk"):
        key = str(appspace.public_id)
        _appspace_folders(appspace)
        entry = archives.get(key)
        if entry is None:
            failed[appspace.subdomain] = "no backup of its data was in the snapshot"
            continue
        folder = backups_root() / key
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / Path(entry["archive"]).name
        shutil.copyfile(root / entry["archive"], target)
        os.chmod(target, 0o600)
        step(f"Restoring the data of {appspace.subdomain}")
        backup = Backup.objects.filter(public_id=entry["backup"], appspace=appspace).first()
        try:
            if backup is None:
                raise RestoreError("its backup is not in the database dump")
            restore_onto_new_host(appspace=appspace, backup=backup)
            restored.append(appspace.subdomain)
        except (RestoreError, ArchiveError, OSError) as exc:
            failed[appspace.subdomain] = str(exc)
    # Archives that stayed on the old machine are gone; their rows would point at nothing.
    gone = [b.pk for b in Backup.objects.select_related("appspace") if not b.path.is_file()]
    Backup.objects.filter(pk__in=gone).delete()
    summary = {
        "restored": restored,
        "failed": failed,
        "users": get_user_model().objects.count(),
        "apps": manifest.get("apps", []),
        "snapshot_created": manifest.get("created"),
        "warnings": manifest.get("warnings", []),
    }
    if failed:
        names = ", ".join(f"{k} ({v})" for k, v in failed.items())
        raise InstanceError(
            f"The database and apps were restored, but not the data of: {names}.", summary
        )
    return summary
