"""One install end to end through a real Celery worker process on the Redis broker (the
production path: the job is committed, the task sent on commit, a worker claims and runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from appspaces.installs.service import install_job_create
from appspaces.installs.staging import upload_copy
from appspaces.models import Job
from dropserver_site.celery import app as celery_app
from tests.sandbox.fixtures import poll

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]
REPO = Path(__file__).resolve().parents[2]


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def _route_all_to(queue: str | None, routes=None) -> None:
    """Send every task to `queue` (None: back to `routes`); Celery caches its router."""
    celery_app.conf.task_routes = {"*": {"queue": queue}} if queue else routes
    celery_app.amqp.flush_routes()
    celery_app.amqp.__dict__.pop("router", None)


@pytest.fixture
def worker(ds_data_dir, tmp_path):
    """A worker on a queue of this test's own, so no other worker takes its task."""
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "run with scripts/test-env.sh"
    queue = f"test-install-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    env = dict(
        os.environ,
        DS_DATA_DIR=str(ds_data_dir),
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dropserver_site", "worker", "--pool", "solo",
             "--queues", queue, "--without-heartbeat", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    default_queue, eager = celery_app.conf.task_default_queue, celery_app.conf.task_always_eager
    routes = celery_app.conf.task_routes
    celery_app.conf.task_default_queue, celery_app.conf.task_always_eager = queue, False
    _route_all_to(queue)  # installs normally go to the `jobs` queue (settings.py)
    try:
        yield process, log
    finally:
        celery_app.conf.task_default_queue = default_queue
        celery_app.conf.task_always_eager = eager
        _route_all_to(None, routes)
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_worker_installs_a_queued_upload(worker, supervisor, alice, make_package):
    process, log = worker
    job = install_job_create(owner=alice, upload=upload_copy(make_package()))  # sent on commit

    def finished():
        assert process.poll() is None, log.read_text()
        return Job.objects.get(pk=job.pk).is_finished

    poll(finished, timeout=90, interval=0.2)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, (job.message, log.read_text()[-3000:])
    assert (job.app_version.files_dir / "app.ts").is_file()
    assert "appspaces.tasks.install_app" in log.read_text()
