"""The kernel-enforced disk quota (sandbox.walls.diskimage): an appspace's data in a
loop-mounted ext4 image of its disk_mb, checked from the host (/proc/mounts, the image's
blocks, the files)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from sandbox.walls import diskimage
from tests.sandbox.fixtures import host_lacks, poll

pytestmark = pytest.mark.sandbox
MB = 1024 * 1024

FILL_APP = """
import { createApp } from "@dropserver/app";
const fill = async (ctx, name, limitMb) => {
  const chunk = new Uint8Array(1 << 20).fill(7);
  let written = 0;
  try {
    const f = await Deno.open(`${ctx.dataPath}/${name}`, { write: true, create: true });
    try {
      while (written < limitMb) { await f.write(chunk); written++; }
    } finally { f.close(); }
    return { written, error: null };
  } catch (e) { return { written, error: String(e) }; }
};
createApp({ routes: [
  { method: "GET", path: "/keep", auth: "public", handler: async (ctx) => {
    await Deno.writeTextFile(`${ctx.dataPath}/keep.txt`, "kept");
    return new Response("ok"); } },
  { method: "GET", path: "/fill", auth: "public", handler: async (ctx) =>
    Response.json(await fill(ctx, "big.bin", 1000)) },
  { method: "GET", path: "/more", auth: "public", handler: async (ctx) =>
    Response.json(await fill(ctx, "more.bin", 5)) },
  { method: "GET", path: "/read", auth: "public", handler: async (ctx) =>
    new Response(await Deno.readTextFile(`${ctx.dataPath}/keep.txt`)) },
] });
"""


def mounted(path: str) -> bool:
    real = os.path.realpath(path)
    return any(line.split()[1] == real for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture
def image_supervisor(start_supervisor):
    if not diskimage.available()[0]:
        host_lacks(diskimage.available()[1])
    return lambda: start_supervisor(DS_SANDBOX_DISK_IMAGES="1")


def test_writes_stop_at_the_quota_and_a_raised_quota_makes_room(
    image_supervisor, make_app, http_request
):
    supervisor = image_supervisor()
    app = make_app({"app.ts": FILL_APP})
    spec = app.spec(disk_mb=20)
    sock = supervisor.client.ensure(spec)
    assert mounted(spec.data_dir)
    assert http_request(sock, path="/keep", headers={"X-Dropserver-Route": "0"})[0] == 200
    status, _, body = http_request(
        sock, path="/fill", headers={"X-Dropserver-Route": "1"}, timeout=60
    )
    assert status == 200
    result = json.loads(body)
    # Stopped at once inside the app, as a normal error: the app answered.
    assert result["error"] and "No space left" in result["error"], result
    assert result["written"] < 20
    # From the host: the image never takes more than the quota, whatever the app wrote.
    image = diskimage.image_path(spec.data_dir)
    assert image.stat().st_blocks * 512 <= 20 * MB
    assert image.stat().st_size == 20 * MB
    st = os.statvfs(spec.data_dir)
    assert (st.f_blocks - st.f_bfree) * st.f_frsize <= 20 * MB
    # Files inside are the appspace uid's, as in a plain data dir.
    assert Path(spec.data_dir, "big.bin").stat().st_uid == spec.uid
    assert Path(spec.data_dir).stat().st_uid == spec.uid
    # The app keeps serving reads.
    status, _, body = http_request(sock, path="/read", headers={"X-Dropserver-Route": "3"})
    assert (status, body) == (200, b"kept")
    # Raising the quota (a new spec: the sandbox restarts on a grown image) makes room.
    bigger = dataclasses.replace(
        spec, limits=dataclasses.replace(spec.limits, disk_mb=40), generation=1
    )
    sock = supervisor.client.ensure(bigger)
    result = json.loads(
        http_request(sock, path="/more", headers={"X-Dropserver-Route": "2"}, timeout=60)[2]
    )
    assert result == {"written": 5, "error": None}
    assert Path(spec.data_dir, "keep.txt").read_text() == "kept"
    assert Path(spec.data_dir, "more.bin").stat().st_size == 5 * MB
    assert image.stat().st_size == 40 * MB
    # Stopped: the image is unmounted, its data kept in it.
    supervisor.client.stop(spec.id)
    assert not mounted(spec.data_dir)
    assert not any(Path(spec.data_dir).iterdir())
    sock = supervisor.client.ensure(bigger)
    assert http_request(sock, path="/read", headers={"X-Dropserver-Route": "3"})[2] == b"kept"


def test_a_lowered_quota_shrinks_only_when_the_data_fits(image_supervisor, make_app, http_request):
    supervisor = image_supervisor()
    app = make_app({"app.ts": FILL_APP})
    spec = app.spec(disk_mb=40)
    sock = supervisor.client.ensure(spec)
    assert (
        json.loads(
            http_request(sock, path="/more", headers={"X-Dropserver-Route": "2"}, timeout=60)[2]
        )["error"]
        is None
    )
    image = diskimage.image_path(spec.data_dir)
    smaller = dataclasses.replace(
        spec, limits=dataclasses.replace(spec.limits, disk_mb=20), generation=1
    )
    supervisor.client.ensure(smaller)
    assert image.stat().st_size == 20 * MB  # 5 MB fit: shrunk offline
    assert Path(spec.data_dir, "more.bin").stat().st_size == 5 * MB
    tiny = dataclasses.replace(
        spec, limits=dataclasses.replace(spec.limits, disk_mb=3), generation=2
    )
    sock = supervisor.client.ensure(tiny)
    assert image.stat().st_size == 20 * MB  # 5 MB do not fit in 3: refused, data intact
    assert Path(spec.data_dir, "more.bin").stat().st_size == 5 * MB


def test_a_stale_image_mount_is_cleaned_at_the_next_start(image_supervisor, make_app, http_request):
    supervisor = image_supervisor()
    app = make_app({"app.ts": FILL_APP})
    spec = app.spec(disk_mb=20)
    assert (
        http_request(
            supervisor.client.ensure(spec), path="/keep", headers={"X-Dropserver-Route": "0"}
        )[0]
        == 200
    )
    supervisor.kill()
    assert mounted(spec.data_dir)  # left behind by the killed supervisor
    image_supervisor()
    poll(lambda: not mounted(spec.data_dir))
    assert not any(Path(spec.data_dir).iterdir())  # the data is in the image, not under it


def test_an_image_that_cannot_be_mounted_fails_the_start_instead_of_hiding_the_data(
    image_supervisor, make_app, http_request
):
    from sandbox.protocol import SandboxStartFailed

    supervisor = image_supervisor()
    app = make_app({"app.ts": FILL_APP})
    spec = app.spec(disk_mb=20)
    keep = {"X-Dropserver-Route": "0"}
    assert http_request(supervisor.client.ensure(spec), path="/keep", headers=keep)[0] == 200
    supervisor.client.stop(spec.id)
    image = diskimage.image_path(spec.data_dir)
    with open(image, "r+b") as fh:  # wipe the superblocks: no fsck can recover this one
        for offset in range(0, 20 * MB, 8 * MB):
            fh.seek(offset)
            fh.write(b"\0" * (1 << 20))
    with pytest.raises(SandboxStartFailed):
        supervisor.client.ensure(spec)
    assert not mounted(spec.data_dir)
    assert not any(Path(spec.data_dir).iterdir())  # nothing started on the empty dir
    assert image.exists()


def test_a_hold_mounts_a_stopped_appspaces_image_until_released(
    image_supervisor, make_app, http_request
):
    """data_hold / data_release: what backups, restores and measures of a stopped appspace ask
    for, so they see its data at the usual path instead of the empty folder under the image."""
    supervisor = image_supervisor()
    client = supervisor.client
    app = make_app({"app.ts": FILL_APP})
    spec = app.spec(disk_mb=20)
    keep, read = {"X-Dropserver-Route": "0"}, {"X-Dropserver-Route": "3"}
    assert http_request(client.ensure(spec), path="/keep", headers=keep)[0] == 200
    client.stop(spec.id)
    assert not mounted(spec.data_dir) and not any(Path(spec.data_dir).iterdir())

    assert client.data_hold(spec) == {"mounted": True, "holds": 1}
    assert Path(spec.data_dir, "keep.txt").read_text() == "kept"
    assert client.data_hold(spec)["holds"] == 2  # a second caller: mounted once
    # A start while held runs on that mount; its stop leaves it to the holders.
    assert http_request(client.ensure(spec), path="/read", headers=read)[2] == b"kept"
    client.stop(spec.id)
    assert mounted(spec.data_dir)
    assert client.data_release(spec) == {"holds": 1}
    assert mounted(spec.data_dir)
    assert client.data_release(spec) == {"holds": 0}
    assert not mounted(spec.data_dir)
    assert not any(Path(spec.data_dir).iterdir())  # the data went back into the image

    # A hold whose caller died is dropped by `everyone` (before a delete or a restore swap),
    # but never unmounts a running sandbox's data.
    client.data_hold(spec)
    sock = client.ensure(spec)
    assert client.data_release(spec, everyone=True) == {"holds": 0}
    assert mounted(spec.data_dir)
    assert http_request(sock, path="/read", headers=read)[2] == b"kept"
    client.stop(spec.id)
    assert not mounted(spec.data_dir)


def test_a_hold_without_an_image_leaves_the_folder_alone(start_supervisor, make_app):
    supervisor = start_supervisor(DS_SANDBOX_DISK_IMAGES="0")
    spec = make_app({"app.ts": FILL_APP}).spec(disk_mb=20)
    Path(spec.data_dir).mkdir(parents=True, exist_ok=True)
    Path(spec.data_dir, "plain.txt").write_text("plain")
    assert supervisor.client.data_hold(spec) == {"mounted": False, "holds": 1}
    assert supervisor.client.data_release(spec) == {"holds": 0}
    assert Path(spec.data_dir, "plain.txt").read_text() == "plain"
    assert not diskimage.image_path(spec.data_dir).exists()


def test_a_hold_refuses_specs_that_name_no_appspace_data(supervisor, make_app):
    from sandbox.protocol import SandboxBadRequest

    app = make_app({"app.ts": FILL_APP})
    with pytest.raises(SandboxBadRequest, match="needs a data_dir"):
        supervisor.client.data_hold(app.job_spec())  # an install job's spec: no data
    hostile = {**app.spec(disk_mb=20).to_json(), "data_dir": "/etc"}
    with pytest.raises(SandboxBadRequest, match="data_dir"):
        supervisor.client.data_hold(hostile)
    with pytest.raises(SandboxBadRequest, match="data_dir"):
        supervisor.client.data_release(hostile, everyone=True)
    assert not mounted("/etc")
