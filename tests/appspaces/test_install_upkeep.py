"""The installs sweep: what a crash, a closed tab or an unanswered question left is cleaned up,
and nothing that is in use or being created right now is touched."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from appspaces.installs.service import install_job_create
from appspaces.installs.staging import job_staging_dir
from appspaces.installs.upkeep import installs_sweep
from appspaces.installs.versions import version_sort_key
from appspaces.models import App, AppVersion, Job
from tests.appspaces.conftest import apps_dir, uploads_dir

pytestmark = pytest.mark.django_db
DAY = 24 * 3600


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def job_in(owner, state, *, updated_ago: timedelta = timedelta(0), **params) -> Job:
    job = install_job_create(owner=owner, url="https://apps.example/a.tar.gz", enqueue=False)
    Job.objects.filter(pk=job.pk).update(
        state=state, updated=timezone.now() - updated_ago, params={**job.params, **params}
    )
    job.refresh_from_db()
    return job


def test_it_expires_unanswered_confirmations_and_interrupted_installs(alice, settings):
    settings.DS_INSTALL_CONFIRM_HOURS = 24
    waiting = job_in(alice, Job.State.NEEDS_CONFIRMATION, updated_ago=timedelta(hours=25))
    fresh = job_in(alice, Job.State.NEEDS_CONFIRMATION, updated_ago=timedelta(hours=1))
    stuck = job_in(alice, Job.State.RUNNING, updated_ago=timedelta(hours=2))
    busy = job_in(alice, Job.State.RUNNING, updated_ago=timedelta(minutes=5))

    counts = installs_sweep()

    assert (counts["expired"], counts["interrupted"]) == (1, 1)
    states = {j: Job.objects.get(pk=j.pk) for j in (waiting, fresh, stuck, busy)}
    assert states[waiting].state == Job.State.CANCELLED
    assert "not accepted in time" in states[waiting].message
    assert not job_staging_dir(waiting).exists()
    assert states[fresh].state == Job.State.NEEDS_CONFIRMATION
    assert states[stuck].state == Job.State.FAILED and "interrupted" in states[stuck].message
    assert states[busy].state == Job.State.RUNNING


def test_it_removes_leftover_folders_but_nothing_in_use(alice):
    finished = job_in(alice, Job.State.FAILED)
    running = job_in(alice, Job.State.RUNNING, placed="")
    for job in (finished, running):
        age(job_staging_dir(job), DAY)
    stray = uploads_dir() / "incoming-x.part"
    stray.write_bytes(b"x")
    age(stray, DAY)
    orphan_staging = uploads_dir() / str(uuid.uuid4())
    orphan_staging.mkdir()
    new_upload = uploads_dir() / "incoming-new.part"
    new_upload.write_bytes(b"x")  # being uploaded right now

    app = App.objects.create(owner=alice, name="Kept")
    AppVersion.objects.create(
        app=app, version="1.0.0", version_key=version_sort_key("1.0.0"), entrypoint="app.ts"
    )
    kept = app.path / "1.0.0" / "files"
    half_installed = app.path / "2.0.0"
    rowless_app = apps_dir() / str(uuid.uuid4()) / "1.0.0"
    placing = apps_dir() / running.params["app_id"] / "1.0.0"
    Job.objects.filter(pk=running.pk).update(
        params={**running.params, "placed": f"{running.params['app_id']}/1.0.0"}
    )
    for path in (kept, half_installed, rowless_app, placing):
        path.mkdir(parents=True)
        age(path, DAY)

    installs_sweep()

    assert not job_staging_dir(finished).exists() and not stray.exists()
    assert job_staging_dir(running).exists() and new_upload.exists()
    assert orphan_staging.exists()  # too new to judge
    assert kept.exists() and placing.exists()
    assert not half_installed.exists()
    assert not rowless_app.exists() and not rowless_app.parent.exists()
