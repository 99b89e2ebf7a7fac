"""Whole-instance backup and restore: the disaster-recovery drill (a second, empty instance with
its own database and DS_DATA_DIR, in subprocesses) and the refusals (non-empty target, damaged
snapshot) that must leave the target as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import call_command
from django.db import connection

from appspaces.models import Appspace
from backups.instance.snapshot import (
    InstanceError,
    instance_backup,
    instance_restore,
    read_manifest,
)
from backups.models import InstanceBackup
from packages.extraction import remove_tree
from tests.backups.conftest import fill, tree_hashes
from tests.backups.sshd import listeners
from tests.conftest import PASSWORD, make_user
from tests.sandbox.fixtures import host_lacks

BASE_DIR = Path(__file__).resolve().parents[2]


def _admin_dsn(name: str = "postgres") -> str:
    conf = connection.settings_dict
    host = conf.get("HOST") or "127.0.0.1"
    port = conf.get("PORT") or 5432
    user = conf.get("USER") or "postgres"
    pw = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    return f"postgresql://{user}{pw}@{host}:{port}/{name}"


@pytest.fixture
def second_instance(data_root, settings):
    """A fresh, empty instance: a new PostgreSQL database and a new DS_DATA_DIR."""
    if connection.vendor != "postgresql":
        host_lacks("the drill's second instance is a PostgreSQL database (TEST_DATABASE_URL)")
    # Named after this worker's test database, so two xdist workers never share it.
    dr_db = f"{connection.settings_dict['NAME']}_drill"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dr_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dr_db}"')
    data = Path(tempfile.mkdtemp(prefix="data-dr-", dir=data_root))
    data.chmod(0o711)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=_admin_dsn(dr_db),
        DS_DATA_DIR=str(data),
        DS_SANDBOX_UID_BASE=str(settings.DS_SANDBOX_UID_BASE),
    )
    yield env, data
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dr_db}" WITH (FORCE)')


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def use_repository(
    tmp_path: Path, settings, env: dict, password: str = "drill pw", sshd=None
) -> Path:
    """A real restic repository on this machine, for this instance and the second one: a local
    folder, or with `sshd` (tests/backups/sshd.py) a folder reached over SFTP on loopback, with
    the server's host key pinned in a known_hosts file as an admin configures it."""
    repo = (sshd.home if sshd else tmp_path) / "repo"
    location = sshd.location(repo) if sshd else str(repo)
    pw = tmp_path / "repo-password"
    pw.write_text("drill pw\n")
    settings.DS_BACKUP_REPOSITORY = location
    settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE = str(pw)
    other_pw = tmp_path / "repo-password-2"
    other_pw.write_text(password + "\n")
    env.update(DS_BACKUP_REPOSITORY=location, DS_BACKUP_REPOSITORY_PASSWORD_FILE=str(other_pw))
    if sshd:
        ssh = {"DS_BACKUP_SSH_KEY_FILE": str(sshd.client_key)}
        ssh["DS_BACKUP_SSH_KNOWN_HOSTS"] = str(sshd.known_hosts)
        for name, value in ssh.items():
            setattr(settings, name, value)
        env.update(ssh)
    return repo


