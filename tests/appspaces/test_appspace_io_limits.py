"""An appspace's disk bandwidth and operations per second: set on its page within
[1, DS_APPSPACE_MAX_IO_*_MBPS / _IOPS], empty for the instance's default, carried into its
sandbox spec, and read back from the running sandbox's cgroup on the host."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from appspaces.sandboxes import appspace_limits, appspace_spec
from sandbox.walls import cgroups
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_appspace,
    make_version,
    own_uids,
)
from tests.appspaces.conftest import HELLO
from tests.sandbox.fixtures import host_lacks

pytestmark = pytest.mark.django_db

LIMITS = {"memory_mb": 256, "cpu_percent": 50, "disk_mb": 100}


def test_the_owner_sets_the_bandwidth_and_the_spec_carries_it(alice, settings):
    appspace = make_appspace(alice, make_version(alice))
    limits = appspace_limits(appspace)
    assert (limits.io_read_mbps, limits.io_write_mbps) == (
        settings.DS_APPSPACE_DEFAULT_IO_READ_MBPS,
        settings.DS_APPSPACE_DEFAULT_IO_WRITE_MBPS,
    )
    assert limits.io_read_iops == settings.DS_APPSPACE_DEFAULT_IO_READ_IOPS
    url = reverse("appspace_limits", args=[appspace.public_id])
    response = logged_in(alice).post(url, {**LIMITS, "io_read_mbps": 20, "io_write_mbps": 5})
    assert response.status_code == 302
    appspace.refresh_from_db()
    assert (appspace.io_read_mbps, appspace.io_write_mbps) == (20, 5)
    assert (appspace_limits(appspace).io_read_mbps, appspace_limits(appspace).io_write_mbps) == (
        20,
        5,
    )
    logged_in(alice).post(url, {**LIMITS, "io_read_mbps": "", "io_write_mbps": ""})
    appspace.refresh_from_db()
    assert (appspace.io_read_mbps, appspace.io_write_mbps) == (None, None)


def test_beyond_the_admins_maximum_is_refused(alice, settings):
    settings.DS_APPSPACE_MAX_IO_WRITE_MBPS = 30
    appspace = make_appspace(alice, make_version(alice))
    response = logged_in(alice).post(
        reverse("appspace_limits", args=[appspace.public_id]), {**LIMITS, "io_write_mbps": 31}
    )
    assert response.status_code == 400
    assert "less than or equal to 30" in response.content.decode()
    appspace.refresh_from_db()
    assert appspace.io_write_mbps is None


def test_outsiders_cannot_change_the_bandwidth(alice, bob):
    appspace = make_appspace(alice, make_version(alice))
    response = logged_in(bob).post(
        reverse("appspace_limits", args=[appspace.public_id]), {**LIMITS, "io_read_mbps": 1}
    )
    assert response.status_code == 404
    appspace.refresh_from_db()
    assert appspace.io_read_mbps is None


def test_the_owner_sets_the_operations_per_second_within_the_admins_maximum(alice, settings):
    settings.DS_APPSPACE_MAX_IO_WRITE_IOPS = 400
    appspace = make_appspace(alice, make_version(alice))
    url = reverse("appspace_limits", args=[appspace.public_id])
    assert (appspace_limits(appspace).io_read_iops, appspace_limits(appspace).io_write_iops) == (
        settings.DS_APPSPACE_DEFAULT_IO_READ_IOPS,
        settings.DS_APPSPACE_DEFAULT_IO_WRITE_IOPS,
    )
    response = logged_in(alice).post(url, {**LIMITS, "io_read_iops": 250, "io_write_iops": 401})
    assert response.status_code == 400
    assert "less than or equal to 400" in response.content.decode()
    appspace.refresh_from_db()
    assert (appspace.io_read_iops, appspace.io_write_iops) == (None, None)
    response = logged_in(alice).post(url, {**LIMITS, "io_read_iops": 250, "io_write_iops": 120})
    assert response.status_code == 302
    appspace.refresh_from_db()
    assert (appspace.io_read_iops, appspace.io_write_iops) == (250, 120)
    page = logged_in(alice).get(reverse("appspace_detail", args=[appspace.public_id]))
    assert 'name="io_read_iops" value="250"' in page.content.decode()


@pytest.mark.sandbox
def test_a_running_appspace_has_its_io_limits_in_its_cgroup(alice, start_supervisor, http_request):
    """From the host: the blkio files of the running sandbox's cgroup (v1) or its io.max (v2),
    on the block device under its data dir (its data image's loop device by default)."""
    version = make_version(alice, {"app.ts": HELLO % ""})
    appspace = make_appspace(alice, version, folders=True)
    type(appspace).objects.filter(pk=appspace.pk).update(
        io_read_mbps=9, io_write_mbps=4, io_read_iops=250, io_write_iops=120
    )
    appspace.refresh_from_db()
    supervisor = start_supervisor()
    sock = supervisor.client.ensure(appspace_spec(appspace))
    assert http_request(sock)[::2] == (200, b"hello")
    device = cgroups.throttle_device(appspace.data_path)
    if device is None:
        host_lacks("DS_DATA_DIR has no block device here (tmpfs, overlay)")
    files = {}
    for base in supervisor.cgroup_dirs():
        group = base / f"sb-{appspace.public_id}"
        for name in ("blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device",
                     "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
                     "io.max"):  # fmt: skip
            if (group / name).exists():
                files[name] = (group / name).read_text().split()
    if "io.max" in files:
        assert files["io.max"] == [
            device,
            f"rbps={9 * 1024 * 1024}",
            f"wbps={4 * 1024 * 1024}",
            "riops=250",
            "wiops=120",
        ]
    else:
        assert files["blkio.throttle.read_iops_device"] == [device, "250"]
        assert files["blkio.throttle.write_iops_device"] == [device, "120"]
        assert files["blkio.throttle.read_bps_device"] == [device, str(9 * 1024 * 1024)]
        assert files["blkio.throttle.write_bps_device"] == [device, str(4 * 1024 * 1024)]
    assert Path(appspace.data_path).is_dir()
