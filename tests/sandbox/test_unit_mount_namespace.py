"""The web and worker units' hardening (ProtectSystem=strict, ReadWritePaths=DS_DATA_DIR,
PrivateTmp=) gives them a mount namespace of their own, while the supervisor's unit has none.
The socket dir the supervisor mounts when a sandbox starts must still reach them.

systemd makes a unit's namespace a slave of the host's, whose mounts are shared (systemd boots
with `/` shared). This test builds the same from the host: DS_DATA_DIR a shared mount, a process
in a slave namespace with `/` read-only and DS_DATA_DIR bound read-write, created *before* the
sandbox starts. A request to the sandbox through that process's view of the file system
(`/proc/<pid>/root/...`) gets the app's answer; with a private namespace instead, the control,
the socket dir is empty there.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import layout
from tests.sandbox.fixtures import HELLO_APP, poll

pytestmark = pytest.mark.sandbox

# What ProtectSystem=strict + ReadWritePaths=DIR do in the unit's namespace, then wait.
UNIT_NAMESPACE = (
    'mount -o remount,bind,ro / && mount --bind "$0" "$0" && mount -o remount,bind,rw "$0" '
    '&& touch "$0/.unit-ready" && exec sleep 600'
)


@pytest.fixture
def shared_data_dir(ds_data_dir: Path) -> Iterator[Path]:
    """DS_DATA_DIR as a shared mount, as it is on a systemd host."""
    subprocess.run(["mount", "--bind", ds_data_dir, ds_data_dir], check=True)
    subprocess.run(["mount", "--make-shared", ds_data_dir], check=True)
    yield ds_data_dir
    subprocess.run(["umount", "--lazy", ds_data_dir], check=False)


@contextlib.contextmanager
def unit_namespace(data_dir: Path, propagation: str) -> Iterator[int]:
    proc = subprocess.Popen(
        ["unshare", "--mount", f"--propagation={propagation}", "sh", "-c", UNIT_NAMESPACE, data_dir]
    )
    try:
        poll(lambda: proc.poll() is not None or Path(f"{data_dir}/.unit-ready").exists())
        assert proc.poll() is None, "the namespace setup failed"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        Path(f"{data_dir}/.unit-ready").unlink(missing_ok=True)


@pytest.mark.parametrize("propagation,reaches", [("slave", True), ("private", False)])
def test_a_unit_namespace_sees_sandbox_sockets_mounted_after_it_started(
    shared_data_dir, start_supervisor, make_app, http_request, propagation, reaches
):
    sup = start_supervisor()
    spec = make_app({"app.ts": HELLO_APP}).spec()
    with unit_namespace(shared_data_dir, propagation) as pid:
        # Read-only outside DS_DATA_DIR, writable inside it, as the units have it.
        assert subprocess.run(["nsenter", "-t", str(pid), "-m", "touch", "/ro-probe"]).returncode
        probe = shared_data_dir / "rw-probe"
        assert subprocess.run(["nsenter", "-t", str(pid), "-m", "touch", probe]).returncode == 0
        probe.unlink()

        socket = sup.client.ensure(spec)  # the socket dir is mounted now, after the namespace
        seen = f"/proc/{pid}/root{socket}"
        if reaches:
            status, _, body = http_request(seen)
            assert (status, body) == (200, b"hello")
        else:
            assert not Path(seen).exists()
            assert Path(socket).exists()  # the host sees it: only the namespace does not
        assert Path(f"/proc/{pid}/root{layout.sandbox_run_dir(spec.id)}").is_dir()
    sup.client.stop(spec.id)