_CHECK = """
import json, os, sys
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from django.urls import reverse
from accounts.models import User
from appspaces.models import Appspace
out = {"logins": {}, "appspaces": {}}
for email in sys.argv[1:]:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    r = client.post(reverse("account_login"), {"login": email, "password": os.environ["PW"]})
    out["logins"][email] = r.status_code == 302 and "_auth_user_id" in client.session
for a in Appspace.objects.select_related("app_version"):
    out["appspaces"][a.subdomain] = {
        "data": str(a.data_path), "uid": a.sandbox_uid, "version": a.app_version.version,
        "files": a.app_version.files_dir.is_dir(), "status": a.status,
    }
print(json.dumps(out))
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["folder", "tar", "repository", "sftp"])
def test_the_drill_rebuilds_every_user_app_and_appspace_on_an_empty_instance(
    ds_data_dir, make_appspace, second_instance, tmp_path, where, settings, request
):
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    # The suite hashes with MD5 for speed; the second instance runs the real settings.
    hasher = PBKDF2PasswordHasher()
    for user in (alice, bob):
        user.password = hasher.encode(PASSWORD, hasher.salt())
        user.save(update_fields=["password"])
    files = {"app.ts": "export default {};\n"}
    notes = make_appspace(alice, app_files=files, app_name="Notes", schema=1)
    notes2 = make_appspace(bob, app=notes.app, schema=1)
    tasks = make_appspace(bob, app_files=files, app_name="Tasks", version="2.0.0")
    contents = {
        notes: {"a.txt": "alpha", "deep/b.bin": os.urandom(4096)},
        notes2: {"x.txt": "bob's notes"},
        tasks: {"tasks.json": json.dumps([{"t": "buy milk"}])},
    }
    for space, data in contents.items():
        fill(space, data)
    before = {s.subdomain: tree_hashes(s.data_path) for s in contents}

    env, new_data = second_instance
    if where in ("repository", "sftp"):
        # sftp: a real sshd on a loopback port (tests/backups/sshd.py), nothing else listening.
        sshd = request.getfixturevalue("sshd") if where == "sftp" else None
        if sshd is not None:
            assert listeners(sshd.proc.pid) == [f"127.0.0.1:{sshd.port}"]
        repo = use_repository(tmp_path, settings, env, sshd=sshd)
        call_command("backup_instance")
        assert not (ds_data_dir / ".instance-backup").exists()
        assert any((repo / "snapshots").iterdir())
        if sshd is not None:  # it went through the server: sshd logged the key's logins
            assert "Accepted publickey for" in sshd.log.read_text()
        args = []
    else:
        target = tmp_path / ("snap.tar" if where == "tar" else "snap")
        call_command("backup_instance", "--to", str(target))
        args = [str(target)]
    record = InstanceBackup.objects.get()
    assert record.state == "ready" and record.appspace_count == 3 and record.size_bytes > 0

    result = manage(env, "restore_instance", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert sorted(summary["restored"]) == sorted(before) and summary["failed"] == {}

    check = subprocess.run(
        [sys.executable, "-c", _SHELL, "alice@example.com", "bob@example.com"],
        env={**env, "PW": PASSWORD, "DJANGO_SETTINGS_MODULE": "dropserver_site.settings"},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    state = json.loads(check.stdout.strip().splitlines()[-1])
    assert state["logins"] == {"alice@example.com": True, "bob@example.com": True}
    for subdomain, hashes in before.items():
        restored = state["appspaces"][subdomain]
        data = Path(restored["data"])
        assert data.is_relative_to(new_data)
        assert tree_hashes(data) == hashes
        assert data.stat().st_uid == restored["uid"]  # owned by the appspace's own uid
        assert restored["files"] and restored["status"] == Appspace.Status.ACTIVE
    assert state["appspaces"][tasks.subdomain]["version"] == "2.0.0"


_SHELL = "import django; django.setup()\n" + _CHECK


@pytest.mark.django_db(transaction=True)
def test_a_non_empty_instance_is_refused_unless_forced(ds_data_dir, make_appspace, tmp_path):
    alice = make_user("alice@example.com")
    space = make_appspace(alice)
    fill(space, {"a.txt": "alpha"})
    instance_backup(tmp_path / "snap")
    fill(space, {"a.txt": "changed after the snapshot"})
    with pytest.raises(InstanceError, match=r"not empty \(1 user\(s\).*--force"):
        instance_restore(tmp_path / "snap")
    assert (space.data_path / "a.txt").read_text() == "changed after the snapshot"

    result = instance_restore(tmp_path / "snap", force=True)
    assert result["restored"] == [space.subdomain]
    assert (space.data_path / "a.txt").read_text() == "alpha"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "damage, message",
    [
        ("dump", "database.pgdump does not match its checksum"),
        ("manifest", "manifest.json is damaged"),
        ("archive", "does not match its checksum"),
        ("missing", "is missing"),
    ],
)
def test_a_damaged_snapshot_is_refused_before_anything_changes(
    ds_data_dir, make_appspace, tmp_path, damage, message, second_instance
):
    if connection.vendor != "postgresql":
        host_lacks("checks the pg dump (TEST_DATABASE_URL)")
    alice = make_user("alice@example.com")
    space = make_appspace(alice)
    fill(space, {"a.txt": "alpha"})
    snap = tmp_path / "snap"
    instance_backup(snap)
    manifest = read_manifest(snap)
    archive = snap / next(a["archive"] for a in manifest["appspaces"])
    if damage == "dump":
        with open(snap / "database.pgdump", "r+b") as fh:
            fh.seek(200)
            fh.write(b"\0" * 64)
    elif damage == "manifest":
        (snap / "manifest.json").write_text('{"kind": "dropserver-inst')
    elif damage == "archive":
        archive.write_bytes(archive.read_bytes()[:-10])
    else:
        archive.unlink()

    env, new_data = second_instance
    result = manage(env, "restore_instance", str(snap), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in json.loads(result.stdout)["error"]
    # Nothing restored into the new DS_DATA_DIR (startup makes logs/, run/, secret_key).
    runtime = ("logs", "run", "secret_key", "metrics")  # the process's own, not restored data
    assert not [p.name for p in new_data.iterdir() if p.name not in runtime]
    with psycopg.connect(env["DATABASE_URL"]) as conn:  # no table was created
        assert (
            conn.execute("select count(*) from pg_tables where schemaname='public'").fetchone()[0]
            == 0
        )

    plain = manage(env, "restore_instance", str(snap))
    assert plain.returncode != 0 and "Traceback" not in plain.stderr and message in plain.stderr


@pytest.mark.django_db
def test_backup_refuses_an_existing_target_and_keeps_no_secrets(ds_data_dir, tmp_path, settings):
    settings.DS_BACKUP_INSTANCE_DIR = "sftp://backup:hunter2-secret@127.0.0.1/instance"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InstanceError, match="not empty"):
        instance_backup(tmp_path / "full")
    manifest = instance_backup(tmp_path / "snap")
    assert "SECRET_KEY" not in manifest["settings"]
    assert manifest["settings"]["DS_DOMAIN"] == settings.DS_DOMAIN
    written = (tmp_path / "snap" / "manifest.json").read_text()
    assert settings.SECRET_KEY not in written and "hunter2-secret" not in written
    assert manifest["settings"]["DS_BACKUP_INSTANCE_DIR"] == "sftp://[redacted]@127.0.0.1/instance"
    with_secrets = instance_backup(tmp_path / "snap2", with_secrets=True)
    assert with_secrets["settings"]["SECRET_KEY"] == settings.SECRET_KEY
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.django_db
def test_the_schedule_backs_up_when_due_and_admins_see_the_result(
    ds_data_dir, tmp_path, settings, admin_user, logged_in
):
    from django.urls import reverse

    from backups.tasks import instance_backup_scheduled

    assert instance_backup_scheduled() == "off"
    settings.DS_BACKUP_INSTANCE_HOURS = 24
    settings.DS_BACKUP_INSTANCE_DIR = str(tmp_path)
    made = Path(instance_backup_scheduled())
    assert read_manifest(made)["kind"] == "dropserver-instance"
    assert instance_backup_scheduled() == "not due"
    page = logged_in(admin_user).get(reverse("admin:backup_health")).content.decode()
    assert "Whole-instance backup" in page and "ready" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("damage", ["wrong-password", "corrupted", "no-snapshot"])
def test_a_repository_that_cannot_give_the_snapshot_is_a_clear_error(
    ds_data_dir, make_appspace, second_instance, tmp_path, settings, damage
):
    env, new_data = second_instance
    alice = make_user("alice@example.com")
    fill(make_appspace(alice), {"a.txt": "alpha"})
    repo = use_repository(
        tmp_path, settings, env, "not the password" if damage == "wrong-password" else "drill pw"
    )
    instance_backup()
    if damage == "corrupted":
        for pack in (repo / "data").rglob("*"):
            if pack.is_file():
                data = bytearray(pack.read_bytes())
                data[len(data) // 2] ^= 0xFF
                pack.write_bytes(bytes(data))
    args = ["deadbeef"] if damage == "no-snapshot" else []
    result = manage(env, "restore_instance", *args, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    error = json.loads(result.stdout)["error"]
    expected = {
        "wrong-password": "password",
        "corrupted": "could not be read",
        "no-snapshot": "holds no snapshot deadbeef",
    }[damage]
    assert expected in error.lower() or expected in error
    assert "drill pw" not in result.stdout + result.stderr
    assert not [p.name for p in new_data.iterdir() if p.name in ("apps", "appspaces", "backups")]
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname='public'")
        assert tables.fetchone()[0] == 0


PAGE_APP = """
import { createApp } from "@dropserver/app";
createApp({
  routes: [{
    method: "GET", path: "/", auth: "public",
    handler: async (ctx) =>
      new Response(VERSION + ":" + await Deno.readTextFile(`${ctx.dataPath}/page.txt`)),
  }],
});
"""


def _page_app(supervisor, owner, name: str, version: str):
    """A real app version, laid out and warmed in a real sandbox (its routes read from it)."""
    from appspaces.models import App, AppVersion
    from tests.sandbox.fixtures import lay_out_app

    laid = lay_out_app({"app.ts": f'const VERSION = "{version}";\n' + PAGE_APP}, version=version)
    warmed = supervisor.client.run_once(
        laid.job_spec(uid=settings.DS_SANDBOX_UID_BASE + 999), "warm"
    )
    assert warmed.ok, warmed
    app = App.objects.create(public_id=laid.app_id, owner=owner, name=name)
    AppVersion.objects.create(
        app=app,
        version=version,
        version_key=version,
        manifest={"name": name, "version": version},
        routes=warmed.result["routes"],
        entrypoint="app.ts",
    )
    return app


def _get(port: int, host: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/", headers={"Host": f"{host}:{port}"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_restored_appspaces_run_their_app_versions_and_serve_their_data_on_the_new_host(
    ds_data_dir, make_appspace, supervisor, second_instance, tmp_path
):
    import secrets
    import signal

    from tests.sandbox.fixtures import REPO, Supervisor, free_port, poll

    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    pages = _page_app(supervisor, alice, "Pages", "1.0.0")
    other = _page_app(supervisor, bob, "Other", "2.0.0")
    spaces = {
        make_appspace(alice, app=pages, version="1.0.0"): "alice's page",
        make_appspace(bob, app=pages, version="1.0.0"): "bob's page",
        make_appspace(bob, app=other, version="2.0.0"): "bob's other page",
    }
    for space, text in spaces.items():
        fill(space, {"page.txt": text})
    instance_backup(tmp_path / "snap.tar")

    env, new_data = second_instance
    result = manage(env, "restore_instance", str(tmp_path / "snap.tar"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr

    canary = "canary-" + secrets.token_hex(8)
    sup_env = {**env, "PYTHONPATH": str(REPO), "DS_TEST_CANARY": canary}
    sup_log = tmp_path / "supervisor-2.log"
    with open(sup_log, "wb") as log:
        sup_proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox"], cwd=REPO, env=sup_env, stdout=log, stderr=log
        )
    new_supervisor = Supervisor(sup_proc, new_data, sup_log, canary)
    port = free_port()
    web_log = tmp_path / "daphne-2.log"
    daphne = None
    try:
        new_supervisor.wait_ready()
        with open(web_log, "wb") as log:
            daphne = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "dropserver_site.asgi:application",
                ],  # fmt: skip
                cwd=REPO,
                env={**sup_env, "DS_PORT": str(port)},
                stdout=log,
                stderr=log,
            )
        poll(lambda: _reachable(port), timeout=60, interval=0.2)
        for space, text in spaces.items():
            status, body = _get(port, f"{space.subdomain}.{settings.DS_DOMAIN}")
            assert status == 200, (status, body, web_log.read_text(errors="replace")[-2000:])
            assert body == f"{space.app_version.version}:{text}"
    finally:
        if daphne is not None and daphne.poll() is None:
            daphne.send_signal(signal.SIGTERM)
            daphne.wait(15)
        new_supervisor.stop()
        for base in new_supervisor.cgroup_dirs():
            from tests.sandbox.fixtures import _remove_cgroup_tree

            _remove_cgroup_tree(base)


def _reachable(port: int) -> bool:
    try:
        return _get(port, "nosuch.localhost")[0] == 404
    except OSError:
        return False


def test_an_sqlite_instance_round_trips_through_a_tar_file(data_root, tmp_path):
    """The embedded defaults (SQLite in DS_DATA_DIR): online backup API out, copy back in."""
    dirs = []
    for name in ("old", "new"):
        path = Path(tempfile.mkdtemp(prefix=f"data-{name}-", dir=data_root))
        path.chmod(0o711)
        dirs.append(path)
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    old, new = ({**base, "DS_DATA_DIR": str(d)} for d in dirs)
    assert manage(old, "migrate", "-v0").returncode == 0
    made = manage(old, "shell", "-c", "from accounts.models import User; "
                  "User.objects.create_user('s@example.com', 'pw pw pw 123')")  # fmt: skip
    assert made.returncode == 0, made.stderr
    snap = tmp_path / "snap.tar"
    assert manage(old, "backup_instance", "--to", str(snap)).returncode == 0
    restored = manage(new, "restore_instance", str(snap), "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["users"] == 1
    again = manage(new, "restore_instance", str(snap))
    assert again.returncode == 1 and "not empty (1 user(s)" in again.stderr
    assert "Traceback" not in again.stderr
    check = manage(new, "shell", "-c", "from accounts.models import User; "
                   "print(User.objects.get().check_password('pw pw pw 123'))")  # fmt: skip
    assert check.stdout.strip().endswith("True")


@pytest.mark.django_db
def test_repository_retention_keeps_this_instances_last_daily_and_weekly_snapshots(
    ds_data_dir, tmp_path, settings, admin_user, logged_in
):
    from datetime import timedelta

    from django.urls import reverse
    from django.utils import timezone

    from backups.instance import repository as instance_repo
    from backups.tasks import instance_backup_scheduled

    use_repository(tmp_path, settings, {})
    settings.DS_BACKUP_INSTANCE_KEEP_LAST = 2
    settings.DS_BACKUP_INSTANCE_KEEP_DAILY = 3
    settings.DS_BACKUP_INSTANCE_KEEP_WEEKLY = 0
    repo = instance_repo.repository()
    repo.ensure()
    # Older snapshots of this instance (same host, same staging folder), as earlier runs left
    # them, each with its row; and one of another machine sharing the repository.
    now = timezone.now()
    staging = instance_repo.staging_folder()
    day = timedelta(days=1)
    noon = (now - 5 * day).replace(hour=12, minute=0)  # two on one day, whatever the hour now
    times = {"10d": now - 10 * day, "9d": now - 9 * day, "5d-early": noon - timedelta(hours=2),
             "5d-late": noon, "4d": now - 4 * day}  # fmt: skip
    ids = {}
    for name, when in times.items():
        staging.mkdir()
        (staging / "manifest.json").write_text(name)
        ids[name] = repo.backup([staging], [instance_repo.TAG], time=when)
        InstanceBackup.objects.create(
            created=when, state="ready", snapshot=ids[name], target=f"repository {name}"
        )
        remove_tree(staging)
    staging.mkdir()
    other = repo.backup([staging], [instance_repo.TAG], host="old-machine", time=times["10d"])
    remove_tree(staging)

    settings.DS_BACKUP_INSTANCE_HOURS = 24  # no DS_BACKUP_INSTANCE_DIR: into the repository
    made = instance_backup_scheduled()
    assert made.startswith("repository snapshot "), made
    instance_backup()  # a second one today

    kept = {s.id for s in repo.snapshots([instance_repo.TAG])}
    today = [r.snapshot for r in InstanceBackup.objects.filter(created__gte=now)]
    kept = {k[:8] for k in kept}  # restic 0.14 names a new snapshot by its short id
    assert len(today) == 2 and {t[:8] for t in today} <= kept  # the newest two
    assert {ids["4d"][:8], ids["5d-late"][:8]} <= kept  # and the newest of the last 3 days
    assert not {ids["10d"][:8], ids["9d"][:8], ids["5d-early"][:8]} & kept
    assert other[:8] in kept  # another instance's snapshots are its own to forget
    assert len(kept) == 5
    forgotten = InstanceBackup.objects.exclude(forgotten=None)
    assert sorted(r.target for r in forgotten) == [
        "repository 10d", "repository 5d-early", "repository 9d"]  # fmt: skip
    assert repo.check().ok  # pruned, and consistent

    page = logged_in(admin_user).get(reverse("admin:backup_health")).content.decode()
    assert 'id="instance-snapshots"' in page
    assert page.count("forgotten by retention") == 3
    assert f"repository snapshot {today[0][:8]}" in page and "keeps the newest 2" in page
