"""An appspace's disk bandwidth: set on its page within [1, DS_APPSPACE_MAX_IO_*_MBPS], empty
for the instance's default, and carried into its sandbox spec."""

from __future__ import annotations

import pytest
from django.urls import reverse

from appspaces.sandboxes import appspace_limits
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_appspace,
    make_version,
    own_uids,
)

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
