"""Whole-instance restore benchmark: `restore_instance` of a snapshot holding three appspaces
(the backups benchmark's ~310 MB mixed data set, split in three) into an empty instance (a new
PostgreSQL database and DS_DATA_DIR), against the baseline of the same run: restoring the same
three appspace archives one by one with the appspace restore's own steps (bench/backups.py
`restore_once`). The difference is the instance's own work: reading and checking the snapshot
(every checksum), the database (pg_restore + migrate) and the app versions.

Run as root with PostgreSQL: `make bench BENCH_ARGS=instance`. Scale with DS_BENCH_BACKUP_SCALE.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from bench.backups import du, generate, restore_once, settle, timed

APPSPACES = 3


def _dsn(name: str) -> str:
    conf = connection.settings_dict
    pw = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    user = conf.get("USER") or "postgres"
    host, port = conf.get("HOST") or "127.0.0.1", conf.get("PORT") or 5432
    return f"postgresql://{user}{pw}@{host}:{port}/{name}"


def _use(name: str, data_dir: Path) -> None:
    """Point this process at another database and DS_DATA_DIR."""
    connection.close()
    connection.settings_dict["NAME"] = name
    settings.DS_DATA_DIR = data_dir


def run(options) -> None:
    if connection.vendor != "postgresql":
        print("skipped: needs PostgreSQL (DATABASE_URL)")
        return
    scale = float(os.environ.get("DS_BENCH_BACKUP_SCALE", "1.0"))
    original = connection.settings_dict["NAME"]
    token = secrets.token_hex(4)
    names = [f"ds_bench_instance_src_{token}", f"ds_bench_instance_dst_{token}"]
    root = Path(tempfile.mkdtemp(prefix="ds-bench-instance-"))
    root.chmod(0o711)
    with psycopg.connect(_dsn("postgres"), autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        _run(root, names, scale)
    finally:
        _use(original, root)
        with psycopg.connect(_dsn("postgres"), autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, names: list[str], scale: float) -> None:
    from accounts.models import User
    from appspaces.models import App, Appspace, AppVersion
    from backups.instance.snapshot import instance_backup, instance_restore
    from backups.models import Backup
    from backups.services import backup_create

    src, dst = root / "src", root / "dst"
    for d in (src, dst):
        d.mkdir(mode=0o711)
    _use(names[0], src)
    call_command("migrate", verbosity=0)
    owner = User.objects.create_user("bench@example.com", "bench password 42")
    app = App.objects.create(owner=owner, name="Bench")
    version = AppVersion.objects.create(app=app, version="1.0.0", version_key="1.0.0",
                                        entrypoint="app.ts")  # fmt: skip
    files = version.files_dir
    files.mkdir(parents=True)
    (files / "app.ts").write_text("export {};\n")
    archives = []
    for i in range(APPSPACES):
        space = Appspace.objects.create(owner=owner, app=app, app_version=version,
                                        subdomain=f"bench{i}", status="active", disk_mb=4096,
                                        memory_mb=256, cpu_percent=50)  # fmt: skip
        generate(space.data_path, scale / APPSPACES, seed=7 + i)
        backup = backup_create(appspace=space, kind=Backup.Kind.MANUAL)
        archives.append((backup.path, space.sandbox_uid))
    count, size = du(src / "appspaces")
    print(f"data: {APPSPACES} appspaces, {count} files, {size / 1024**2:.0f} MB", flush=True)
    snap = root / "snapshot"
    t_backup, _ = timed(lambda: instance_backup(snap))
    _, snap_size = du(snap)
    print(f"backup_instance: {t_backup:.2f}s, snapshot {snap_size / 1024**2:.0f} MB", flush=True)
    settle()

    singles, wholes = [], []
    for run_no in range(2):  # alternate (a shared VM's disk drifts); medians
        work = root / f"one-by-one-{run_no}"
        work.mkdir()
        t0 = time.perf_counter()
        for j, (archive, uid) in enumerate(archives):
            (work / str(j)).mkdir()
            restore_once(archive, work / str(j), uid)
        singles.append(time.perf_counter() - t0)
        shutil.rmtree(work)
        settle()
        target = root / f"dst-{run_no}"
        target.mkdir(mode=0o711)
        _use(names[1], target)
        t, summary = timed(lambda: instance_restore(snap))
        assert len(summary["restored"]) == APPSPACES, summary
        wholes.append(t)
        call_command("flush", interactive=False, verbosity=0)
        shutil.rmtree(target)
        _use(names[0], src)
        settle()
    single, whole = statistics.median(singles), statistics.median(wholes)
    print(f"appspace archives restored one by one: {single:.2f}s (median; runs "
          f"{', '.join(f'{t:.2f}' for t in singles)})")  # fmt: skip
    print(f"restore_instance (checks, pg_restore, migrate, apps, {APPSPACES} appspaces): "
          f"{whole:.2f}s (median; runs {', '.join(f'{t:.2f}' for t in wholes)}); "
          f"ratio / one by one: {whole / single:.2f}")  # fmt: skip
