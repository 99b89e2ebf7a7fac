"""The usage cards and their figures (today / 7 / 30 days, disk against the quota, the read-only
notice), how samples of the supervisor's counters become deltas (restarts, reboots, late and
stale readings), the quota's hysteresis, pruning, and the beat schedule."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils import timezone

from appspaces import tasks
from appspaces.models import App, Appspace, AppspaceUsageDay, AppVersion
from appspaces.usage import counters, quota
from appspaces.usage.counters import Deltas, Sample, counter_deltas
from appspaces.usage.quota import quota_readonly
from tests.sandbox.fixtures import host_lacks

MB = 1024 * 1024
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def appspace_for(owner, *, subdomain: str = "notes", disk_mb: int = 100, **fields) -> Appspace:
    app = App.objects.create(owner=owner, name="Notes")
    version = AppVersion.objects.create(
        app=app, version="1.0.0", version_key="1.0.0", entrypoint="app.ts"
    )
    return Appspace.objects.create(
        owner=owner,
        app=app,
        app_version=version,
        subdomain=subdomain,
        status=Appspace.Status.ACTIVE,
        memory_mb=256,
        cpu_percent=50,
        disk_mb=disk_mb,
        **fields,
    )


def day(appspace: Appspace, days_ago: int, **figures) -> AppspaceUsageDay:
    return AppspaceUsageDay.objects.create(
        appspace=appspace, day=counters.today() - dt.timedelta(days=days_ago), **figures
    )


def render(template: str, appspace: Appspace, user, **context) -> str:
    request = RequestFactory().get("/", HTTP_HOST=settings.DS_PANEL_HOST)
    request.user = user
    html = render_to_string(template, {"appspace": appspace, **context}, request=request)
    assert not INLINE_SCRIPT.search(html), "inline <script>"
    assert not INLINE_STYLE.search(html), "inline style"
    assert not EVENT_HANDLER.search(html), "event-handler attribute"
    return html


def cell(html: str, key: str) -> str:
    match = re.search(rf'data-usage="{key}">([^<]*)<', html)
    assert match, key
    return match.group(1).replace("\xa0", " ").strip()


# --- The cards ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_today_the_last_7_and_30_days(alice, django_assert_max_num_queries):
    appspace = appspace_for(alice, disk_bytes=30 * MB, disk_measured=timezone.now())
    day(
        appspace,
        0,
        cpu_seconds=65,
        running_seconds=600,
        memory_peak_bytes=50 * MB,
        io_read_bytes=MB,
        io_write_bytes=2 * MB,
        disk_bytes_max=30 * MB,
    )
    day(
        appspace,
        3,
        cpu_seconds=600,
        running_seconds=3600,
        memory_peak_bytes=120 * MB,
        io_write_bytes=8 * MB,
        disk_bytes_max=40 * MB,
    )
    day(appspace, 6, cpu_seconds=1, running_seconds=1)  # the 7th day back: still in the week
    day(appspace, 20, cpu_seconds=3600, running_seconds=86400, memory_peak_bytes=200 * MB)
    day(appspace, 30, cpu_seconds=99999, memory_peak_bytes=250 * MB)  # 31 days back: out
    other = appspace_for(alice, subdomain="other")
    day(other, 0, cpu_seconds=5000, memory_peak_bytes=255 * MB)  # never mixed in

    # One query for the figures (an aggregate), one for the 30-day charts (the day rows).
    with django_assert_max_num_queries(2):
        html = render("appspaces/_usage.html", appspace, alice)

    assert cell(html, "today-cpu") == "1 min 5 s"
    assert cell(html, "week-cpu") == "11 min 6 s"
    assert cell(html, "month-cpu") == "1 h 11 min"
    assert cell(html, "today-running") == "10 min"
    assert cell(html, "week-running") == "1 h 10 min"
    assert cell(html, "month-running") == "1 d 1 h"
    assert cell(html, "today-memory") == "50.0 MB"
    assert cell(html, "week-memory") == "120.0 MB"
    assert cell(html, "month-memory") == "200.0 MB"
    assert cell(html, "week-disk") == "40.0 MB"
    assert cell(html, "today-read") == "1.0 MB"
    assert cell(html, "week-write") == "10.0 MB"
    text = html.replace("\xa0", " ")
    assert "30.0 MB of 100.0 MB used (30%)" in text
    assert 'max="104857600"' in html and 'value="31457280"' in html  # the bar
    assert "limit: 50% of one core" in text and "limit: 256.0 MB" in text
    assert "Measured 0" in text  # "0 minutes ago"
    assert "read-only" not in text.lower()
    assert "css/usage.css" in html


@pytest.mark.django_db
def test_it_says_plainly_when_data_is_read_only_over_the_quota(alice):
    appspace = appspace_for(alice, disk_mb=1, disk_bytes=2 * MB, data_readonly=True)
    html = render("appspaces/_usage.html", appspace, alice, measure_url="/measure")
    text = html.replace("\xa0", " ")
    assert "Read-only: over disk quota — free space to resume writing." in text
    assert "2.0 MB of the 1.0 MB" in text
    assert "972.8 KB" in text  # writing resumes under 95% of the quota
    assert "Not measured yet." in text
    assert 'action="/measure"' in html and "csrfmiddlewaretoken" in html
    assert "(200%)" in text

    summary = render("appspaces/_usage_summary.html", appspace, alice).replace("\xa0", " ")
    assert "Disk 2.0 MB of 1.0 MB (200%)" in summary
    assert "read-only: over disk quota" in summary


@pytest.mark.django_db
def test_it_sums_a_week_of_cpu_in_the_dashboard_line(alice):
    appspace = appspace_for(alice, disk_bytes=512 * 1024)
    day(appspace, 0, cpu_seconds=2.6)
    day(appspace, 5, cpu_seconds=120)
    day(appspace, 8, cpu_seconds=1000)  # older than a week
    summary = render("appspaces/_usage_summary.html", appspace, alice).replace("\xa0", " ")
    assert "Disk 512.0 KB of 100.0 MB (0%)" in summary
    assert "CPU last 7 days 2 min 3 s" in summary
    assert "read-only" not in summary
    assert "\n" not in summary.strip()  # one line


def test_it_words_durations_plainly():
    from appspaces.templatetags.usage_tags import duration, share

    assert [duration(s) for s in (0, 0.04, 4.25, 10, 59.6, 61, 3600, 3660, 90000, 86400)] == [
        "0 s",
        "0 s",
        "4.2 s",
        "10 s",
        "1 min",
        "1 min 1 s",
        "1 h",
        "1 h 1 min",
        "1 d 1 h",
        "1 d",
    ]
    assert duration(None) == "" and duration(-3) == "0 s"
    assert share(1, 4) == "25%" and share(1, 0) == ""


# --- Counters become deltas --------------------------------------------------------------------


def sample(pid=100, start=1000.0, uptime=10.0, cpu=2e9, boot="b1", io=(0, 0)) -> Sample:
    return Sample(pid, start, boot, uptime, int(cpu), io[0], io[1], 30 * MB)


def kept_from(s: Sample, **more) -> dict:
    return {**s.to_json(), **more}


def test_it_adds_only_the_growth_within_a_run():
    deltas, keep = counter_deltas(
        kept_from(sample(cpu=2e9, uptime=10, io=(5, 7))),
        sample(cpu=3.5e9, uptime=70, io=(15, 7), start=1000.4),
    )
    assert deltas == Deltas(1.5, 60.0, 10, 0)
    assert keep["cpu_ns"] == 3.5e9 and keep["uptime_s"] == 70


def test_it_adds_a_new_run_whole_and_remembers_the_old_one():
    old = sample(pid=100, start=1000.0, cpu=9e9, uptime=500)
    new = sample(pid=200, start=1600.0, cpu=0.2e9, uptime=3)
    deltas, keep = counter_deltas(kept_from(old), new)
    assert deltas == Deltas(0.2, 3.0, 0, 0)  # never 0.2 - 9 (negative)
    assert keep["pid"] == 200 and keep["prev"] == {"pid": 100, "boot": "b1", "start": 1000.0}

    # A late reading of the old run (a collector that sampled before the restart) adds nothing.
    late = sample(pid=100, start=1000.0, cpu=9.5e9, uptime=560)
    assert counter_deltas(keep, late) == (Deltas(), None)


def test_it_ignores_older_readings_and_older_runs():
    kept = kept_from(sample(cpu=5e9, uptime=100))
    assert counter_deltas(kept, sample(cpu=4e9, uptime=90)) == (Deltas(), None)
    older_run = sample(pid=50, start=400.0, cpu=7e9, uptime=30)
    assert counter_deltas(kept, older_run) == (Deltas(), None)


def test_it_counts_a_run_after_a_host_reboot_even_with_a_smaller_start():
    kept = kept_from(sample(pid=100, start=50_000.0, boot="before"))
    after_reboot = sample(pid=100, start=12.0, uptime=8, cpu=1e9, boot="after")
    deltas, keep = counter_deltas(kept, after_reboot)
    assert deltas.cpu_seconds == 1.0 and keep["boot"] == "after"


def test_it_reads_only_running_sandboxes():
    answer = {
        "state": "running",
        "pid": 7,
        "uptime_s": 5.0,
        "cpu_usage_ns": 10,
        "memory_peak_bytes": 3,
        "io_read_bytes": None,
        "io_write_bytes": None,
    }
    got = Sample.from_usage(answer, now=100.0)
    assert got is not None and got.start == 95.0 and got.io_read == 0
    assert Sample.from_usage({**answer, "state": "frozen", "uptime_s": None}) is None
    assert Sample.from_usage({"state": "stopped", "pid": None}) is None


# --- Quota, pruning, schedule ------------------------------------------------------------------


def test_it_switches_read_only_above_the_quota_and_back_under_95_percent(settings):
    settings.DS_USAGE_QUOTA_RESUME_PERCENT = 95
    quota = 100 * MB
    assert not quota_readonly(disk_bytes=quota, disk_mb=100, readonly=False)
    assert quota_readonly(disk_bytes=quota + 1, disk_mb=100, readonly=False)
    assert quota_readonly(disk_bytes=quota, disk_mb=100, readonly=True)
    assert quota_readonly(disk_bytes=quota * 95 // 100 + 1, disk_mb=100, readonly=True)
    assert not quota_readonly(disk_bytes=quota * 95 // 100, disk_mb=100, readonly=True)


@pytest.mark.django_db
def test_it_lifts_read_only_when_the_quota_is_raised_even_without_a_supervisor(alice):
    appspace = appspace_for(alice, disk_mb=1, disk_bytes=2 * MB, data_readonly=True)
    assert not quota.appspace_quota_check(appspace=appspace)  # still over: nothing changes
    appspace.disk_mb = 10
    appspace.save(update_fields=["disk_mb"])
    version = appspace.config_version
    assert quota.appspace_quota_check(appspace=appspace)
    assert not appspace.data_readonly
    assert appspace.config_version == version + 1  # gateway caches drop it
    # No supervisor to restart it: applied by the next collection that sees it running.
    assert appspace.usage_counters == {"respec": True}


@pytest.mark.django_db
def test_it_prunes_days_older_than_kept(alice, settings):
    settings.DS_USAGE_KEEP_DAYS = 30
    appspace = appspace_for(alice)
    day(appspace, 0)
    day(appspace, 30)
    day(appspace, 31)
    assert tasks.usage_days_prune.run() == 1
    assert AppspaceUsageDay.objects.filter(appspace=appspace).count() == 2


@pytest.mark.django_db
def test_it_measures_data_dirs_and_keeps_the_days_highest(alice):
    appspace = appspace_for(alice)
    appspace.data_path.mkdir(parents=True)
    (appspace.data_path / "a.bin").write_bytes(b"x" * 300_000)
    assert tasks.disk_measure.run() == 1
    appspace.refresh_from_db()
    assert 300_000 <= appspace.disk_bytes < 400_000 and appspace.disk_measured
    (appspace.data_path / "a.bin").unlink()
    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.disk_bytes < 10_000 and not appspace.data_readonly
    assert AppspaceUsageDay.objects.get(appspace=appspace).disk_bytes_max >= 300_000


def test_every_scheduled_task_is_a_registered_task():
    from dropserver_site.celery import app

    app.loader.import_default_modules()  # what a worker imports: every app's tasks module
    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        "appspaces.tasks.usage_collect",
        "appspaces.tasks.disk_measure",
        "appspaces.tasks.usage_days_prune",
        "backups.tasks.backups_sweep",
    } <= names
    assert names <= set(app.tasks)


@pytest.mark.django_db
def test_a_full_image_says_disk_full_and_the_admin_names_the_mechanism(alice, settings):
    """A real 8 MB image, mounted and filled from the host as the app would fill it."""
    from django.contrib.admin.sites import site

    from appspaces.admin import AppspaceAdmin
    from sandbox.walls import diskimage

    if not diskimage.available()[0]:
        host_lacks(diskimage.available()[1])
    settings.DS_SANDBOX_DISK_IMAGES = True
    appspace = appspace_for(alice, disk_mb=8)
    column = AppspaceAdmin(Appspace, site).disk_quota
    assert column(appspace) == "measured (read-only above 8 MB)"  # no image yet
    appspace.data_path.mkdir(parents=True)
    diskimage.attach(appspace.data_path, 8, 200_777)
    try:
        html = render("appspaces/_usage.html", appspace, alice).replace("\xa0", " ")
        assert "Disk full" not in html and "The quota is enforced" in html
        with (
            pytest.raises(OSError, match="No space left"),
            open(appspace.data_path / "fill", "wb") as fh,
        ):
            while True:
                fh.write(b"\0" * MB)
                fh.flush()
        html = render("appspaces/_usage.html", appspace, alice).replace("\xa0", " ")
        assert "Disk full (quota 8 MB):" in html
        assert column(appspace) == "enforced (ext4 image, 8 MB)"
    finally:
        diskimage.detach(appspace.data_path)
