"""The cgroup v2 backend, checked file by file against a fake cgroupfs (this host is v1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.walls import cgroups


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    writes: list[tuple[str, str]] = []

    def record(path: Path, value: str) -> None:
        writes.append((str(path.relative_to(root)), value))
        if path.name == "cgroup.subtree_control":
            enabled = set(path.read_text().split()) | {value.lstrip("+")}
            path.write_text(" ".join(sorted(enabled)))
        else:
            path.write_text(value)

    def fake_mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False):
        original_mkdir(self, mode, parents, exist_ok)
        for name in ("cgroup.subtree_control", "cgroup.procs"):
            if not (self / name).exists():
                (self / name).write_text("")

    original_mkdir = Path.mkdir
    monkeypatch.setattr(cgroups, "_write", record)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
    return root, writes


def test_probe_prefers_a_v2_mount_with_the_memory_controller(fake_v2):
    root, _ = fake_v2
    mountinfo = f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw\n"
    backend = cgroups.probe("dropserver/i-test", mountinfo=mountinfo)
    assert isinstance(backend, cgroups.V2Backend)


def test_probe_takes_v1_on_a_hybrid_host(tmp_path):
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("")  # hybrid: v2 mounted but empty
    lines = [f"30 23 0:26 / {unified} rw - cgroup2 cgroup2 rw"]
    for n, ctrl in enumerate(("memory", "cpu", "cpuacct", "pids", "freezer", "blkio")):
        (tmp_path / ctrl).mkdir()
        lines.append(f"{40 + n} 23 0:{30 + n} / {tmp_path / ctrl} rw - cgroup cgroup rw,{ctrl}")
    backend = cgroups.probe("dropserver/i-test", mountinfo="\n".join(lines))
    assert isinstance(backend, cgroups.V1Backend)
    assert backend.mounts["memory"] == tmp_path / "memory"


def test_create_delegates_controllers_and_writes_limits(fake_v2):
    root, writes = fake_v2
    backend = cgroups.V2Backend(root, "dropserver/i-test")
    leaf = root / "dropserver" / "i-test" / "sb-one"
    leaf.mkdir(parents=True)
    for name in ("memory.swap.max", "memory.oom.group"):
        (leaf / name).write_text("")
    group = backend.create("sb-one", cgroups.CgroupLimits(128 * 2**20, 20, 32))

    for level in (
        "cgroup.subtree_control",
        "dropserver/cgroup.subtree_control",
        "dropserver/i-test/cgroup.subtree_control",
    ):
        assert {v for p, v in writes if p == level} == {"+memory", "+cpu", "+pids", "+io"}
    limits = {p: v for p, v in writes if p.startswith("dropserver/i-test/sb-one/")}
    assert limits == {
        "dropserver/i-test/sb-one/memory.max": str(128 * 2**20),
        "dropserver/i-test/sb-one/memory.swap.max": "0",
        "dropserver/i-test/sb-one/cpu.max": "20000 100000",
        "dropserver/i-test/sb-one/pids.max": "32",
        "dropserver/i-test/sb-one/memory.oom.group": "1",
    }
    assert group.procs_files() == [str(leaf / "cgroup.procs")]


def test_usage_freeze_and_kill_read_and_write_the_v2_files(fake_v2):
    root, writes = fake_v2
    leaf = root / "dropserver" / "i-test" / "sb-two"
    leaf.mkdir(parents=True)
    files = {
        "memory.current": "1048576\n",
        "memory.peak": "2097152\n",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        "pids.current": "7\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "pids.events": "max 2\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
        "cgroup.events": "populated 1\nfrozen 1\n",
        "cgroup.freeze": "0",
        "cgroup.kill": "",
    }
    for name, text in files.items():
        (leaf / name).write_text(text)
    group = cgroups.V2Backend(root, "dropserver/i-test").open("sb-two")

    usage = group.usage()
    assert usage == cgroups.Usage(
        memory_bytes=1048576,
        memory_peak_bytes=2097152,
        cpu_usage_ns=1_500_000,
        pids=7,
        io_read_bytes=4097,
        io_write_bytes=8194,
        oom_kills=1,
        pids_limit_hits=2,
    )
    group.freeze()
    group.thaw()
    (leaf / "cgroup.procs").write_text("4242\n")
    group.kill_once()
    assert [(p.rsplit("/", 1)[1], v) for p, v in writes] == [
        ("cgroup.freeze", "1"),
        ("cgroup.freeze", "0"),
        ("cgroup.kill", "1"),
    ]
