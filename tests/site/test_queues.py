"""Celery queues: every task goes to its queue with its time limits, periodic runs expire, and
housekeeping runs while a long job holds the jobs worker (real workers, the Redis broker,
started as `serve` starts them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from dropserver_site.celery import app
from dropserver_site.management.commands.serve import worker_commands
from tests.sandbox.fixtures import host_lacks

BASE_DIR = Path(__file__).resolve().parents[2]
JOBS = [
    "appspaces.tasks.install_app",
    "appspaces.tasks.appspace_create_task",
    "appspaces.tasks.appspace_version_change_task",
    "backups.tasks.backup_run",
    "backups.tasks.restore_run",
]
HOUSEKEEPING = [
    "appspaces.tasks.usage_collect",
    "appspaces.tasks.disk_measure",
    "appspaces.tasks.appspaces_sweep",
    "appspaces.tasks.installs_sweep",
    "backups.tasks.backups_sweep",
    "backups.tasks.backups_prune",
    "backups.tasks.backups_schedule",
    "accounts.tasks.notices_evaluate",
]


def queue_of(name: str) -> str:
    return app.amqp.router.route({}, name, (), {})["queue"].name


@pytest.mark.parametrize("name", JOBS)
def test_long_jobs_go_to_the_jobs_queue(name):
    assert queue_of(name) == "jobs"


@pytest.mark.parametrize("name", HOUSEKEEPING)
def test_periodic_work_goes_to_housekeeping(name):
    assert queue_of(name) == "housekeeping"


def test_every_task_has_a_queue_a_worker_consumes_and_time_limits():
    app.loader.import_default_modules()
    ours = [n for n in app.tasks if n.split(".")[0] in ("appspaces", "backups", "accounts")]
    assert len(ours) >= 20 and "accounts.tasks.notices_evaluate" in ours
    consumed = set()
    for _, argv in worker_commands():
        consumed |= set(argv[argv.index("--queues") + 1].split(","))
    assert consumed == set(settings.DS_CELERY_QUEUES)
    for name in ours:
        assert queue_of(name) in consumed, name
        assert queue_of(name) in settings.DS_CELERY_QUEUES, name  # what one-worker setups take
        task = app.tasks[name]
        assert 0 < task.soft_time_limit < task.time_limit, name


def test_every_task_a_service_queues_by_name_exists():
    """Services queue tasks by name (appspaces.jobs.enqueue): a misspelt name would only fail
    when the work is queued, so every name in the code is checked against the registry."""
    app.loader.import_default_modules()
    pattern = re.compile(r"enqueue(?:_on_commit)?\(\s*\"([\w.]+)\"")
    names = {
        name
        for folder in ("accounts", "appspaces", "backups", "dropserver_site")
        for path in (BASE_DIR / folder).rglob("*.py")
        for name in pattern.findall(path.read_text())
    }
    assert len(names) >= 8
    assert names <= set(app.tasks), names - set(app.tasks)


def test_a_process_that_imported_no_task_module_still_finds_every_task():
    """A web process queues a backup without having imported backups.tasks: the lookup by
    name must load the task modules itself (a fresh interpreter, Django set up, nothing else)."""
    code = (
        "import django; django.setup()\n"
        "import sys\n"
        "from appspaces.jobs import registered_task\n"
        "assert 'backups.tasks' not in sys.modules\n"
        "for name in ('backups.tasks.offsite_upload', 'backups.tasks.backup_run',"
        " 'appspaces.tasks.install_app', 'accounts.tasks.notices_evaluate'):\n"
        "    assert registered_task(name).name == name\n"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="dropserver_site.settings")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_periodic_runs_expire_within_their_period():
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert 0 < entry["options"]["expires"] <= float(entry["schedule"])
        assert queue_of(entry["task"]) in ("housekeeping", "jobs")


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _wait(check, what: str, logs: list[Path], workers, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for worker in workers:
            assert worker.poll() is None, "\n".join(p.read_text()[-3000:] for p in logs)
        assert time.monotonic() < deadline, f"{what}:\n" + "\n".join(
            p.read_text()[-3000:] for p in logs
        )
        time.sleep(0.1)


def test_housekeeping_runs_while_a_long_job_holds_the_jobs_worker(transactional_db, tmp_path):
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        host_lacks("a Redis broker (CELERY_BROKER_URL, as scripts/test-env.sh sets)")
    env = dict(
        os.environ,
        DS_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
    )
    celery = [sys.executable, "-m", "celery", "-A", "dropserver_site"]
    subprocess.run([*celery, "purge", "-f", "-Q", "jobs,housekeeping,celery"], cwd=BASE_DIR,
                   env=env, capture_output=True, check=True, timeout=60)  # fmt: skip
    workers, logs = [], []
    for name, argv in worker_commands():
        argv = [a for a in argv if a not in ("--beat",)]  # no periodic runs in this test
        if "--schedule" in argv:
            i = argv.index("--schedule")
            del argv[i : i + 2]
        # One process for jobs: the held task takes all of it.
        argv[argv.index("--concurrency") + 1] = "1"
        log = tmp_path / f"{name.split()[1]}.log"
        logs.append(log)
        with open(log, "wb") as out:
            workers.append(
                subprocess.Popen([*argv, "--include", "tests.site.celery_probe", "--pool", "solo"],
                                 cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
            )  # fmt: skip
    started, release = tmp_path / "started", tmp_path / "release"
    try:
        for log in logs:
            _wait(lambda log=log: b"ready." in log.read_bytes(), "worker ready", logs, workers)
        app.send_task("tests.hold_until", args=[str(started), str(release)], queue="jobs")
        _wait(started.exists, "the long job started", logs, workers)
        # Routed by the real routes: housekeeping, served although the jobs worker is busy.
        app.send_task("appspaces.tasks.usage_days_prune")
        housekeeping_log = logs[1]
        _wait(
            lambda: (
                b"appspaces.tasks.usage_days_prune[" in housekeeping_log.read_bytes()
                and b"succeeded" in housekeeping_log.read_bytes()
            ),
            "housekeeping ran",
            logs,
            workers,
        )
        assert not release.exists()
        assert b"usage_days_prune[" not in logs[0].read_bytes()
        release.touch()
        _wait(lambda: b"'released'" in logs[0].read_bytes(), "the long job ended", logs, workers)
    finally:
        release.touch()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)


def test_a_task_s_log_lines_carry_its_id_and_name(caplog, settings, tmp_path):
    from appspaces.tasks import usage_collect
    from packages.logcontext import ContextFilter

    settings.DS_DATA_DIR = tmp_path  # no supervisor here: the task logs that it skipped
    caplog.handler.addFilter(ContextFilter())
    result = usage_collect.apply(task_id="task-log-context-1")
    assert result.successful()
    lines = [r for r in caplog.records if r.getMessage().startswith("usage collection skipped")]
    assert lines and lines[0].request_id == "task-log-context-1"
    assert lines[0].task == "appspaces.tasks.usage_collect"
