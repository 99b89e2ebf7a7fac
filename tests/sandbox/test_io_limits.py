"""Per-sandbox disk IO limits (blkio.throttle on cgroup v1, io.max on v2) on the block device
under the data dir, read back from the host; and an app reading its data from disk (not the
page cache) takes at least as long as its read limit allows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sandbox.walls import cgroups
from tests.sandbox.fixtures import host_lacks, poll

pytestmark = pytest.mark.sandbox

READER_APP = """
import { createApp } from "@dropserver/app";
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("alive") },
  { method: "GET", path: "/read", auth: "public", handler: async (ctx) => {
      const t0 = performance.now();
      const data = await Deno.readFile(`${ctx.dataPath}/big.bin`);
      return Response.json({ bytes: data.length, ms: performance.now() - t0 });
  } },
] });
"""

MB = 1024 * 1024


def _blkio(supervisor, sandbox_id: str, name: str) -> str:
    for base in supervisor.cgroup_dirs():
        path = base / f"sb-{sandbox_id}" / name
        if path.exists():
            return path.read_text()
    return ""


def _device(spec) -> str:
    Path(spec.data_dir).mkdir(parents=True, exist_ok=True)
    device = cgroups.throttle_device(spec.data_dir)
    if device is None:
        host_lacks("DS_DATA_DIR has no block device here (tmpfs, overlay)")
    return device


def test_the_sandbox_cgroup_holds_the_io_limits(supervisor, make_app, http_request):
    if not Path("/sys/fs/cgroup/blkio").exists():
        host_lacks("cgroup v1 blkio only (v2 io.max is written the same way)")
    spec = make_app({"app.ts": READER_APP}).spec(
        io_read_mbps=7, io_write_mbps=3, io_read_iops=300, io_write_iops=200
    )
    device = _device(spec)
    os.chown(spec.data_dir, spec.uid, spec.uid)
    status, _, body = http_request(supervisor.client.ensure(spec))
    assert (status, body) == (200, b"alive")
    read = _blkio(supervisor, spec.id, "blkio.throttle.read_bps_device").split()
    assert read == [device, str(7 * MB)]
    assert _blkio(supervisor, spec.id, "blkio.throttle.write_bps_device").split() == [
        device,
        str(3 * MB),
    ]
    assert _blkio(supervisor, spec.id, "blkio.throttle.read_iops_device").split() == [device, "300"]
    assert _blkio(supervisor, spec.id, "blkio.throttle.write_iops_device").split() == [
        device,
        "200",
    ]


def test_reading_from_disk_is_bounded_by_the_read_limit(supervisor, make_app, http_request):
    """24 MB at 8 MB/s cannot take less than ~3 s (a lower bound: a busy host only makes it
    slower); the page cache is dropped for the file first, so the reads reach the disk."""
    spec = make_app({"app.ts": READER_APP}).spec(io_read_mbps=8)
    _device(spec)
    data = Path(spec.data_dir)
    big = data / "big.bin"
    big.write_bytes(os.urandom(24 * MB))
    for path in (data, big):
        os.chown(path, spec.uid, spec.uid)
    fd = os.open(big, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    sock = supervisor.client.ensure(spec)
    poll(lambda: http_request(sock)[0] == 200)
    started = time.monotonic()
    status, _, body = http_request(
        sock, "GET", "/read", headers={"X-Dropserver-Route": "1"}, timeout=60
    )
    elapsed = time.monotonic() - started
    assert status == 200 and json.loads(body)["bytes"] == 24 * MB
    assert elapsed >= 24 / 8 * 0.7, f"read 24 MB in {elapsed:.2f}s past an 8 MB/s limit"
