"""Backups, restores, measures and deletion of appspaces whose data is in a loop-mounted image
(sandbox.walls.diskimage, on by default where the host can), through a real supervisor: a
stopped appspace's data is inside the unmounted image, and the folder under it is empty."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appspaces.lifecycle.control import appspace_delete, trash_empty
from appspaces.models import Appspace
from appspaces.sandboxes import appspace_data_held, appspace_spec
from appspaces.usage.quota import appspace_disk_measure
from backups.format.archive import verify_archive
from backups.instance.snapshot import instance_backup
from backups.models import Backup
from backups.restore import backup_restore
from backups.services import backup_create
from sandbox.walls import diskimage
from tests.backups.conftest import tree_hashes
from tests.backups.test_failures import APP, _route
from tests.sandbox.fixtures import host_lacks

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]
MB = 1024 * 1024


def mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    return any(line.split()[1] == real for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture
def stopped(alice, make_appspace, supervisor, http_request):
    """An appspace on a 20 MB image whose app wrote its data, then stopped: (appspace, the
    files as the app left them)."""
    if not diskimage.enabled():
        host_lacks(f"no data images on this host: {diskimage.available()[1]}")
    appspace = make_appspace(alice, schema=1, app_files={"app.ts": APP}, disk_mb=20)
    sock = supervisor.client.ensure(appspace_spec(appspace))
    status, _, body = _route(sock, http_request, 1)
    assert (status, body) == (200, b"written")
    assert mounted(appspace.data_path)  # the default: the data is in its image
    saved = tree_hashes(appspace.data_path)
    assert len(saved) == 23
    supervisor.client.stop(str(appspace.public_id))
    assert not mounted(appspace.data_path) and not any(appspace.data_path.iterdir())
    return appspace, saved


def test_a_stopped_appspace_on_an_image_is_backed_up_whole(stopped, supervisor):
    appspace, saved = stopped
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    meta = verify_archive(backup.path)
    assert {f.path for f in meta.files} == set(saved)
    assert {f.path: f.sha256 for f in meta.files} == saved
    assert backup.file_count == 23 and backup.downtime_ms == 0  # nothing ran: nothing frozen
    # Mounted for the copy only: stopped, nothing mounted, no sandbox started for it.
    assert not mounted(appspace.data_path)
    assert supervisor.client.usage(str(appspace.public_id))["state"] == "stopped"


def test_a_restore_into_a_stopped_image_backed_appspace(stopped, supervisor, http_request):
    appspace, saved = stopped
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    sock = supervisor.client.ensure(appspace_spec(appspace))
    assert _route(sock, http_request, 2)[2] == b"encrypted"  # the ransom route
    supervisor.client.stop(str(appspace.public_id))

    backup_restore(appspace=appspace, backup=backup)

    # The restore started it on a new image made of the restored data, of the quota's size.
    image = diskimage.image_path(appspace.data_path)
    assert mounted(appspace.data_path)
    assert image.stat().st_size == 20 * MB
    assert tree_hashes(appspace.data_path) == saved
    assert not list(appspace.path.glob(".previous-*"))  # it ran: the ransomed image is gone
    assert not list(appspace.path.glob("data.img.*"))
    sock = supervisor.client.ensure(appspace_spec(appspace))
    assert _route(sock, http_request, 0, "GET")[2] == b"hello from the app\n"
    # Stopped again, the restored data is in the image (held open here as a backup would).
    supervisor.client.stop(str(appspace.public_id))
    assert not any(appspace.data_path.iterdir())
    with appspace_data_held(appspace) as in_image:
        assert in_image and tree_hashes(appspace.data_path) == saved
    assert not mounted(appspace.data_path)


def test_a_stopped_image_is_measured_from_its_content(stopped):
    appspace, _ = stopped
    used = appspace_disk_measure(appspace=appspace)
    assert used is not None and used.files == 23 and used.bytes > 300_000
    appspace.refresh_from_db()
    assert appspace.disk_bytes == used.bytes
    assert not mounted(appspace.data_path)
    # Unchanged since (nothing wrote to the image): the next periodic measure mounts nothing.
    assert appspace_disk_measure(appspace=appspace) is None


def test_deleting_an_appspace_whose_image_a_dead_worker_left_mounted(
    stopped, supervisor, django_capture_on_commit_callbacks, monkeypatch
):
    appspace, _ = stopped
    monkeypatch.setattr("appspaces.tasks.trash_empty.delay", lambda: None)  # emptied below
    supervisor.client.data_hold(appspace_spec(appspace))  # never released: the worker died
    assert mounted(appspace.data_path)
    path = appspace.path
    with django_capture_on_commit_callbacks(execute=True):
        appspace_delete(appspace=Appspace.objects.get(pk=appspace.pk), keep_backups=False)
    trash_empty()
    assert not path.exists()
    assert not any(str(path) in line for line in Path("/proc/mounts").read_text().splitlines())


POISON_APP = """
import { createApp } from "@dropserver/app";
try { Deno.statSync("/data/poison"); throw new Error("poisoned"); }
catch (e) { if (e.message === "poisoned") throw e; }
createApp({ routes: [
  { method: "POST", path: "/poison", auth: "public", handler: async (ctx) => {
      await Deno.writeTextFile(`${ctx.dataPath}/poison`, "x");
      await Deno.writeTextFile(`${ctx.dataPath}/keep.txt`, "v1");
      return new Response("poisoned"); } },
  { method: "POST", path: "/cure", auth: "public", handler: async (ctx) => {
      await Deno.remove(`${ctx.dataPath}/poison`);
      await Deno.writeTextFile(`${ctx.dataPath}/keep.txt`, "v2");
      return new Response("cured"); } },
] });
"""


def test_a_restore_the_app_cannot_start_on_puts_the_old_image_back(
    alice, make_appspace, supervisor, http_request
):
    from backups.restore import RestoreError

    if not diskimage.enabled():
        host_lacks(f"no data images on this host: {diskimage.available()[1]}")
    appspace = make_appspace(alice, app_files={"app.ts": POISON_APP}, disk_mb=20)
    sock = supervisor.client.ensure(appspace_spec(appspace))
    assert _route(sock, http_request, 0)[2] == b"poisoned"  # only read at the next start
    backup = backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert _route(sock, http_request, 1)[2] == b"cured"
    supervisor.client.stop(str(appspace.public_id))

    with pytest.raises(RestoreError, match="would not start"):
        backup_restore(appspace=appspace, backup=backup)

    assert not mounted(appspace.data_path)
    assert not list(appspace.path.glob(".previous-*")) and not list(appspace.path.glob(".rest*"))
    with appspace_data_held(appspace) as in_image:
        assert in_image
        assert (appspace.data_path / "keep.txt").read_text() == "v2"
        assert not (appspace.data_path / "poison").exists()
    supervisor.client.restart(appspace_spec(appspace))  # forget the crash: it runs again


def test_an_instance_backup_holds_a_stopped_image_backed_appspaces_data(stopped, tmp_path):
    appspace, saved = stopped
    manifest = instance_backup(tmp_path / "snapshot")
    (entry,) = [e for e in manifest["appspaces"] if e["public_id"] == str(appspace.public_id)]
    meta = verify_archive(tmp_path / "snapshot" / entry["archive"])
    assert {f.path: f.sha256 for f in meta.files} == saved
    assert not manifest["warnings"]
    assert not mounted(appspace.data_path)
