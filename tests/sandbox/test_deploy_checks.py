"""The sandbox preflight in `manage.py check --deploy` (sandbox/walls/checks.py): clean on this
host, and each way a host can fail gives its own id and a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from sandbox import layout
from sandbox.walls import checks

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")


def ids(found) -> list[str]:
    return [c.id for c in found]


def only(found, check_id: str):
    assert ids(found) == [check_id], [(c.id, c.msg) for c in found]
    return found[0]


def script(directory: Path, name: str, body: str) -> str:
    """An executable any uid can run (the bwrap probe runs as a sandbox uid)."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_this_host_passes_every_sandbox_check():
    assert checks.check_sandbox_host() == []
    # The trial cgroup and the instance group it needed are gone again.
    assert not (CGROUP_ROOT / "memory" / "dropserver" / layout.instance_name()).exists()


def test_the_sandbox_checks_run_with_check_deploy_only(settings):
    settings.DS_SANDBOX_BWRAP = "/nonexistent/bwrap"
    call_command("check")  # not a deploy run: nothing raised
    with pytest.raises(Exception, match=r"dropserver\.S001"):
        call_command("check", "--deploy", "--fail-level", "ERROR")


def test_s001_bubblewrap_missing(settings):
    settings.DS_SANDBOX_BWRAP = "/nonexistent/bwrap"
    error = only(checks.check_sandbox_host(), "dropserver.S001")
    assert "bubblewrap not found at /nonexistent/bwrap" in error.msg
    assert "apt-get install -y bubblewrap" in error.msg


def test_s002_bubblewrap_that_cannot_build_a_sandbox(settings, ds_data_dir):
    settings.DS_SANDBOX_BWRAP = script(
        ds_data_dir, "bwrap", 'echo "bwrap: setting up uid map: Permission denied" >&2; exit 1\n'
    )
    error = only(checks.check_sandbox_host(), "dropserver.S002")
    assert "cannot build a sandbox here: exit status 1: bwrap: setting up uid map" in error.msg
    assert "unprivileged_userns_clone" in error.hint


def test_s003_cgroups_that_cannot_be_created(settings):
    settings.DS_SANDBOX_CGROUP_PARENT = "cgroup.procs"  # a file, not a directory, in each hierarchy
    error = only(checks.check_sandbox_host(), "dropserver.S003")
    assert error.msg.startswith("cgroups: ")
    assert "Not a directory" in error.msg


def test_s003_delegation_asked_for_outside_a_delegated_cgroup(ds_data_dir):
    """Run as the supervisor would be outside its unit: in the top memory cgroup."""
    env = dict(
        os.environ,
        DS_DATA_DIR=str(ds_data_dir),
        DS_SANDBOX_CGROUP_DELEGATED="1",
        DJANGO_SETTINGS_MODULE="dropserver_site.settings",
    )
    result = subprocess.run(
        [
            "sh",
            "-c",
            f'echo $$ > {CGROUP_ROOT}/memory/cgroup.procs && exec "$@"',
            "sh",
            sys.executable,
            "manage.py",
            "check",
            "--deploy",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "(dropserver.S003) cgroups: DS_SANDBOX_CGROUP_DELEGATED=1" in result.stderr
    assert "Delegate=yes" in result.stderr


def test_s004_a_host_user_inside_the_sandbox_uid_range(settings):
    settings.DS_SANDBOX_UID_BASE = 65534 - 10  # nobody (65534) is then a sandbox uid
    error = only(checks.check_sandbox_host(), "dropserver.S004")
    assert "the sandbox uid range 65524-" in error.msg
    assert "user nobody (65534)" in error.msg
    assert "DS_SANDBOX_UID_BASE" in error.hint


def test_s004_subordinate_ids_inside_the_sandbox_uid_range(settings, tmp_path):
    settings.DS_SANDBOX_UID_BASE = 200000
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\n")  # bob reaches 200000+
    subgid.write_text("alice:100000:65536\n")
    problem = checks.uid_range_problem(subuid, subgid)
    assert problem is not None
    assert f"{subuid}: bob:165536:65536" in problem and "alice" not in problem
    subuid.write_text("alice:100000:65536\n")
    assert checks.uid_range_problem(subuid, subgid) is None


def test_s005_deno_missing(settings):
    settings.DS_SANDBOX_DENO = "/nonexistent/deno"
    error = only(checks.check_sandbox_host(), "dropserver.S005")
    assert "Deno at /nonexistent/deno is missing or not executable" in error.msg


def test_s006_deno_of_another_version(settings, ds_data_dir):
    settings.DS_SANDBOX_DENO = script(
        ds_data_dir, "deno", 'echo "deno 2.7.0 (stable, release, x86_64-unknown-linux-gnu)"\n'
    )
    pinned = checks.pinned_deno_version()
    error = only(checks.check_sandbox_host(), "dropserver.S006")
    assert f"is 2.7.0, not the pinned {pinned}" in error.msg
    assert "requirements/base.lock" in error.hint


def test_s007_libseccomp_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if the binding were missing
    error = only(checks.check_sandbox_host(), "dropserver.S007")
    assert "libseccomp" in error.msg


def test_s008_not_root_says_what_was_not_checked(ds_data_dir):
    os.chown(ds_data_dir, 65534, 65534)  # its development secret_key is written there
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        + [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO,
        env=dict(os.environ, DS_DATA_DIR=str(ds_data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "(dropserver.S008) Not run as root: whether the supervisor can create cgroups" in output
    assert "dropserver.S003" not in output


def test_the_checked_uid_range_covers_every_uid_appspaces_hands_out():
    from appspaces.sandboxes import INSTALL_UID_OFFSET

    # appspaces: base + id, install jobs: base + INSTALL_UID_OFFSET + (job id % the offset)
    assert checks.SANDBOX_UID_SPAN == 2 * INSTALL_UID_OFFSET
