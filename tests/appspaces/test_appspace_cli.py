"""`manage.py create_appspace --owner EMAIL --app APP --version V --subdomain NAME
[--allow-net HOST ...] [--json]`: the panel's checks and job from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from appspaces.models import Appspace, Job
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    make_appspace,
    make_version,
    notes_app,
    own_uids,
)

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_appspace", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


ARGS = ("--owner", "Alice@Example.com", "--app", "notes", "--version", "1.0.0")


@pytest.mark.sandbox
def test_it_creates_the_appspace_and_prints_its_address(alice, supervisor):
    make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    out = run(*ARGS, "--subdomain", "Notes", "--allow-net", "api.example.com")
    appspace = Appspace.objects.get()
    assert out == f"http://notes.{settings.DS_DOMAIN}{settings.DS_PORT_SUFFIX}/\n"
    assert (appspace.status, appspace.data_schema) == (Appspace.Status.ACTIVE, 1)
    assert list(appspace.allowlist.values_list("kind", "value")) == [("server", "api.example.com")]
    assert (appspace.data_path / "notes.json").is_file()


@pytest.mark.sandbox
def test_it_prints_one_json_object(alice, supervisor):
    version = make_version(alice, {"app.ts": notes_app(1)}, schema=1)
    out = run(
        "--owner", "alice@example.com", "--app", str(version.app.public_id), "--version",
        "1.0.0", "--subdomain", "notes", "--disk-mb", "40", "--memory-mb", "128",
        "--cpu-percent", "30", "--json",
    )  # fmt: skip
    appspace = Appspace.objects.get()
    assert json.loads(out) == {
        "ok": True,
        "appspace_id": str(appspace.public_id),
        "subdomain": "notes",
        "domain": f"notes.{settings.DS_DOMAIN}",
        "url": appspace.url,
        "app_id": str(version.app.public_id),
        "app": "Notes",
        "version_id": str(version.public_id),
        "version": "1.0.0",
        "schema": 1,
        "allow_net": [],
        "disk_mb": 40,
        "memory_mb": 128,
        "cpu_percent": 30,
        "job_id": str(Job.objects.get().public_id),
    }
    assert (appspace.disk_mb, appspace.memory_mb, appspace.cpu_percent) == (40, 128, 30)


@pytest.mark.sandbox
def test_a_failed_creation_exits_with_the_reason_and_leaves_nothing(alice, supervisor):
    make_version(alice, {"app.ts": notes_app(2, fail=True)}, schema=2)
    with pytest.raises(CommandError, match="disk on fire halfway through"):
        run(*ARGS, "--subdomain", "notes")
    assert not Appspace.objects.exists()


@pytest.mark.parametrize(
    "args,reason",
    [
        (("--owner", "nobody@example.com"), "No user has the email address nobody@example.com"),
        (("--app", "Mail"), "alice@example.com has no app named Mail"),
        (("--version", "9.9.9"), "Notes has no version 9.9.9 (installed: 1.0.0)"),
        (("--subdomain", "www"), "“www” is reserved"),
        (("--subdomain", "a.b"), "without dots"),
        (("--subdomain", "taken"), "is taken"),
        (("--allow-net", "10.0.0.1"), "private"),
        (("--allow-net", "https://api.example.com"), "without a scheme"),
        (("--disk-mb", "99999999"), "Disk must be between 10 and 10240 MB"),
        (("--memory-mb", "1"), "must be between"),
        (("--cpu-percent", "1000"), "must be between"),
    ],
)
def test_it_refuses_with_the_reason(alice, args, reason):
    version = make_version(alice)
    make_appspace(alice, version, subdomain="taken")
    options = dict(zip(ARGS[::2], ARGS[1::2], strict=True)) | {"--subdomain": "notes"}
    extra = []
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name == "--allow-net":
            extra += [name, value]
        else:
            options[name] = value
    argv = [item for pair in options.items() for item in pair] + extra
    with pytest.raises(CommandError) as raised:
        run(*argv)
    assert reason in str(raised.value)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("create_appspace", *argv, "--json", stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue()) == {"ok": False, "error": str(raised.value)}
    assert Appspace.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_with_the_reason(alice):
    s = connection.settings_dict
    env = dict(
        os.environ,
        DS_DATA_DIR=str(settings.DS_DATA_DIR),
        DATABASE_URL=f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "create_appspace", "--owner", "alice@example.com",
         "--app", "Notes", "--version", "1.0.0", "--subdomain", "notes"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "alice@example.com has no app named Notes" in done.stderr
