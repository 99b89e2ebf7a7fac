"""Operator commands: backup_appspace, restore_appspace, verify_backups (non-zero if bad)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.models import Backup
from tests.backups.conftest import fill, tree_hashes

pytestmark = pytest.mark.django_db


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice, schema=1)
    fill(space, {"a.txt": "alpha", "b/c.txt": "gamma" * 100})
    return space


def test_it_backs_up_and_restores_from_the_command_line(appspace, capsys):
    call_command("backup_appspace", appspace.subdomain)
    backup = Backup.objects.get()
    out = capsys.readouterr().out
    assert str(backup.path) in out and "verified: yes" in out
    saved = tree_hashes(appspace.data_path)
    (appspace.data_path / "a.txt").write_text("gone")
    call_command("restore_appspace", appspace.subdomain, str(backup.path), "--yes")
    assert tree_hashes(appspace.data_path) == saved
    assert "Restored 2 files" in capsys.readouterr().out


def test_it_names_an_unknown_appspace(db):
    with pytest.raises(CommandError, match="No appspace 'nope'"):
        call_command("backup_appspace", "nope")


def test_it_reports_every_bad_archive_and_exits_non_zero(appspace, alice, make_appspace, capsys):
    call_command("backup_appspace", appspace.subdomain)
    other = make_appspace(alice)
    fill(other, {"x.txt": "x"})
    call_command("backup_appspace", other.subdomain)
    call_command("verify_backups")
    assert "2 backup(s) checked, 0 bad." in capsys.readouterr().out

    damaged = Backup.objects.get(appspace=other)
    data = damaged.path.read_bytes()
    damaged.path.write_bytes(data[: len(data) - 40])
    with pytest.raises(CommandError) as failed:
        call_command("verify_backups")
    assert failed.value.returncode == 1
    out = capsys.readouterr().out
    assert f"BAD  {other.subdomain}" in out and "truncated" in out
    assert "2 backup(s) checked, 1 bad." in out
    damaged.refresh_from_db()
    assert "truncated" in damaged.verify_error
