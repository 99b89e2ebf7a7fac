"""Failure tests with real sandboxes (Deno in bubblewrap and cgroups, as root): an app that
encrypts its data (ransom) restored byte for byte; the backup worker SIGKILLed mid-backup; the
disk full; older data migrated up on restore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from appspaces.models import Appspace, AppVersion
from appspaces.sandboxes import appspace_spec
from backups.format.archive import verify_archive
from backups.models import Backup, appspace_backups_dir
from backups.restore import backup_restore
from backups.services import BackupError, backup_create
from backups.sweep import INTERRUPTED, backups_sweep
from tests.backups.conftest import fill, lay_out_version, tree_hashes
from tests.sandbox.fixtures import REPO, poll

pytestmark = pytest.mark.sandbox

APP = """
import { createApp } from "@dropserver/app";
async function* walk(dir) {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walk(p); else if (e.isFile) yield p;
  }
}
function noise(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  }
  return out;
}
createApp({
  routes: [
    { method: "GET", path: "/", auth: "public",
      handler: (ctx) => new Response(Deno.readTextFileSync(`${ctx.dataPath}/notes/today.txt`)) },
    { method: "POST", path: "/write", auth: "public", handler: async (ctx) => {
      await Deno.mkdir(`${ctx.dataPath}/notes/old`, { recursive: true });
      await Deno.mkdir(`${ctx.dataPath}/photos`, { recursive: true });
      await Deno.writeTextFile(`${ctx.dataPath}/notes/today.txt`, "hello from the app\\n");
      for (let i = 0; i < 20; i++) {
        const text = `note ${i}\\n`.repeat(i * 50);
        await Deno.writeTextFile(`${ctx.dataPath}/notes/old/${i}.md`, text);
      }
      await Deno.writeFile(`${ctx.dataPath}/photos/cat.jpg`, noise(300000));
      await Deno.writeTextFile(`${ctx.dataPath}/db.json`, JSON.stringify({ items: [1, 2, 3] }));
      return new Response("written");
    } },
    { method: "POST", path: "/ransom", auth: "public", handler: async (ctx) => {
      const algorithm = { name: "AES-GCM", length: 256 };
      const key = await crypto.subtle.generateKey(algorithm, false, ["encrypt"]);
      for await (const p of walk(ctx.dataPath)) {
        const iv = crypto.getRandomValues(new Uint8Array(12));
        const data = await Deno.readFile(p);
        const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, data);
        await Deno.writeFile(p, new Uint8Array(sealed));
      }
      await Deno.remove(`${ctx.dataPath}/photos`, { recursive: true });
      await Deno.writeTextFile(`${ctx.dataPath}/README-PAY.txt`, "send 1 BTC for your data");
      return new Response("encrypted");
    } },
  ],
  migrations: [{ schema: 1, up() {}, down() {} }],
});
"""

MIGRATION_2 = """
  { schema: 2, up: async ({ dataPath }) => {
      const text = await Deno.readTextFile(`${dataPath}/notes/today.txt`);
      await Deno.writeTextFile(`${dataPath}/notes/today.txt`, text.toUpperCase());
      await Deno.writeTextFile(`${dataPath}/schema2.txt`, "migrated");
    }, down() {} },
