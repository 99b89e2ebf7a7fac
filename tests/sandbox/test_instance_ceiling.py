"""The instance ceiling: the parent cgroup of all sandboxes carries DS_SANDBOXES_* (memory,
CPU, pids), read back from the host's cgroupfs; the defaults come from the host's size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.walls.preflight import instance_ceiling
from tests.sandbox.fixtures import HELLO_APP, host_lacks

pytestmark = pytest.mark.sandbox


def _file(dirs: list[Path], name: str) -> str:
    for base in dirs:
        if (base / name).exists():
            return (base / name).read_text().strip()
    raise AssertionError(f"no {name} under {dirs}")


def test_the_parent_cgroup_holds_the_ceiling(start_supervisor, make_app, http_request):
    supervisor = start_supervisor(
        DS_SANDBOXES_MEMORY_MB=3000, DS_SANDBOXES_CPU_PERCENT=150, DS_SANDBOXES_PIDS=777
    )
    status, _, body = http_request(supervisor.client.ensure(make_app({"app.ts": HELLO_APP}).spec()))
    assert (status, body) == (200, b"hello")
    dirs = supervisor.cgroup_dirs()
    if (
        Path("/sys/fs/cgroup/cgroup.controllers").exists()
        and not Path("/sys/fs/cgroup/memory").exists()
    ):  # cgroup v2
        assert _file(dirs, "memory.max") == str(3000 * 1024 * 1024)
        assert _file(dirs, "cpu.max") == "150000 100000"
    else:
        assert _file(dirs, "memory.limit_in_bytes") == str(3000 * 1024 * 1024)
        assert _file(dirs, "cpu.cfs_quota_us") == "150000"
        assert _file(dirs, "cpu.cfs_period_us") == "100000"
    assert _file(dirs, "pids.max") == "777"


def test_the_default_ceiling_leaves_the_reserve_and_half_a_core(settings):
    settings.DS_SANDBOXES_MEMORY_MB = 0
    settings.DS_SANDBOXES_CPU_PERCENT = 0
    settings.DS_SANDBOXES_RESERVE_MB = 1024
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    ceiling = instance_ceiling()
    assert ceiling.memory_bytes == max(total_mb - 1024, 256) * 1024 * 1024
    assert ceiling.cpu_percent == max(len(os.sched_getaffinity(0)) * 100 - 50, 50)
    assert ceiling.pids == settings.DS_SANDBOXES_PIDS


def test_the_parent_cgroup_holds_the_io_ceiling(start_supervisor, make_app, http_request):
    """DS_SANDBOXES_IO_* on the block device under DS_DATA_DIR, read back from the parent."""
    from django.conf import settings

    from sandbox.walls import cgroups

    device = cgroups.throttle_device(settings.DS_DATA_DIR)
    if device is None:
        host_lacks("DS_DATA_DIR has no block device here (tmpfs, overlay)")
    supervisor = start_supervisor(
        DS_SANDBOXES_IO_READ_MBPS=300,
        DS_SANDBOXES_IO_WRITE_MBPS=120,
        DS_SANDBOXES_IO_READ_IOPS=9000,
        DS_SANDBOXES_IO_WRITE_IOPS=4000,
    )
    status, _, body = http_request(supervisor.client.ensure(make_app({"app.ts": HELLO_APP}).spec()))
    assert (status, body) == (200, b"hello")
    dirs = supervisor.cgroup_dirs()
    mb = 1024 * 1024
    if any((d / "io.max").exists() for d in dirs):  # cgroup v2
        assert _file(dirs, "io.max").split() == [
            device,
            f"rbps={300 * mb}",
            f"wbps={120 * mb}",
            "riops=9000",
            "wiops=4000",
        ]
    else:
        assert _file(dirs, "blkio.throttle.read_bps_device").split() == [device, str(300 * mb)]
        assert _file(dirs, "blkio.throttle.write_bps_device").split() == [device, str(120 * mb)]
        assert _file(dirs, "blkio.throttle.read_iops_device").split() == [device, "9000"]
        assert _file(dirs, "blkio.throttle.write_iops_device").split() == [device, "4000"]
