"""deploy/dropserver-manage, the `manage.py` the install puts in /usr/local/bin: it reads the
instance's env file as systemd does (values taken as written), and runs commands as DS_RUN_AS
except `check`. Rendered here with the same substitutions install.sh makes, for a scratch
instance run by `nobody`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture
def wrapper(ds_data_dir, tmp_path) -> Path:
    env_file = tmp_path / "env"
    env_file.write_text(
        "# comments and blank lines are skipped\n\n"
        "DS_DOMAIN=wrapper.test\n"
        f"DS_DATA_DIR={ds_data_dir}\n"
        # Characters a shell would expand or split on must arrive as written.
        "SECRET_KEY=k$HOME;`x`&|'\"*?" + "s" * 50 + "\n"
        "DS_TEST_SPACED=two words\n"
    )
    os.chown(ds_data_dir, NOBODY, NOBODY)
    rendered = (REPO / "deploy" / "dropserver-manage").read_text()
    for key, value in {
        "@ENV_FILE@": str(env_file),
        "@DATA_DIR@": str(ds_data_dir),
        "@APP_DIR@": str(REPO),
        "@PYTHON@": str(REPO / ".venv" / "bin" / "python"),
        "@USER@": "nobody",
    }.items():
        rendered = rendered.replace(key, value)
    path = tmp_path / "dropserver-manage"
    path.write_text(rendered)
    path.chmod(0o755)
    return path


def run(wrapper: Path, *args: str) -> subprocess.CompletedProcess:
    # The caller's environment is not the instance's: only PATH comes along.
    return subprocess.run(
        [str(wrapper), *args],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_commands_run_as_the_run_as_user_with_the_env_file(wrapper, ds_data_dir):
    result = run(wrapper, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    database = ds_data_dir / "dropserver.sqlite3"
    assert database.stat().st_uid == NOBODY  # written by the user the units run as

    result = run(wrapper, "setup_link")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("https://dropid.wrapper.test/setup/")

    probe = "import os; print(os.getuid(), os.environ['SECRET_KEY'], os.environ['DS_TEST_SPACED'])"
    result = run(wrapper, "shell", "-c", probe)
    assert result.returncode == 0, result.stderr
    secret = "k$HOME;`x`&|'\"*?" + "s" * 50
    assert result.stdout.strip().splitlines()[-1] == f"{NOBODY} {secret} two words"


def test_check_stays_root(wrapper):
    result = run(wrapper, "shell", "-c", "import os; print(os.getuid())")
    assert result.stdout.strip().splitlines()[-1] == str(NOBODY)
    result = run(wrapper, "check", "--deploy")
    # Run as root, the sandbox checks include the cgroups (no S008 "not run as root").
    assert "dropserver.S008" not in result.stdout + result.stderr
    assert "System check identified" in result.stdout + result.stderr