"""


def _route(sock: str, http_request, index: int, method: str = "POST"):
    return http_request(sock, method, "/", headers={"X-Dropserver-Route": str(index)})


@pytest.fixture
def running(alice, make_appspace, supervisor, http_request):
    """An appspace whose app (run for real) wrote its data; (appspace, socket path)."""
    appspace = make_appspace(alice, schema=1, app_files={"app.ts": APP})
    sock = supervisor.client.ensure(appspace_spec(appspace))
    status, _, body = _route(sock, http_request, 1)
    assert (status, body) == (200, b"written")
    return appspace, sock


@pytest.mark.django_db
def test_it_restores_data_an_app_encrypted_byte_for_byte(running, supervisor, http_request):
    appspace, sock = running
    backup = backup_create(appspace=appspace, kind=Backup.Kind.SCHEDULED)
    saved = tree_hashes(appspace.data_path)
    assert len(saved) == 23
    assert backup.downtime_ms is not None  # it was running: frozen while copied
    assert supervisor.client.usage(str(appspace.public_id))["state"] == "running"  # thawed

    status, _, body = _route(sock, http_request, 2)
    assert (status, body) == (200, b"encrypted")
    ransomed = tree_hashes(appspace.data_path)
    assert "README-PAY.txt" in ransomed and not set(saved.items()) & set(ransomed.items())
    # The app cannot reach its backups: nothing under backups/ changed.
    verify_archive(backup.path)

    backup_restore(appspace=appspace, backup=backup)

    assert tree_hashes(appspace.data_path) == saved
    sock = supervisor.client.ensure(appspace_spec(appspace))
    status, _, body = _route(sock, http_request, 0, "GET")
    assert (status, body) == (200, b"hello from the app\n")
    # It ran on the restored data, so the encrypted data kept aside is gone.
    assert not list(appspace.path.glob(".previous-*"))
    appspace.refresh_from_db()
    assert appspace.status == Appspace.Status.ACTIVE


@pytest.mark.django_db
def test_it_migrates_older_data_up_when_restoring(running, supervisor, http_request):
    appspace, sock = running
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    # The owner moves to version 2 (schema 2), which runs the app's second migration.
    v2_source = APP.replace(
        "migrations: [{ schema: 1, up() {}, down() {} }],",
        "migrations: [{ schema: 1, up() {}, down() {} }," + MIGRATION_2 + "],",
    )
    lay_out_version(str(appspace.app.public_id), "2.0.0", {"app.ts": v2_source})
    v2 = AppVersion.objects.create(
        app=appspace.app, version="2.0.0", version_key="2.0.0", schema=2, entrypoint="app.ts"
    )
    supervisor.client.stop(str(appspace.public_id))
    Appspace.objects.filter(pk=appspace.pk).update(app_version=v2, data_schema=2)
    appspace.refresh_from_db()
    fill(appspace, {"notes/today.txt": "lost in an accident"})

    meta = backup_restore(appspace=appspace, backup=backup)

    assert meta.data_schema == 1
    assert (appspace.data_path / "notes/today.txt").read_text() == "HELLO FROM THE APP\n"
    assert (appspace.data_path / "schema2.txt").read_text() == "migrated"
    st = (appspace.data_path / "schema2.txt").stat()
    assert st.st_uid == appspace.sandbox_uid
    appspace.refresh_from_db()
    assert appspace.data_schema == 2
    sock = supervisor.client.ensure(appspace_spec(appspace))
    assert _route(sock, http_request, 0, "GET")[2] == b"HELLO FROM THE APP\n"


def _worker(appspace: Appspace, **env: str) -> subprocess.Popen:
    """`manage.py backup_appspace` in a process of its own, on this test's database."""
    db = connection.settings_dict
    environ = {
        **os.environ,
        "DS_DATA_DIR": str(settings.DS_DATA_DIR),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DS_SANDBOX_UID_BASE": str(settings.DS_SANDBOX_UID_BASE),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "backup_appspace", appspace.subdomain],
        cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.parametrize("kill_when", ["frozen", "compressing"])
@pytest.mark.django_db(transaction=True)
def test_it_survives_the_worker_killed_mid_backup(running, supervisor, http_request, kill_when):
    appspace, sock = running
    older = backup_create(appspace=appspace, kind=Backup.Kind.SCHEDULED)
    older_bytes = older.path.read_bytes()
    sandbox_id = str(appspace.public_id)
    if kill_when == "frozen":
        # A big file that changes while the first phase copies (many small files after it) is
        # copied again while the appspace is held still: a window long enough to kill in.
        fill(appspace, {"big.bin": os.urandom(96 * 1024 * 1024)})
        fill(appspace, {f"many/{i}.txt": f"{i}" for i in range(1500)})
        worker = _worker(appspace)
        folder = appspace_backups_dir(appspace)
        poll(lambda: folder.is_dir() and any(folder.glob(".staging-*")), timeout=60,
             interval=0.002)  # fmt: skip
        os.utime(appspace.data_path / "big.bin")  # what a write by the app does to its ctime
        poll(lambda: supervisor.client.usage(sandbox_id)["state"] == "frozen", timeout=60,
             interval=0.002)  # fmt: skip
    else:
        fill(appspace, {"big.bin": os.urandom(8 * 1024 * 1024)})
        # A slow compression level keeps it writing for a while.
        worker = _worker(appspace, DS_BACKUP_ZSTD_LEVEL="19", DS_BACKUP_ZSTD_THREADS="0")
        folder = appspace_backups_dir(appspace)
        poll(lambda: any(p.name.startswith(".tmp-") and p.stat().st_size > 0
                         for p in folder.iterdir()), timeout=60, interval=0.005)  # fmt: skip
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)

    pending = Backup.objects.get(state=Backup.State.PENDING)
    listed = list(Backup.objects.filter(appspace=appspace, state=Backup.State.READY))
    assert listed == [older]  # the partial one is never listed
    if kill_when == "frozen":
        assert supervisor.client.usage(sandbox_id)["state"] == "frozen"

    backups_sweep()

    pending.refresh_from_db()
    assert (pending.state, pending.message) == (Backup.State.FAILED, INTERRUPTED)
    assert sorted(p.name for p in appspace_backups_dir(appspace).iterdir()) == [older.file_name]
    assert older.path.read_bytes() == older_bytes
    verify_archive(older.path)
    assert supervisor.client.usage(sandbox_id)["state"] == "running"
    assert _route(sock, http_request, 0, "GET")[2] == b"hello from the app\n"
    # And the next backup works.
    assert backup_create(appspace=appspace, kind=Backup.Kind.MANUAL).state == Backup.State.READY


@pytest.fixture
def small_backups_fs(ds_data_dir):
    """DS_DATA_DIR/backups on a 3 MB tmpfs (mounted as root; unmounted at the end)."""
    path = ds_data_dir / "backups"
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("data_mb", [4, 1.8], ids=["copy-fails", "archive-fails"])
@pytest.mark.django_db
def test_it_fails_clearly_on_a_full_disk_and_loses_nothing(
    running, supervisor, http_request, small_backups_fs, data_mb
):
    appspace, sock = running
    older = backup_create(appspace=appspace, kind=Backup.Kind.SCHEDULED)
    fill(appspace, {"big.bin": os.urandom(int(data_mb * 1024 * 1024))})
    before = tree_hashes(appspace.data_path)

    with pytest.raises(BackupError, match="disk holding the backups is full.*Nothing was lost"):
        backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)

    assert tree_hashes(appspace.data_path) == before
    verify_archive(older.path)
    assert sorted(p.name for p in appspace_backups_dir(appspace).iterdir()) == [older.file_name]
    failed = Backup.objects.get(state=Backup.State.FAILED)
    assert "full" in failed.message
    assert supervisor.client.usage(str(appspace.public_id))["state"] == "running"
    assert _route(sock, http_request, 0, "GET")[2] == b"hello from the app\n"
