"""Retention pruning, the per-user cap, and when scheduled backups are due."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from appspaces.models import Appspace, Job
from backups.models import Backup
from backups.retention import retention_apply
from backups.schedule import backups_due, backups_schedule
from backups.services import BackupError, backup_create
from backups.store import backup_policy
from tests.backups.conftest import fill

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday


@pytest.fixture
def appspace(alice, make_appspace):
    space = make_appspace(alice)
    fill(space, {"a.txt": "a"})
    return space


def _ready(appspace, kind, when, name=None) -> Backup:
    backup = Backup.objects.create(
        appspace=appspace, kind=kind, state=Backup.State.READY, created=when,
        file_name=name or f"{when:%Y%m%dT%H%M%S}-{kind}.tar.zst", size_bytes=10,
    )  # fmt: skip
    backup.path.parent.mkdir(parents=True, exist_ok=True)
    backup.path.write_bytes(b"x" * 10)
    return backup


def test_it_keeps_7_daily_4_weekly_and_recent_pre_migration_backups(appspace):
    scheduled = [_ready(appspace, "scheduled", NOW - timedelta(hours=12 * i)) for i in range(80)]
    pre = [_ready(appspace, "pre-migration", NOW - timedelta(days=d, minutes=7)) for d in (3, 40)]
    manual = _ready(appspace, "manual", NOW - timedelta(days=300))

    pruned = retention_apply(appspace=appspace, now=NOW)

    kept = set(Backup.objects.values_list("pk", flat=True))
    # Newest of each of the last 7 days: the 12:00 one of each day (two per day were made).
    daily = {b.pk for b in scheduled if b.created.hour == 12 and b.created > NOW - timedelta(7)}
    assert daily <= kept and len(daily) == 7
    # Newest of each of the last 4 ISO weeks: this week's (Friday 27th) and last week's (Sunday
    # 22nd) are daily ones already, so two more are kept: the 15th and the 8th.
    weeks = {b.created.isocalendar()[:2] for b in scheduled if b.pk in kept}
    assert len(weeks) == 4
    assert len([b for b in scheduled if b.pk in kept]) == 7 + 2
    assert pre[0].pk in kept and pre[1].pk not in kept
    assert manual.pk in kept
    assert pruned == 80 - 9 + 1
    for backup in scheduled:
        assert backup.path.exists() == (backup.pk in kept)


def test_it_never_prunes_the_newest_backup(appspace):
    policy = backup_policy(appspace)
    policy.keep_pre_migration_days = 1
    policy.save()
    only = _ready(appspace, "pre-migration", NOW - timedelta(days=90))
    retention_apply(appspace=appspace, now=NOW)
    assert Backup.objects.filter(pk=only.pk).exists()


def test_it_refuses_a_backup_over_the_per_user_cap_with_a_clear_message(
    appspace, alice, make_appspace, settings
):
    settings.DS_BACKUP_USER_CAP_MB = 1
    other = make_appspace(alice)
    fill(other, {"big.bin": os.urandom(900 * 1024)})
    first = backup_create(appspace=other, kind=Backup.Kind.MANUAL)  # 0.9 MB: fits
    fill(appspace, {"big.bin": os.urandom(300 * 1024)})
    with pytest.raises(
        BackupError,
        match=r"This backup \(30\d\.\d KB\) would bring your backups to 1\.\d MB, over the 1\.0 MB",
    ) as caught:
        backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)
    assert "existing backups are kept" in str(caught.value)
    failed = appspace.backups.get()
    assert failed.state == Backup.State.FAILED and "1.0 MB" in failed.message
    assert not failed.path.exists() and first.path.exists()
    assert sorted(p.name for p in failed.path.parent.iterdir()) == []
    # Over the cap, nothing new starts at all.
    Backup.objects.filter(pk=first.pk).update(size_bytes=2 * 1024 * 1024)
    with pytest.raises(BackupError, match="No new backup can be made"):
        backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)


def test_it_finds_appspaces_due_by_their_interval(alice, appspace, make_appspace):
    backup_policy(appspace)
    assert backups_due(NOW) == [appspace]  # never backed up
    _ready(appspace, "scheduled", NOW - timedelta(hours=23))
    assert backups_due(NOW) == []
    assert backups_due(NOW + timedelta(hours=1, minutes=1)) == [appspace]
    policy = backup_policy(appspace)
    policy.interval_hours = 6
    policy.save()
    assert backups_due(NOW - timedelta(hours=16)) == [appspace]
    policy.enabled = False
    policy.save()
    assert backups_due(NOW + timedelta(days=3)) == []


def test_it_skips_paused_busy_and_recently_failed_appspaces(alice, appspace, make_appspace):
    paused = make_appspace(alice, status=Appspace.Status.PAUSED)
    assert paused not in backups_due(NOW)
    Job.objects.create(kind=Job.Kind.MIGRATE, owner=alice, appspace=appspace)
    assert backups_due(NOW) == []
    Job.objects.update(state=Job.State.SUCCEEDED)
    Backup.objects.create(
        appspace=appspace, kind="scheduled", state="failed", created=NOW - timedelta(minutes=10),
        file_name="f.tar.zst",
    )  # fmt: skip
    assert backups_due(NOW) == []
    assert backups_due(NOW + timedelta(minutes=51)) == [appspace]


def test_it_queues_one_job_per_due_appspace_however_often_it_runs(appspace, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    first = backups_schedule(NOW)
    again = backups_schedule(NOW)
    assert len(first) == 1 and again == []
    job = first[0]
    assert (job.kind, job.appspace, job.params["backup_kind"]) == ("backup", appspace, "scheduled")
