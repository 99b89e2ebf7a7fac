"""The README's commands for scripts: `--json` prints one JSON object (`ok` true, or false with
an `error` and a non-zero exit), restore_appspace never waits on a terminal it does not have,
and list_appspaces / appspace_status report what an operator asks about."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from appspaces.models import BlockedConnection
from backups.models import Backup
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=1)
    fill(space, {"a.txt": "alpha", "b/c.txt": "gamma" * 100})
    return space


def run(*args) -> dict:
    """call_command with --json: exactly one JSON object on stdout."""
    out = io.StringIO()
    call_command(*args, "--json", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def run_failing(*args) -> tuple[dict, CommandError]:
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command(*args, "--json", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0]), failed.value


def test_backup_verify_and_restore_answer_in_json(appspace):
    made = run("backup_appspace", appspace.subdomain)
    backup = Backup.objects.get()
    assert made["ok"] is True and made["backup_id"] == str(backup.public_id)
    assert made["path"] == str(backup.path) and made["files"] == 2 and made["verified"] is True

    checked = run("verify_backups")
    assert checked == {
        "ok": True,
        "checked": 1,
        "bad": 0,
        "backups": [
            {
                "appspace": appspace.subdomain,
                "backup_id": str(backup.public_id),
                "file_name": backup.file_name,
                "ok": True,
                "error": None,
            }
        ],
    }

    saved = tree_hashes(appspace.data_path)
    (appspace.data_path / "a.txt").write_text("gone")
    restored = run("restore_appspace", appspace.subdomain, str(backup.path), "--yes")
    assert restored["ok"] is True and restored["files"] == 2
    assert tree_hashes(appspace.data_path) == saved


def test_a_damaged_archive_is_a_json_report_with_exit_status_1(appspace):
    run("backup_appspace", appspace.subdomain)
    backup = Backup.objects.get()
    backup.path.write_bytes(backup.path.read_bytes()[:-40])
    report, error = run_failing("verify_backups")
    assert error.returncode == 1
    assert report["ok"] is False and "1 backup(s) failed" in report["error"]
    assert report["bad"] == 1 and "truncated" in report["backups"][0]["error"]


@pytest.mark.parametrize(
    "args",
    [
        ("backup_appspace", "nope"),
        ("restore_appspace", "nope", "x.tar.zst", "--yes"),
        ("verify_backups",),  # nothing to check is fine; see below
        ("appspace_status", "nope"),
        ("list_appspaces", "--owner", "nobody@example.com"),
        ("package_app", "/nonexistent-app-folder", "-o", "/tmp/never-written.tar.gz"),
    ],
)
def test_errors_are_one_json_object_and_a_non_zero_exit(args):
    if args == ("verify_backups",):
        assert run(*args) == {"ok": True, "checked": 0, "bad": 0, "backups": []}
        return
    report, error = run_failing(*args)
    assert report["ok"] is False and report["error"] == str(error)
    assert error.returncode != 0


def test_restore_without_a_terminal_asks_nothing_and_changes_nothing(appspace, monkeypatch):
    call_command("backup_appspace", appspace.subdomain, stdout=io.StringIO())
    backup = Backup.objects.get()
    (appspace.data_path / "a.txt").write_text("changed")
    before = tree_hashes(appspace.data_path)
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)  # a script's stdin: no terminal
        with pytest.raises(CommandError, match="no terminal to ask on; pass --yes"):
            call_command("restore_appspace", appspace.subdomain, str(backup.path))
        report, _ = run_failing("restore_appspace", appspace.subdomain, str(backup.path))
    assert "pass --yes" in report["error"]
    assert tree_hashes(appspace.data_path) == before


def test_list_and_status_report_state_limits_backup_and_approvals(appspace, bob, make_appspace):
    other = make_appspace(bob)
    run("backup_appspace", appspace.subdomain)
    BlockedConnection.objects.create(
        appspace=appspace, host="api.example.com", port=443, count=3,
        first_seen="2026-01-01T00:00:00Z", last_seen="2026-01-02T00:00:00Z",
    )  # fmt: skip

    listed = run("list_appspaces")
    assert listed["count"] == 2
    assert {a["subdomain"] for a in listed["appspaces"]} == {appspace.subdomain, other.subdomain}
    mine = run("list_appspaces", "--owner", "alice@example.com")
    assert [a["subdomain"] for a in mine["appspaces"]] == [appspace.subdomain]
    assert mine["appspaces"][0]["last_backup"] is not None

    status = run("appspace_status", appspace.subdomain.upper())
    assert status["subdomain"] == appspace.subdomain and status["status"] == appspace.status
    assert status["limits"] == {
        "memory_bytes": appspace.memory_mb * 2**20,
        "cpu_percent": appspace.cpu_percent,
        "disk_bytes": appspace.disk_mb * 2**20,
    }
    assert status["last_backup"]["id"] == str(Backup.objects.get().public_id)
    assert status["pending_approvals"] == [
        {"host": "api.example.com", "port": 443, "attempts": 3, "last": "2026-01-02T00:00:00+00:00"}
    ]
    assert set(status["usage"]) >= {"disk_bytes", "over_quota", "today", "week", "month"}
    text = io.StringIO()
    call_command("appspace_status", appspace.subdomain, stdout=text)
    assert "1 network request(s) waiting" in text.getvalue()


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.parametrize(
    "args",
    [
        ["restore_appspace", "nope", "backup.tar.zst"],
        ["appspace_status", "nope"],
        ["backup_appspace", "nope"],
    ],
)
def test_as_a_script_sees_it_one_json_line_exit_1_no_traceback(args, tmp_path):
    env = dict(os.environ, DATABASE_URL=_database_url(), DS_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", *args, "--json"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout) == {"ok": False, "error": "No appspace 'nope'."}
    assert "Traceback" not in result.stderr
