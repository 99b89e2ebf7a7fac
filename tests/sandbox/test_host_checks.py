"""Refuse to be unsafe: a host without bubblewrap gets clear errors, unless a developer opts out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import layout
from sandbox.protocol import SandboxHostUnsafe
from sandbox.walls import cgroups
from tests.sandbox.fixtures import HELLO_APP, poll

pytestmark = pytest.mark.sandbox


def test_without_bubblewrap_sandboxes_refuse_and_say_what_to_install(start_supervisor, make_app):
    sup = start_supervisor(DS_SANDBOX_BWRAP="/nonexistent/bwrap")
    info = sup.client.ping()
    assert info["safe"] is False
    app = make_app({"app.ts": HELLO_APP})
    with pytest.raises(SandboxHostUnsafe, match="apt-get install -y bubblewrap"):
        sup.client.ensure(app.spec())
    with pytest.raises(SandboxHostUnsafe, match="bubblewrap"):
        sup.client.run_once(app.job_spec(), "app-init")
    assert sup.cgroup_pids() == set()


def test_the_unsafe_development_mode_runs_apps_and_says_so_loudly(
    start_supervisor, make_app, http_request
):
    sup = start_supervisor(DS_SANDBOX_BWRAP="/nonexistent/bwrap", DS_SANDBOX_UNSAFE_DEV=1)
    spec = make_app({"app.ts": HELLO_APP}).spec()
    status, _, body = http_request(sup.client.ensure(spec))
    assert (status, body) == (200, b"hello")
    poll(lambda: "UNSAFE DEVELOPMENT MODE" in sup.log() and spec.id in sup.log())
    # Still in its cgroups and under its own uid: only the bubblewrap layer is missing.
    deno = sup.deno_pid(spec.id)
    status_text = Path(f"/proc/{deno}/status").read_text()
    assert f"Uid:\t{spec.uid}\t" in status_text
    sup.client.stop(spec.id)


def test_no_cgroups_means_a_message_naming_what_is_missing():
    mountinfo = "22 1 0:20 / /proc rw - proc proc rw\n"
    with pytest.raises(cgroups.CgroupError, match="memory, cpu, cpuacct, pids, freezer"):
        cgroups.probe("dropserver/x", mountinfo=mountinfo)


def test_this_host_gets_the_v1_backend_for_real():
    backend = cgroups.probe(f"dropserver/{layout.instance_name()}")
    assert backend.version == ("v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1")


def test_a_resolver_list_with_only_ipv6_nameservers_is_reported(tmp_path):
    from sandbox.walls import preflight

    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver fd00::53\nnameserver 2001:db8::1\noptions edns0\n")
    assert preflight.warn_ipv6_only_resolver(conf) is True
    conf.write_text("nameserver fd00::53\nnameserver 10.0.0.53\n")
    assert preflight.warn_ipv6_only_resolver(conf) is False


def test_without_libseccomp_the_host_is_unsafe_and_says_what_to_install(monkeypatch):
    import sys

    from sandbox.walls import preflight

    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if the binding were missing
    check = preflight.check_host()
    assert check.seccomp_filter is None and not check.safe
    assert any("apt-get install -y libseccomp2" in p for p in check.problems)
