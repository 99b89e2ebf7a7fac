"""`manage.py install_app`: the same pipeline from the command line, waiting for the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from appspaces.models import App, AppVersion, Job
from tests.appspaces.conftest import assert_nothing_left, hello_app, manifest_for

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("install_app", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.sandbox
def test_it_installs_and_prints_the_app_and_version(supervisor, alice, make_package):
    out, err = run(str(make_package(name="hello.tar.gz")), "--owner", "Alice@Example.com")
    app, version = App.objects.get(), AppVersion.objects.get()
    assert out.strip() == (
        f"Installed Hello 1.0.0 for alice@example.com (app {app.public_id}, "
        f"version {version.public_id})."
    )
    assert err == ""


@pytest.mark.sandbox
def test_it_prints_one_json_object(supervisor, alice, make_package):
    package = make_package({"app.ts": hello_app(2)}, manifest=manifest_for("1.2.3"))
    out, _ = run(str(package), "--owner", "alice@example.com", "--json")
    data = json.loads(out)
    version = AppVersion.objects.get()
    assert data == {
        "ok": True,
        "app_id": str(version.app.public_id),
        "version_id": str(version.public_id),
        "name": "Hello",
        "version": "1.2.3",
        "schema": 2,
        "job_id": str(Job.objects.get().public_id),
        "warnings": [],
    }


@pytest.mark.sandbox
def test_it_exits_with_the_reason_when_the_install_fails(supervisor, alice, make_package):
    package = make_package({"app.ts": 'throw new Error("nope");'})
    with pytest.raises(CommandError, match="The app failed when it was started.*nope"):
        run(str(package), "--owner", "alice@example.com")
    assert_nothing_left()


@pytest.mark.sandbox
def test_it_refuses_warnings_unless_accepted(supervisor, alice, make_package):
    package = make_package(manifest={"version": "1.0.0", "license": "MIT"})
    with pytest.raises(CommandError) as refused:
        run(str(package), "--owner", "alice@example.com")
    assert "--accept-warnings" in str(refused.value)
    assert "name: is missing" in str(refused.value)
    assert_nothing_left()
    assert Job.objects.get().state == Job.State.CANCELLED

    out, err = run(str(package), "--owner", "alice@example.com", "--accept-warnings")
    assert "warning: name: is missing" in err
    assert out.startswith("Installed package-0 1.0.0")


def test_it_says_to_start_the_supervisor(alice, make_package):
    with pytest.raises(CommandError, match=r"start `python manage.py sandboxd`"):
        run(str(make_package()), "--owner", "alice@example.com")
    assert not Job.objects.exists()


def test_it_refuses_unknown_owners_and_missing_files(alice, tmp_path):
    with pytest.raises(CommandError, match="No user has the email address eve@example.com"):
        run("x.tar.gz", "--owner", "eve@example.com")
    with pytest.raises(CommandError, match="is not a file"):
        call_command(
            "install_app", str(tmp_path / "missing.tar.gz"), "--owner", "alice@example.com",
            "--json", stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.mark.django_db(transaction=True)  # the command runs in its own process
def test_the_command_exits_non_zero_with_a_json_error(alice, make_package, ds_data_dir):
    env = dict(os.environ, DS_DATA_DIR=str(ds_data_dir), DATABASE_URL=database_url())
    result = subprocess.run(
        [sys.executable, "manage.py", "install_app", str(make_package()), "--owner",
         "alice@example.com", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "manage.py sandboxd" in result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False and "sandbox supervisor is not running" in data["error"]
