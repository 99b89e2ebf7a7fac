"""A supervisor in a delegated cgroup (systemd `Delegate=yes`) puts sandboxes below its own
cgroup; one outside it keeps them at the top of each hierarchy, as before.

The real test starts the supervisor inside cgroups this test creates in the hierarchies systemd
delegates on cgroup v1 (not freezer, which systemd leaves at "/"), as its unit would, and
reads from the host where the sandbox's processes are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import layout
from sandbox.protocol import SandboxHostUnsafe
from sandbox.walls import cgroups, delegation
from tests.sandbox.fixtures import (
    CGROUP_ROOT,
    HELLO_APP,
    JOIN_CGROUPS,
    SYSTEMD_V1,
    unit_cgroup,
)
from tests.sandbox.test_cgroups_v2 import fake_v2  # noqa: F401 (a fake cgroupfs: this host is v1)

SYSTEMD_V1_SELF = """\
12:freezer:/
11:memory:/system.slice/dropserver-sandboxd.service
10:cpu,cpuacct:/system.slice/dropserver-sandboxd.service
9:pids:/system.slice/dropserver-sandboxd.service
8:blkio:/system.slice/dropserver-sandboxd.service
1:name=systemd:/system.slice/dropserver-sandboxd.service
0::/system.slice/dropserver-sandboxd.service
"""


def test_own_cgroups_reads_every_hierarchy_of_proc_self_cgroup():
    own = delegation.own_cgroups(SYSTEMD_V1_SELF)
    unit = "/system.slice/dropserver-sandboxd.service"
    assert own == {
        "freezer": "/",
        "memory": unit,
        "cpu": unit,
        "cpuacct": unit,
        "pids": unit,
        "blkio": unit,
        "": unit,
    }


def test_a_supervisor_at_the_top_of_the_memory_hierarchy_is_told_to_use_its_unit():
    with pytest.raises(cgroups.CgroupError, match=r"Delegate=yes"):
        delegation.bases("11:memory:/\n0::/system.slice/x.service\n")
    with pytest.raises(cgroups.CgroupError, match=r"cgroup v2 hierarchy"):
        delegation.bases("0::/\n")


def test_v2_a_supervisor_already_in_its_leaf_still_uses_its_units_group():
    assert delegation.bases("0::/system.slice/ds.service/supervisor\n") == {
        "": "/system.slice/ds.service"
    }


def test_v2_the_supervisor_leaves_its_delegated_group_before_handing_out_controllers(
    fake_v2,  # noqa: F811 (the fixture imported above)
):
    root, writes = fake_v2
    unit = root / "system.slice" / "ds.service"
    unit.mkdir(parents=True)
    (unit / "cgroup.controllers").write_text("cpu io memory pids\n")
    (unit / "cgroup.procs").write_text("4242\n")
    backend = cgroups.V2Backend(root, "dropserver/i-test", base="/system.slice/ds.service")
    backend.create("sb-one", cgroups.CgroupLimits(64 * 2**20, 10, 16))

    unit_rel = "system.slice/ds.service"
    assert writes.index((f"{unit_rel}/supervisor/cgroup.procs", "4242")) < writes.index(
        (f"{unit_rel}/cgroup.subtree_control", "+memory")
    )
    # Nothing is written above the delegated group: those levels are systemd's.
    assert not [p for p, _ in writes if not p.startswith(unit_rel + "/")]
    assert (unit / "dropserver" / "i-test" / "sb-one").is_dir()


@pytest.fixture
def unit_cgroups():
    with unit_cgroup() as (name, dirs):
        yield name, dirs


def _procs(path: Path) -> set[int]:
    try:
        return {int(p) for p in (path / "cgroup.procs").read_text().split()}
    except FileNotFoundError:
        return set()


@pytest.mark.sandbox
def test_a_delegated_supervisor_puts_sandboxes_below_its_own_cgroup(
    unit_cgroups, start_supervisor, make_app, http_request
):
    unit, unit_dirs = unit_cgroups
    sup = start_supervisor(
        command_prefix=JOIN_CGROUPS,
        DS_TEST_JOIN=" ".join(map(str, unit_dirs)),
        DS_SANDBOX_CGROUP_DELEGATED=1,
    )
    assert sup.client.ping()["safe"] is True
    spec = make_app({"app.ts": HELLO_APP}).spec()
    status, _, body = http_request(sup.client.ensure(spec))
    assert (status, body) == (200, b"hello")

    group = f"dropserver/{layout.instance_name()}/sb-{spec.id}"
    memory_group = CGROUP_ROOT / "memory" / unit / group
    deno = [p for p in _procs(memory_group) if Path(f"/proc/{p}/comm").read_text() == "deno\n"]
    assert len(deno) == 1, _procs(memory_group)
    seen = delegation.own_cgroups(Path(f"/proc/{deno[0]}/cgroup").read_text())
    for controller in SYSTEMD_V1:
        assert seen[controller] == f"/{unit}/{group}", controller
    assert seen["freezer"] == f"/{group}"  # not delegated by systemd on v1: the top, as before
    # The limits are on the delegated group, and nothing of this instance is at the top.
    limit = int((memory_group / "memory.limit_in_bytes").read_text())
    assert limit == spec.limits.memory_mb * 2**20
    assert not (CGROUP_ROOT / "memory" / "dropserver" / layout.instance_name()).exists()
    assert sup.pid in _procs(CGROUP_ROOT / "memory" / unit)  # the supervisor stays in its unit

    assert sup.stop() == 0
    # Stopping removes the instance's groups; the unit's own cgroup stays, empty.
    assert not (CGROUP_ROOT / "memory" / unit / "dropserver" / layout.instance_name()).exists()
    assert not (CGROUP_ROOT / "freezer" / "dropserver" / layout.instance_name()).exists()
    assert all(_procs(d) == set() for d in unit_dirs)


@pytest.mark.sandbox
def test_a_delegated_supervisor_started_outside_its_unit_refuses_sandboxes(
    start_supervisor, make_app
):
    top = CGROUP_ROOT / "memory"
    sup = start_supervisor(
        command_prefix=JOIN_CGROUPS, DS_TEST_JOIN=str(top), DS_SANDBOX_CGROUP_DELEGATED=1
    )
    info = sup.client.ping()
    assert info["safe"] is False
    assert any("Delegate=yes" in p for p in info["problems"])
    with pytest.raises(SandboxHostUnsafe, match="dropserver-sandboxd.service"):
        sup.client.ensure(make_app({"app.ts": HELLO_APP}).spec())
    assert not (top / "dropserver" / layout.instance_name()).exists()


@pytest.mark.sandbox
def test_without_the_setting_sandboxes_stay_at_the_top_even_inside_another_cgroup(
    unit_cgroups, start_supervisor, make_app, http_request
):
    """A process's own cgroup may be a login session's or a container's: not ours to fill."""
    unit, unit_dirs = unit_cgroups
    sup = start_supervisor(command_prefix=JOIN_CGROUPS, DS_TEST_JOIN=" ".join(map(str, unit_dirs)))
    spec = make_app({"app.ts": HELLO_APP}).spec()
    status, _, _ = http_request(sup.client.ensure(spec))
    assert status == 200
    assert sup.deno_pid(spec.id)  # found under /sys/fs/cgroup/<c>/dropserver/<instance>/
    assert not (CGROUP_ROOT / "memory" / unit / "dropserver").exists()
    sup.client.stop(spec.id)
