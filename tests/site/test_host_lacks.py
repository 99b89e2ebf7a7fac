"""A test this host cannot run is skipped on a developer's machine and fails in CI, so a
missing install step never hides behind a skip (tests/sandbox/fixtures.py, `host_lacks`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.sandbox.fixtures import REPO

PROBE = """
from tests.sandbox.fixtures import host_lacks

def test_needs_what_is_missing():
    host_lacks("no such device")
"""


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 failed")])
def test_a_missing_capability_skips_only_outside_ci(tmp_path, ci, outcome):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--rootdir", str(tmp_path), "--confcutdir", str(tmp_path), str(probe)],
        cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout + done.stderr
    if ci:
        assert "the CI host lacks what this test needs: no such device" in done.stdout
